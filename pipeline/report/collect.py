"""Gathers what the run report shows: the run summary plus the artifacts its steps name.

`collect(summary, analysis)` returns a plain dict, one entry per report section. Each section
holds `note` (why it is incomplete: step cached, skipped, failed or absent; None when the step
ran), `problems` (sources that could not be read, one line each) and its data. Reading one
source never stops the others: a broken file becomes a problem line in its section.

Artifact facts that the summary does not carry (the model digest, which examples and model the
evaluator consumed) come from ML Metadata through the executions the summary names.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Optional

from pipeline.report import cache, sources

log = logging.getLogger(__name__)

# Bump when the analysis dict changes shape, so older cache entries are not reused.
ANALYSIS_FORMAT = 1
ANALYSIS_MODES = ("auto", "always", "never")


def _try(problems: list, what: str, read: Callable, *args):
    """read(*args), or None with "what: error" appended to `problems`."""
    try:
        return read(*args)
    except Exception as e:  # noqa: BLE001 - one unreadable source must not sink the report
        text = " ".join(str(e).split()) or type(e).__name__
        problems.append(f"{what}: {text}")
        log.debug("report: %s unreadable", what, exc_info=True)
        return None


def step_availability(summary: dict, step: str) -> tuple:
    """(outputs: output key -> uri, note or None) for one step of the summary."""
    report = (summary.get("steps") or {}).get(step)
    if report is None:
        return {}, f"step {step} is not part of this pipeline"
    outputs = report.get("outputs") or {}
    state = report.get("state")
    if state == "ran":
        return outputs, None
    if state == "cached":
        return outputs, (f"{step} was cached: shown are the outputs of the earlier execution it reused")
    if state == "skipped":
        why = report.get("reason") or "skipped"
        return outputs, (f"{step} was skipped ({why})"
                         + ("; shown are the outputs it reused" if outputs else "; nothing to show"))
    if state == "failed":
        return {}, f"{step} failed: {report.get('error') or 'no error recorded'}"
    return outputs, f"{step}: unknown state {state!r}"


def _open_store(pipeline_root: Optional[str]):
    from pipeline.metadata import MetadataStore

    path = os.path.join(pipeline_root or "", "metadata.sqlite")
    return MetadataStore(path) if pipeline_root and os.path.isfile(path) else None


def _run_header(summary: dict) -> dict:
    steps = []
    for name, step in (summary.get("steps") or {}).items():
        steps.append({"name": name, "state": step.get("state"), "seconds": step.get("seconds"),
                      "execution_id": step.get("execution_id"),
                      "detail": step.get("error") or step.get("reason")})
    return {key: summary.get(key) for key in ("run_id", "status", "exit_code", "message", "started",
                                              "finished", "pipeline_root", "serving_dir", "report")} | {
        "spans": (summary.get("data") or {}).get("spans"),
        "data_root": (summary.get("data") or {}).get("data_root"),
        "steps": steps}


def _data_section(summary: dict) -> dict:
    stats_problems: list = []
    anomalies_problems: list = []
    stats_outputs, stats_note = step_availability(summary, "statistics_gen")
    anomalies_outputs, anomalies_note = step_availability(summary, "example_validator")
    statistics = anomalies = None
    if stats_outputs.get("statistics"):
        statistics = _try(stats_problems, "statistics", sources.read_statistics, stats_outputs["statistics"])
    if anomalies_outputs.get("anomalies"):
        anomalies = _try(anomalies_problems, "anomalies", sources.read_anomalies, anomalies_outputs["anomalies"])
    validator = ((summary.get("steps") or {}).get("example_validator") or {}).get("properties") or {}
    return {"statistics_note": stats_note, "statistics_problems": stats_problems,
            "anomalies_note": anomalies_note, "anomalies_problems": anomalies_problems,
            "statistics": statistics, "anomalies": anomalies,
            "validation_passed": validator.get("passed")}


def _training_section(summary: dict) -> dict:
    problems: list = []
    outputs, note = step_availability(summary, "trainer")
    history = None
    if outputs.get("model_run"):
        history = _try(problems, "training history", sources.read_training_history, outputs["model_run"])
    properties = ((summary.get("steps") or {}).get("trainer") or {}).get("properties") or {}
    return {"note": note, "problems": problems, "history": history, "properties": properties}


def _evaluation_section(summary: dict) -> dict:
    problems: list = []
    outputs, note = step_availability(summary, "evaluator")
    decision = None
    if outputs.get("blessing"):
        decision = _try(problems, "blessing", sources.read_blessing, outputs["blessing"])
    return {"note": note, "problems": problems, "summary": summary.get("evaluation"), "decision": decision}


def _push_section(summary: dict) -> dict:
    problems: list = []
    outputs, note = step_availability(summary, "pusher")
    record = None
    if outputs.get("pushed_model"):
        record = _try(problems, "push record", sources.read_push, outputs["pushed_model"])
    return {"note": note, "problems": problems, "summary": summary.get("push"), "record": record}


def _evaluated_artifacts(store, summary: dict) -> dict:
    """The evaluator execution's model, examples (inputs) and evaluation (output) artifacts."""
    execution_id = ((summary.get("steps") or {}).get("evaluator") or {}).get("execution_id")
    if not execution_id:
        raise ValueError("the evaluator has no execution in this run")
    inputs, outputs = store.inputs_of(execution_id), store.outputs_of(execution_id)
    missing = [k for k in ("model", "examples") if k not in inputs] + \
              [k for k in ("evaluation",) if k not in outputs]
    if missing:
        raise ValueError(f"evaluator execution {execution_id}: no {', '.join(missing)} artifact recorded")
    return {"model": store.artifact(inputs["model"]), "examples": store.artifact(inputs["examples"]),
            "evaluation": store.artifact(outputs["evaluation"])}


