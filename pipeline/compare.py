"""`run_local.py compare`: several model modules trained on the same data and compared, side by
side, on the same test digits with the gate's paired statistics.

Each config file (e.g. models/keras_cnn.toml, models/mlp.toml) runs through the pipeline up to
the evaluator, never the pusher (a comparison publishes nothing), all on ONE pipeline root:

- the data steps run once: for the second config ExampleGen, StatisticsGen, SchemaGen and the
  data gate are cache hits (same data config, same code), and a rerun of the comparison with
  unchanged modules is cache hits throughout;
- it proves the pairing: every model is evaluated on the same Examples artifact, so row i of
  each evaluation's `outcomes.npz` is the same test digit (checked: same artifact, same labels).
  Separate roots would rebuild the data per config and leave the pairing to trust.

So the configs must agree on what defines the test digits (`data.*`, `evaluator.max_examples`);
anything else (the module, `[trainer]`, `[trainer.hparams]`) may differ. For every pair of
models (A, B) the page shows, overall and per digit, A's and B's accuracy, the digits only one
of them got right, the exact McNemar p and Newcombe's interval for A minus B at level 1 - alpha
(`evaluator.alpha` of the first config); the ten digit slices share alpha by Holm's step-down,
as in the gate, ranked by McNemar p (the gate ranks by "worse than the serving model", a
one-sided question; a comparison asks "different" in either direction).

Output: `<pipeline_root>/comparisons/<id>/comparison.html` (self-contained, like the run
report) and `comparison.json` with the same numbers.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from components.evaluator import paired_stats
from pipeline.config import PipelineConfig, load_config
from pipeline.core.atomic_files import write_json_atomic, write_text_atomic
from pipeline.core.errors import ConfigError, InputDataError, PipelineError
from pipeline.core.runner import new_run_id, run_pipeline
from pipeline.factory import create_pipeline
from pipeline.formats import evaluation as evaluation_format
from pipeline.formats.examples import NUM_CLASSES
from pipeline.report.compare_page import render_comparison

log = logging.getLogger("pipeline.compare")

COMPARISONS_DIR = "comparisons"
PAGE_FILE = "comparison.html"
DATA_FILE = "comparison.json"
LABEL_SLICES = tuple(f"{evaluation_format.LABEL}={d}" for d in range(NUM_CLASSES))


class ComparedRunFailed(PipelineError):
    """One config's pipeline run did not complete; its exit status becomes the command's."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Entry:
    """One config of a comparison: its file, a short unique name (the file's stem) and the
    resolved config (pipeline root shared by all)."""

    config_file: str
    name: str
    config: PipelineConfig


