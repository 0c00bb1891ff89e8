"""Gathers what the run report shows: the run summary plus the artifacts its steps name.

`collect(summary)` returns a plain dict, one entry per report section. Each section holds
`note` (why it is incomplete: step cached, skipped, failed or absent; None when the step ran),
`problems` (sources that could not be read, one line each) and its data. Reading one source
never stops the others: a broken file becomes a problem line in its section.

The report only reads: the confusion matrices and the most confident mistakes are files the
evaluator wrote into its `evaluation` artifact (see `pipeline.formats.evaluation`); no model,
TensorFlow or TFMA is loaded here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pipeline.formats import evaluation as evaluation_format
from pipeline.report import sources
from pipeline.report.images import png_data_uri

log = logging.getLogger(__name__)

PREDATES = (
    "this evaluation predates per-example outputs (no {files} in {uri}); "
    "rerun the evaluator to see the confusion matrix and the most confident mistakes"
)


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
        return outputs, (
            f"{step} was skipped ({why})"
            + ("; shown are the outputs it reused" if outputs else "; nothing to show")
        )
    if state == "failed":
        return {}, f"{step} failed: {report.get('error') or 'no error recorded'}"
    return outputs, f"{step}: unknown state {state!r}"


def _run_header(summary: dict) -> dict:
    steps = []
    for name, step in (summary.get("steps") or {}).items():
        steps.append(
            {
                "name": name,
                "state": step.get("state"),
                "seconds": step.get("seconds"),
                "execution_id": step.get("execution_id"),
                "detail": step.get("error") or step.get("reason"),
            }
        )
    return {
        key: summary.get(key)
        for key in (
            "run_id",
            "status",
            "exit_code",
            "message",
            "started",
            "finished",
            "pipeline_root",
            "serving_dir",
            "report",
        )
    } | {
        "spans": (summary.get("data") or {}).get("spans"),
        "data_root": (summary.get("data") or {}).get("data_root"),
        "layout": (summary.get("data") or {}).get("layout"),
        "steps": steps,
    }


def _data_section(summary: dict) -> dict:
    stats_problems: list = []
    anomalies_problems: list = []
    stats_outputs, stats_note = step_availability(summary, "statistics_gen")
    anomalies_outputs, anomalies_note = step_availability(summary, "example_validator")
    statistics = anomalies = None
    if stats_outputs.get("statistics"):
        statistics = _try(stats_problems, "statistics", sources.read_statistics, stats_outputs["statistics"])
    if anomalies_outputs.get("anomalies"):
        anomalies = _try(
            anomalies_problems, "anomalies", sources.read_anomalies, anomalies_outputs["anomalies"]
        )
    validator = ((summary.get("steps") or {}).get("example_validator") or {}).get("properties") or {}
    return {
        "statistics_note": stats_note,
        "statistics_problems": stats_problems,
        "anomalies_note": anomalies_note,
        "anomalies_problems": anomalies_problems,
        "statistics": statistics,
        "anomalies": anomalies,
        "validation_passed": validator.get("passed"),
    }


def _training_section(summary: dict) -> dict:
    problems: list = []
    outputs, note = step_availability(summary, "trainer")
    history = None
    if outputs.get("model_run"):
        history = _try(problems, "training history", sources.read_training_history, outputs["model_run"])
    properties = ((summary.get("steps") or {}).get("trainer") or {}).get("properties") or {}
    return {
        "note": note,
        "problems": problems,
        "history": history,
        "properties": properties,
        "module": summary.get("model_module"),
    }


def _decision_section(
    summary: dict, step: str, output: str, what: str, reader, summary_key: str, field: str
) -> dict:
    """A section made of one artifact of `step` (read by `reader`) and its summary entry:
    {"note", "problems", "summary": summary[summary_key], field: what the reader returned}."""
    problems: list = []
    outputs, note = step_availability(summary, step)
    read = _try(problems, what, reader, outputs[output]) if outputs.get(output) else None
    return {"note": note, "problems": problems, "summary": summary.get(summary_key), field: read}


def _evaluation_section(summary: dict) -> dict:
    return _decision_section(
        summary, "evaluator", "blessing", "blessing", sources.read_blessing, "evaluation", "decision"
    )


def _push_section(summary: dict) -> dict:
    return _decision_section(
        summary, "pusher", "pushed_model", "push record", sources.read_push, "push", "record"
    )


def _gallery(mistakes: dict) -> dict:
    """mistakes.json with each digit's pixels as a PNG data URI ("png") instead."""
    items = [
        {
            "png": png_data_uri(item["pixels"]),
            "label": item["label"],
            "predicted": item["predicted"],
            "confidence": item["confidence"],
            "label_probability": item["label_probability"],
        }
        for item in mistakes["items"]
    ]
    return {"scanned": mistakes["scanned"], "misclassified": mistakes["misclassified"], "items": items}


def _analysis_section(summary: dict) -> dict:
    """Confusion matrices and misclassified digits, as the evaluation artifact holds them."""
    problems: list = []
    outputs, note = step_availability(summary, "evaluator")
    section = {"note": note, "problems": problems, "confusion": None, "gallery": None}
    uri = outputs.get("evaluation")
    if not uri:
        return section
    missing = [
        name
        for name in evaluation_format.missing_per_example_files(uri)
        if name != evaluation_format.OUTCOMES_FILE
    ]
    if len(missing) == 2:
        section["skipped"] = PREDATES.format(files=" or ".join(missing), uri=uri)
        return section
    section["confusion"] = _try(problems, "confusion matrix", evaluation_format.read_confusion_matrices, uri)
    mistakes = _try(problems, "misclassified digits", evaluation_format.read_mistakes, uri)
    if mistakes is not None:
        section["gallery"] = _try(problems, "misclassified digits", _gallery, mistakes)
    return section


def collect(summary: dict) -> dict:
    """Everything the report shows for the run `summary` (as written by the runner).

    Never raises for unreadable artifacts (they become problems).
    """
    return {
        "run": _run_header(summary),
        "data": _data_section(summary),
        "training": _training_section(summary),
        "evaluation": _evaluation_section(summary),
        "analysis": _analysis_section(summary),
        "push": _push_section(summary),
    }
