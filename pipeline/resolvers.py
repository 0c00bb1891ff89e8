"""Inputs found in the metadata store or on disk rather than produced in the current run.

Each resolver returns a `pipeline.step.Artifact`, or None when nothing resolves (an optional
input such as the baseline model on the first run).
"""

from __future__ import annotations

from typing import Optional

from pipeline.config import PipelineConfig
from pipeline.metadata import MetadataStore
from pipeline.step import Artifact


def to_step_artifact(recorded) -> Artifact:
    """Converts a `metadata.RecordedArtifact` into the `Artifact` an executor receives."""
    return Artifact(uri=recorded.uri, type_name=recorded.type_name,
                    properties=dict(recorded.properties), id=recorded.id)


def raw_data(store: MetadataStore, config: PipelineConfig, **_) -> Artifact:
    """The raw MNIST spans to read, registered in the store as a `RawData` artifact.

    Raises ConfigError / InputDataError (from span discovery) when the data root is unusable.
    """
    from components.example_gen.spans import fingerprint_spans, resolve_spans

    data = config.data
    spans = resolve_spans(data.data_root, data.span, data.window_spans)
    properties = {
        "spans": [number for number, _ in spans],
        "span_dirs": [path for _, path in spans],
        "fingerprint": fingerprint_spans(spans),
    }
    artifact_id = store.put_external_artifact("RawData", data.data_root, properties)
    return to_step_artifact(store.artifact(artifact_id))


def latest_pushed_model(store: MetadataStore, **_) -> Optional[Artifact]:
    """The Model artifact behind the newest successful push or rollback; None before any."""
    for pushed in store.artifacts_of_type("PushedModel"):
        if pushed.properties.get("pushed") == 1 and pushed.properties.get("model_id"):
            return to_step_artifact(store.artifact(int(pushed.properties["model_id"])))
    return None


def baseline_model(store: MetadataStore, produced: dict, **_) -> Optional[Artifact]:
    """The model to compare the candidate against: the one serving now (latest push).

    None when nothing was pushed yet, or when the candidate *is* the serving model (a rerun on
    unchanged data reuses the cached model): comparing a model with itself decides nothing, and
    leaving it out keeps the evaluator's inputs, and so its cache hit, identical to the first run.
    """
    serving = latest_pushed_model(store)
    candidate = produced.get("trainer.model")
    if serving is None or (candidate is not None and candidate.id == serving.id):
        return None
    return serving


def _training_spans(store: MetadataStore, model_id: int) -> list:
    trainer_execution = store.producer_of(model_id)
    if trainer_execution is None:
        return []
    examples_id = store.inputs_of(trainer_execution).get("examples")
    return store.artifact(examples_id).properties.get("spans") or [] if examples_id else []


def warm_start_model(store: MetadataStore, config: PipelineConfig, current_spans: list,
                     **_) -> Optional[Artifact]:
    """The latest pushed model trained on spans older than the current ones, when
    `trainer.warm_start` is on; None otherwise.

    Only models of earlier data qualify, so a rerun on the same data resolves the same base
    model as the first run and the trainer stays cached.
    """
    if not config.trainer.warm_start or not current_spans:
        return None
    for pushed in store.artifacts_of_type("PushedModel"):
        model_id = int(pushed.properties.get("model_id") or 0)
        if pushed.properties.get("pushed") != 1 or not model_id:
            continue
        spans = _training_spans(store, model_id)
        if spans and max(spans) < max(current_spans):
            return to_step_artifact(store.artifact(model_id))
    return None


def previous_span_statistics(store: MetadataStore, current_spans: list, **_) -> Optional[Artifact]:
    """Statistics of the newest earlier span, for drift checks; None when there is none.

    "Earlier" means computed from examples whose newest span is below the current newest span.
    """
    if not current_spans:
        return None
    current = max(current_spans)
    best = None
    for stats in store.artifacts_of_type("ExampleStatistics"):
        producer = store.producer_of(stats.id)
        if producer is None:
            continue
        examples_id = store.inputs_of(producer).get("examples")
        if examples_id is None:
            continue
        spans = store.artifact(examples_id).properties.get("spans") or []
        if spans and max(spans) < current and (best is None or max(spans) > best[0]):
            best = (max(spans), stats)
    return to_step_artifact(best[1]) if best else None


RESOLVERS = {
    "raw_data": raw_data,
    "latest_pushed_model": latest_pushed_model,
    "baseline_model": baseline_model,
    "warm_start_model": warm_start_model,
    "previous_span_statistics": previous_span_statistics,
}