def analysis_key(artifacts: dict, max_examples: int, keep: int) -> dict:
    """The cache key of an analysis: what it is computed from, by content."""
    return {"format": ANALYSIS_FORMAT, "model_digest": artifacts["model"].properties.get("digest"),
            "examples_digest": artifacts["examples"].properties.get("content_digest"),
            "evaluation_digest": artifacts["evaluation"].properties.get("content_digest"),
            "max_examples": max_examples, "keep": keep}


def _compute_analysis(artifacts: dict, problems: list, max_examples: int, keep: int) -> Optional[dict]:
    from pipeline.model_integrity import verify_model
    from pipeline.report import analysis
    from pipeline.resolvers import to_step_artifact

    confusion = _try(problems, "confusion matrix", analysis.confusion_matrices, artifacts["evaluation"].uri)
    model_dir = _try(problems, "candidate model", verify_model, to_step_artifact(artifacts["model"]),
                     "candidate model")
    gallery = None
    if model_dir is not None:
        gallery = _try(problems, "misclassified digits", analysis.misclassified, model_dir,
                       artifacts["examples"].uri, max_examples, keep)
    if confusion is None or gallery is None:
        return None
    return {"confusion": confusion, "gallery": gallery}


def _analysis_section(summary: dict, store, mode: str) -> dict:
    """Confusion matrices and misclassified digits, from the cache or computed (see `collect`)."""
    from pipeline.report.analysis import GALLERY_SIZE, MAX_EXAMPLES

    problems: list = []
    _, note = step_availability(summary, "evaluator")
    section = {"note": note, "problems": problems, "confusion": None, "gallery": None, "cached": False}
    state = ((summary.get("steps") or {}).get("evaluator") or {}).get("state")
    if state not in ("ran", "cached", "skipped") or not (summary.get("steps") or {}).get("evaluator", {}).get("outputs"):
        return section
    if store is None:
        problems.append("no metadata store next to the run: the model cannot be verified, so it is not loaded")
        return section
    artifacts = _try(problems, "evaluator lineage", _evaluated_artifacts, store, summary)
    if artifacts is None:
        return section
    key = analysis_key(artifacts, MAX_EXAMPLES, GALLERY_SIZE)
    root = summary["pipeline_root"]
    value = cache.load(root, key)
    if value is not None:
        section["cached"] = True
    elif mode == "always" or (mode == "auto" and state == "ran"):
        value = _compute_analysis(artifacts, problems, MAX_EXAMPLES, GALLERY_SIZE)
        if value is not None:
            _try(problems, "report cache", cache.store, root, key, value)
    else:
        section["skipped"] = ("not computed: the evaluator did not run in this run and no earlier report "
                              f"analysed this model; build it with `run_local.py report {summary.get('run_id')}`")
    if value is not None:
        section.update(confusion=value.get("confusion"), gallery=value.get("gallery"))
    return section


def collect(summary: dict, analysis: str = "auto") -> dict:
    """Everything the report shows for the run `summary` (as written by the runner).

    analysis: when to compute the confusion matrices and misclassified digits that are not in
        the cache: "auto" only when the evaluator ran in this run (TensorFlow is loaded then
        anyway; a rerun with a cached evaluator stays fast), "always", or "never".
    Never raises for unreadable artifacts (they become problems); ValueError for a bad mode.
    """
    if analysis not in ANALYSIS_MODES:
        raise ValueError(f"analysis must be one of {ANALYSIS_MODES}, got {analysis!r}")
    problems: list = []
    store = _try(problems, "metadata store", _open_store, summary.get("pipeline_root"))
    result = {
        "run": _run_header(summary),
        "data": _data_section(summary),
        "training": _training_section(summary),
        "evaluation": _evaluation_section(summary),
        "analysis": _analysis_section(summary, store, analysis),
        "push": _push_section(summary),
    }
    result["analysis"]["problems"][:0] = problems
    return result
