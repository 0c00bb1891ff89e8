"""ExampleGen: raw MNIST IDX files of one or more spans -> an Examples artifact.

Input `raw_data`: Artifact with uri = the data root and properties `spans`, `span_dirs` and
`fingerprint` (see `spans.raw_data_properties`); when `span_dirs` is absent the spans are
resolved from the uri with `params.span` / `params.window_spans` / `params.span_ready_marker`.
Output `examples`: `Split-train/`, `Split-eval/`, `Split-test/`, each with `params.num_shards`
gzip TFRecord shards of tf.train.Example (features: see `encode`). With several spans the
splits hold the examples of all of them.

Every raw file of every span is validated before the Beam pipeline starts, so a bad input
(InputDataError, one line naming the file) leaves the output folder empty. Memory does not grow
with the number of spans: validation holds one span's digits at a time, and each shard task
reads the spans its rows lie in one after the other (`encode.plan_shards`).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import time

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter

from components.example_gen import encode
from components.example_gen import spans as spans_lib
from components.example_gen.params import DataParams
from pipeline.core import errors
from pipeline.core.errors import ConfigError, InputDataError, PipelineError
from pipeline.core.step import StepContext, StepOutcome
from pipeline.formats import examples as examples_format
from pipeline.formats import idx


def _spans_of(ctx: StepContext[DataParams], params: DataParams) -> list:
    """[(span, folder), ...] from the raw_data artifact's properties, or resolved from its uri."""
    raw = ctx.inputs.get("raw_data")
    if raw is None:
        raise ConfigError("step example_gen: input 'raw_data' is missing")
    props = dict(raw.properties or {})
    if idx.SPAN_DIRS not in props:
        return spans_lib.resolve_spans(raw.uri, params.span, params.window_spans, params.span_ready_marker)
    dirs, numbers = list(props[idx.SPAN_DIRS]), list(props.get(idx.SPANS, []))
    if len(dirs) != len(numbers) or not dirs:
        raise ConfigError(
            f"raw_data artifact {raw.uri}: properties '{idx.SPANS}' {numbers} and "
            f"'{idx.SPAN_DIRS}' {dirs} must be non-empty and of equal length"
        )
    return [(int(n), str(d)) for n, d in zip(numbers, dirs)]


def _validate(ctx: StepContext, span_list: list, eval_hash_buckets: int):
    """Validates every file of every span, one span in memory at a time; returns
    ([(span, idx.DatasetFacts), ...], expected split counts).

    Raises InputDataError naming the first faulty file, or the data root when the files are
    not the ones the run fingerprinted.
    """
    validated, counts = [], dict.fromkeys(encode.SPLITS, 0)
    for number, folder in span_list:
        started = time.monotonic()
        dataset = idx.load_dataset(folder)
        for source, pair in (("train", dataset.train), ("test", dataset.test)):
            found = encode.split_counts(source, pair.images.array, pair.labels.array, eval_hash_buckets)
            for split, n in found.items():
                counts[split] += n
        ctx.log.info(
            "span %d (%s): %d training and %d test digits valid (%.1f s)",
            number,
            folder,
            dataset.train.count,
            dataset.test.count,
            time.monotonic() - started,
        )
        # Only the files' facts are kept: the workers read the digits themselves, and a window
        # of many spans must not hold every span's arrays at once (about 55 MB per span).
        validated.append((number, dataset.facts()))
        del dataset, pair
    expected_fp = (ctx.inputs["raw_data"].properties or {}).get(idx.FINGERPRINT)
    if expected_fp:
        actual_fp = spans_lib.fingerprint_digests((n, d.file_digests()) for n, d in validated)
        if actual_fp != expected_fp:
            raise InputDataError(
                f"{ctx.inputs['raw_data'].uri}: raw files changed since the run "
                f"fingerprinted them (fingerprint {actual_fp}, expected {expected_fp})"
            )
    empty = [s for s in encode.SPLITS if counts[s] == 0]
    if empty:
        raise InputDataError(
            f"{span_list[-1][1]}: split {empty[0]} would hold no examples (split counts {counts})"
        )
    return validated, counts


# How a worker's PipelineError reads inside the text of the runner's own exception.
_REMOTE_ERROR = re.compile(
    re.escape(errors.__name__) + r"\.(\w+): (.+?)(?: \[while running .*)?$", re.MULTILINE
)