def _names(files: Sequence[str]) -> list:
    """File stems, made unique with their position when two configs share a stem."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    return [s if stems.count(s) == 1 else f"{s}#{i + 1}" for i, s in enumerate(stems)]


def load_entries(config_files: Sequence[str], overrides: Mapping) -> list:
    """The comparison's configs, each file then `overrides` (the command line), on one root.

    Raises ConfigError when fewer than two files are given, the configs name different pipeline
    roots (pass --pipeline-root), or disagree on what defines the test digits (`data.*`,
    `evaluator.max_examples`), naming the file and the key.
    """
    if len(config_files) < 2:
        raise ConfigError("compare: give at least two --config files (one per model)")
    entries = [Entry(f, n, load_config(f, overrides)) for f, n in zip(config_files, _names(config_files))]
    first = entries[0]
    for entry in entries[1:]:
        if entry.config.pipeline_root != first.config.pipeline_root:
            raise ConfigError(
                f"compare: {entry.config_file} has pipeline_root {entry.config.pipeline_root}, "
                f"{first.config_file} {first.config.pipeline_root}; the models must share "
                "one root (pass --pipeline-root)"
            )
        for key, value in dataclasses.asdict(entry.config.data).items():
            if value != getattr(first.config.data, key):
                raise ConfigError(
                    f"compare: {entry.config_file} sets data.{key} = {value!r}, "
                    f"{first.config_file} {getattr(first.config.data, key)!r}: the models "
                    "must be trained and tested on the same data"
                )
        if entry.config.evaluator.max_examples != first.config.evaluator.max_examples:
            raise ConfigError(
                f"compare: {entry.config_file} sets evaluator.max_examples = "
                f"{entry.config.evaluator.max_examples!r}, {first.config_file} "
                f"{first.config.evaluator.max_examples!r}: the models must be tested on the same digits"
            )
    return entries


def run_entries(entries: Sequence[Entry], beam_args: Sequence[str] = ()) -> list:
    """Runs each entry's pipeline up to the evaluator, in order; returns their run summaries.

    Raises ComparedRunFailed (with that run's exit status) at the first run that fails.
    """
    summaries = []
    for entry in entries:
        config = entry.config
        if beam_args:
            config = dataclasses.replace(config, beam_args=tuple(config.beam_args) + tuple(beam_args))
        log.info("compare: %s (%s): running up to the evaluator", entry.name, entry.config_file)
        result = run_pipeline(create_pipeline(config), to_step="evaluator")
        if result.exit_code != 0:
            raise ComparedRunFailed(
                f"compare: {entry.config_file}: run {result.summary['run_id']} failed: "
                f"{result.summary.get('message')}",
                result.exit_code,
            )
        summaries.append(result.summary)
    return summaries


def _output(summary: dict, step: str, key: str) -> str:
    uri = (((summary.get("steps") or {}).get(step) or {}).get("outputs") or {}).get(key)
    if not uri:
        raise InputDataError(f"compare: run {summary.get('run_id')} has no {step} output {key!r}")
    return uri


def _model_record(entry: Entry, summary: dict, outcomes: dict, alpha: float) -> dict:
    correct = outcomes[evaluation_format.CANDIDATE_CORRECT]
    trainer = (summary["steps"].get("trainer") or {}).get("properties") or {}
    module = summary.get("model_module") or {}
    labels = outcomes[evaluation_format.LABEL]
    per_label = {}
    for digit in range(NUM_CLASSES):
        rows = labels == digit
        per_label[f"{evaluation_format.LABEL}={digit}"] = float(correct[rows].mean()) if rows.any() else None
    return {
        "name": entry.name,
        "config_file": os.path.abspath(entry.config_file),
        "module_file": module.get("path"),
        "module_sha256": module.get("sha256"),
        "entry_point": module.get("entry_point"),
        "hparams": entry.config.trainer.hparams,
        "run_id": summary["run_id"],
        "report": summary.get("report"),
        "model": _output(summary, "trainer", "model"),
        "n": int(correct.size),
        "correct": int(correct.sum()),
        "accuracy": float(correct.mean()) if correct.size else None,
        "accuracy_ci": list(paired_stats.wilson_interval(int(correct.sum()), int(correct.size), alpha)),
        "accuracy_by_label": per_label,
        "training": {
            key: trainer.get(key)
            for key in (
                "steps_trained",
                "best_eval_accuracy",
                "train_seconds",
                "train_examples_per_sec",
                "stopped_early",
            )
        },
    }


def paired_comparison(a_correct, b_correct, labels, alpha: float) -> list:
    """The comparisons of model A against B (A minus B) as JSON dicts: "overall" at level
    1 - alpha, then the ten digit slices at Holm's levels (ranked by McNemar p).

    a_correct, b_correct, labels: aligned 1-D arrays, one row per test digit. A digit with no
    test example gives a slice with n 0 and no statistics (its level still counts in Holm's m).
    """
    tables = paired_stats.tables_by_slice(
        a_correct,
        b_correct,
        {evaluation_format.LABEL: labels},
        required={evaluation_format.LABEL: range(NUM_CLASSES)},
    )
    overall = paired_stats.compare(
        evaluation_format.OVERALL_SLICE, tables[evaluation_format.OVERALL_SLICE], alpha
    )
    p_values = [
        paired_stats.mcnemar_exact_p(tables[s].candidate_only, tables[s].baseline_only)
        if tables[s].n
        else float("nan")
        for s in LABEL_SLICES
    ]
    levels = paired_stats.holm_adjusted_alphas(p_values, alpha)
    slices = [paired_stats.compare(s, tables[s], level) for s, level in zip(LABEL_SLICES, levels)]
    return [c.to_json() for c in [overall, *slices]]


def verdict(a: str, b: str, overall: dict) -> str:
    """One sentence: which model is more accurate on the test digits, by how much, how sure."""
    low, high = overall.get("difference_ci") or (None, None)
    level = f"{100 * (1 - overall['alpha']):g}%"
    if overall.get("n", 0) == 0 or low is None or high is None:
        return f"{a} vs {b}: no test digits to compare on"
    facts = (
        f"difference {overall['difference']:+.4f} ({level} CI {low:+.4f} to {high:+.4f}, "
        f"McNemar p = {overall['p_value']:.2g}; {overall['candidate_only']} digits only {a} got right, "
        f"{overall['baseline_only']} only {b})"
    )
    if low > 0:
        return f"{a} is more accurate than {b}: {facts}."
    if high < 0:
        return f"{b} is more accurate than {a}: {facts}."
    return f"No significant difference between {a} and {b} at this level: {facts}."


def build_comparison(entries: Sequence[Entry], summaries: Sequence[dict]) -> dict:
    """Everything the comparison page shows, from the runs' summaries and evaluation artifacts.

    Raises InputDataError when the runs were not evaluated on the same Examples artifact or
    their outcomes do not describe the same digits in the same order.
    """
    alpha = entries[0].config.evaluator.alpha
    examples = {_output(s, "example_gen", "examples") for s in summaries}
    if len(examples) != 1:
        raise InputDataError(
            f"compare: the runs read different Examples artifacts ({', '.join(sorted(examples))}); "
            "their test digits cannot be paired"
        )
    outcomes = [evaluation_format.read_outcomes(_output(s, "evaluator", "evaluation")) for s in summaries]
    labels = outcomes[0][evaluation_format.LABEL]
    for entry, other in zip(entries[1:], outcomes[1:]):
        if not np.array_equal(other[evaluation_format.LABEL], labels):
            raise InputDataError(
                f"compare: {entry.config_file}: its evaluation's outcomes are not the same "
                "test digits in the same order as the first config's"
            )
    models = [_model_record(e, s, o, alpha) for e, s, o in zip(entries, summaries, outcomes)]
    pairs = []
    for i in range(len(entries)):
        for j in range(i + 1, len(entries)):
            comparisons = paired_comparison(
                outcomes[i][evaluation_format.CANDIDATE_CORRECT],
                outcomes[j][evaluation_format.CANDIDATE_CORRECT],
                labels,
                alpha,
            )
            pairs.append(
                {
                    "a": entries[i].name,
                    "b": entries[j].name,
                    "comparisons": comparisons,
                    "verdict": verdict(entries[i].name, entries[j].name, comparisons[0]),
                }
            )
    first = summaries[0]
    return {
        "pipeline_root": entries[0].config.pipeline_root,
        "alpha": alpha,
        "data": first.get("data"),
        "examples": examples.pop(),
        "test_digits": int(labels.size),
        "models": models,
        "pairs": pairs,
    }


def write_comparison(comparison: dict, out_dir: str) -> str:
    """Writes comparison.html and comparison.json into `out_dir`; returns the page's path."""
    write_json_atomic(os.path.join(out_dir, DATA_FILE), comparison)
    path = os.path.join(out_dir, PAGE_FILE)
    write_text_atomic(path, render_comparison(comparison))
    return path


def compare(
    config_files: Sequence[str],
    overrides: Mapping,
    beam_args: Sequence[str] = (),
    comparison_id: str | None = None,
) -> str:
    """Runs the configs (`load_entries`, `run_entries`), compares them and writes the page
    under `<pipeline_root>/comparisons/<comparison_id>/`; returns the page's path.

    Raises ConfigError (configs that cannot be compared), ComparedRunFailed, InputDataError.
    """
    entries = load_entries(config_files, overrides)
    summaries = run_entries(entries, beam_args)
    comparison = build_comparison(entries, summaries)
    comparison["id"] = comparison_id or new_run_id()
    out_dir = os.path.join(entries[0].config.pipeline_root, COMPARISONS_DIR, comparison["id"])
    os.makedirs(out_dir, exist_ok=True)
    path = write_comparison(comparison, out_dir)
    for pair in comparison["pairs"]:
        log.info("compare: %s", pair["verdict"])
    return path
