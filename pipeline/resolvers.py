"""Inputs this pipeline finds in the metadata store rather than in the current run.

Each function returns a core `Resolver`: called as resolver(store, resolved) with the step's
producer inputs already resolved, it returns a `pipeline.core.step.Artifact` or None when nothing
resolves (an optional input such as the baseline model on the first run). The factory binds
which of the step's inputs a resolver looks at, so no resolver knows the wiring.
"""

from __future__ import annotations

from pipeline.core.metadata import MetadataStore, to_step_artifact
from pipeline.core.step import Artifact, Resolver
from pipeline.formats import examples as examples_format
from pipeline.formats import pushed_model as pushed_format
from pipeline.formats import statistics as stats_format


def latest_pushed_model(store: MetadataStore, serving_dir: str) -> Artifact | None:
    """The Model artifact behind the newest successful push or rollback into `serving_dir`;
    None before any."""
    pushed = pushed_format.latest_push(store, serving_dir)
    if pushed is None:
        return None
    return to_step_artifact(store.artifact(pushed_format.pushed_model_id(pushed.properties)))


def serving_model(serving_dir: str) -> Resolver:
    """The model serving now in `serving_dir` (see `latest_pushed_model`)."""
    return lambda store, _resolved: latest_pushed_model(store, serving_dir)


def serving_model_unless(candidate_key: str, serving_dir: str) -> Resolver:
    """The model serving now in `serving_dir`, unless it *is* the step's input `candidate_key`.

    A rerun on unchanged data reuses the cached model: comparing a model with itself decides
    nothing, and leaving it out keeps the evaluator's inputs, and so its cache hit, identical to
    the first run.
    """

    def resolve(store: MetadataStore, resolved) -> Artifact | None:
        serving = latest_pushed_model(store, serving_dir)
        candidate = resolved.get(candidate_key)
        if serving is None or (candidate is not None and candidate.id == serving.id):
            return None
        return serving

    return resolve


def training_spans(store: MetadataStore, model_id: int) -> list:
    """The spans of the Examples a Model artifact was trained on ([] when unknown)."""
    trainer_execution = store.producer_of(model_id)
    if trainer_execution is None:
        return []
    return _spans_of_examples_input(store, trainer_execution)


def _spans_of_examples_input(store: MetadataStore, execution_id: int) -> list:
    """Spans of the Examples artifact an execution read (any input of that type)."""
    for artifact_id in store.inputs_of(execution_id).values():
        artifact = store.artifact(artifact_id)
        if artifact.type_name == examples_format.ARTIFACT_TYPE:
            return examples_format.spans_of(artifact.properties)
    return []


def pushed_model_of_earlier_spans(examples_key: str, enabled: bool) -> Resolver:
    """The latest pushed model trained on spans older than those of the step's `examples_key`
    input; None when `enabled` is False or there is none.

    Only models of earlier data qualify, so a rerun on the same data resolves the same base
    model as the first run and the trainer stays cached.
    """

    def resolve(store: MetadataStore, resolved) -> Artifact | None:
        current = examples_format.spans_of(resolved[examples_key].properties)
        if not enabled or not current:
            return None
        for pushed in store.artifacts_of_type(pushed_format.ARTIFACT_TYPE):
            model_id = pushed_format.pushed_model_id(pushed.properties)
            if not model_id:
                continue
            spans = training_spans(store, model_id)
            if spans and max(spans) < max(current):
                return to_step_artifact(store.artifact(model_id))
        return None

    return resolve


def statistics_of_previous_span(statistics_key: str) -> Resolver:
    """Statistics of the newest span before the spans of the step's `statistics_key` input, for
    drift checks; None when there is none (or the input records no spans).
    """

    def resolve(store: MetadataStore, resolved) -> Artifact | None:
        current_stats = resolved[statistics_key]
        current_spans = list(current_stats.properties.get(stats_format.SPANS) or [])
        if not current_spans:
            return None
        best = None
        for stats in store.artifacts_of_type(current_stats.type_name):
            spans = stats.properties.get(stats_format.SPANS) or []
            if spans and max(spans) < max(current_spans) and (best is None or max(spans) > best[0]):
                best = (max(spans), stats)
        return to_step_artifact(best[1]) if best else None

    return resolve


def reference_for_first_span(statistics_key: str, reference: Resolver | None) -> Resolver:
    """The `reference` resolver's artifact when the step's `statistics_key` input has no
    previous span (a pipeline root's first span), else None; always None when `reference` is.

    Exactly one drift baseline reaches the gate: the previous span when there is one. Resolving
    the reference only for a first span keeps later spans' cache keys free of it.
    """
    previous_span = statistics_of_previous_span(statistics_key)

    def resolve(store: MetadataStore, resolved) -> Artifact | None:
        if reference is None or previous_span(store, resolved) is not None:
            return None
        return reference(store, resolved)

    return resolve