def _as_pipeline_error(e: Exception) -> PipelineError:
    """One-line PipelineError for a failed Beam run.

    In-process runners re-raise a worker's InputDataError as is (plus a "[while running ...]"
    suffix); runners with separate workers raise a RuntimeError holding its traceback as text.
    Either way the worker's error type and first line are recovered.
    """
    if isinstance(e, PipelineError):
        found = _REMOTE_ERROR.match(f"{errors.__name__}.{type(e).__name__}: {str(e).splitlines()[0]}")
        return type(e)(found.group(2)) if found else e
    found = _REMOTE_ERROR.search(str(e))
    if (
        found
        and isinstance(getattr(errors, found.group(1), None), type)
        and issubclass(getattr(errors, found.group(1)), PipelineError)
    ):
        return getattr(errors, found.group(1))(found.group(2))
    lines = [line for line in str(e).splitlines() if line.strip()]
    return PipelineError(
        f"step example_gen: Beam pipeline failed: {type(e).__name__}: {lines[-1].strip() if lines else ''}"
    )


def _empty(folder: str) -> None:
    """Removes everything this step wrote into its staging folder."""
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)


def _counted(result, split: str):
    """The committed value of the split's Beam counter, or None when the runner reports none."""
    try:
        found = result.metrics().query(
            MetricsFilter()
            .with_namespace(encode.METRICS_NAMESPACE)
            .with_name(encode.split_counter_name(split))
        )["counters"]
    except (NotImplementedError, AttributeError, KeyError):
        return None
    values = [c.committed for c in found if c.committed is not None]
    return sum(values) if values else None


def _check_written(ctx: StepContext, result, out_dir: str, expected: dict, num_shards: int) -> None:
    """Fails unless every split has `num_shards` shards and (where counted) the expected count."""
    for split in encode.SPLITS:
        folder = examples_format.split_dir(out_dir, split)
        counted = _counted(result, split)
        if counted is None:
            ctx.log.warning("runner reported no counter for split %s; using the validated count", split)
        elif counted != expected[split]:
            raise PipelineError(f"{folder}: wrote {counted} examples, validation expected {expected[split]}")
        shards = glob.glob(os.path.join(folder, examples_format.SHARD_GLOB))
        if len(shards) != num_shards:
            raise PipelineError(f"{folder}: {len(shards)} shard files, expected {num_shards}")


def run(ctx: StepContext[DataParams]) -> StepOutcome:
    """Validates the raw spans and writes the Examples artifact into ctx.outputs["examples"].

    Raises ConfigError (bad spans / properties), InputDataError (bad raw files, empty split),
    PipelineError (the Beam pipeline did not write what was validated).
    """
    params = ctx.params
    out_dir = ctx.outputs["examples"]
    span_list = _spans_of(ctx, params)
    ctx.log.info("reading spans %s", [n for n, _ in span_list])
    validation_started = time.monotonic()
    validated, expected = _validate(ctx, span_list, params.eval_hash_buckets)
    tasks = encode.plan_shards(validated, params.num_shards)
    validation_seconds = time.monotonic() - validation_started
    total = sum(expected.values())
    ctx.log.info(
        "encoding %d examples (expected split counts %s) into %d shard tasks in %s",
        total,
        expected,
        len(tasks),
        out_dir,
    )

    started = time.monotonic()
    try:
        pipeline = beam.Pipeline(options=ctx.beam_pipeline_options())
        encode.build_pipeline(pipeline, tasks, out_dir, params.eval_hash_buckets, params.ink_density_edges)
        result = pipeline.run()
        state = result.wait_until_finish()
        if state is not None and str(state).split(".")[-1] != "DONE":
            raise PipelineError(f"step example_gen: Beam pipeline ended in state {state}")
        seconds = time.monotonic() - started
        _check_written(ctx, result, out_dir, expected, params.num_shards)
    except Exception as e:
        _empty(out_dir)
        raise _as_pipeline_error(e) from e

    rate = total / max(seconds + validation_seconds, 1e-6)
    ctx.log.info(
        "wrote %d examples %s: validated in %.1f s, encoded and written in %.1f s (%.0f examples/s)",
        total,
        expected,
        validation_seconds,
        seconds,
        rate,
    )
    span_numbers = [n for n, _ in span_list]
    return StepOutcome(
        execution_properties={
            "split_counts": dict(expected),
            "spans": span_numbers,
            "examples_per_second": round(rate, 1),
            "validation_seconds": round(validation_seconds, 3),
            "write_seconds": round(seconds, 3),
            "beam_runner": ctx.beam_runner(),
        },
        output_properties={
            "examples": {examples_format.SPANS: span_numbers, examples_format.SPLIT_COUNTS: dict(expected)}
        },
    )
