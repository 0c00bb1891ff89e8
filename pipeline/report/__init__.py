"""The run report: `<pipeline_root>/runs/<run_id>/report.html`, one self-contained page.

It shows the run (status, spans, step states and times), data statistics and anomalies,
training curves, evaluation metrics per slice, the confusion matrix, the most confident
mistakes on the test split, the blessing decision and the push outcome.

- `write_report(summary, run_dir)`: called by the runner after the summary is written.
- `rebuild_report(pipeline_root, run_id)`: `run_local.py report`, for any past run.

The report only reads artifacts: it never loads a model, TensorFlow or TFMA (the evaluator
writes the confusion matrices and the most confident mistakes into its evaluation artifact).
Modules: `sources` (artifact readers), `collect` (all of it for one run), `sections_data` /
`sections_model` / `render` (HTML), `svg`, `images`, `markup`; `compare_page`, the page of
`run_local.py compare` (`pipeline.compare`) from the same building blocks.
"""

from __future__ import annotations

import logging
import os
import re
import time

from pipeline.core import artifacts as run_layout
from pipeline.core.artifacts import SUMMARY_FILE
from pipeline.core.atomic_files import write_json_atomic, write_text_atomic
from pipeline.core.errors import ConfigError
from pipeline.formats.files import read_json
from pipeline.report.collect import collect
from pipeline.report.render import render_report

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")


def build_report(summary: dict) -> str:
    """The report's HTML for the run `summary` (see `collect.collect`)."""
    return render_report(collect(summary))


def write_report(summary: dict, run_dir: str) -> str:
    """Writes `<run_dir>/report.html` for `summary` (atomically); returns its path.

    Unreadable artifacts become notes in the report; raises only when the page cannot be
    built or written (OSError and the like) - the runner logs that and carries on.
    """
    started = time.monotonic()
    path = os.path.join(run_dir, REPORT_FILE)
    write_text_atomic(path, build_report(summary))
    log.info("report: %s (%.1fs)", path, time.monotonic() - started)
    return path


def _newest_run(runs_dir: str) -> str:
    names = (
        sorted(n for n in os.listdir(runs_dir) if os.path.isfile(os.path.join(runs_dir, n, SUMMARY_FILE)))
        if os.path.isdir(runs_dir)
        else []
    )
    if not names:
        raise ConfigError(f"{runs_dir}: no run with a summary.json")
    return names[-1]


def rebuild_report(pipeline_root: str, run_id: str | None = None) -> str:
    """(Re)writes the report of run `run_id` (default: the newest) from its artifacts.

    Adds the report's path to the run's summary.json when it is missing. Returns the path.
    Raises ConfigError for an unknown or malformed run id.
    """
    runs_dir = run_layout.runs_dir(pipeline_root)
    if run_id is None:
        run_id = _newest_run(runs_dir)
    elif not _RUN_ID.match(run_id):
        raise ConfigError(f"run id {run_id!r}: not a run id (letters, digits, '_', '-', '.', ':')")
    run_dir = os.path.join(runs_dir, run_id)
    summary_path = os.path.join(run_dir, SUMMARY_FILE)
    if not os.path.isfile(summary_path):
        raise ConfigError(f"run {run_id}: no {summary_path}")
    summary = read_json(summary_path)
    path = write_report(summary, run_dir)
    if summary.get("report") != path:
        summary["report"] = path
        write_json_atomic(summary_path, summary)
    return path


__all__ = ["write_report", "build_report", "rebuild_report", "REPORT_FILE"]
