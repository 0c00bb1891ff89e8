"""One pipeline run made of several calls (`run_local.py --run-id ID --from S --to S`), as a
scheduler that runs each step as its own task makes it.

The run's record is its folder `runs/<ID>/`: summary.json (every step's latest state in this
run, rewritten by each call), config.json (the configuration the run started with) and, in
ML Metadata, the one `pipeline_run` context named ID. A call may go on only where the record
allows (`check_call`); its steps read the outputs that the steps before them produced or reused
from cache *in this run* (`reuse_recorded`), never the newest outputs of the pipeline.

The rules, which every scheduler retry relies on:
- a step runs once per run: a step the run has completed (ran / cached) is refused;
- in order: every step before the call's first step must have completed in this run (the
  pipeline order, not only producer links: the data gate stands before training);
- a finished run takes no more calls: its last step completed, or a completed step stopped it
  (the data gate, exit 3);
- a failed step may be retried: after a call stopped by a failure, the next call must start at
  the failed step (any other call is refused); what the failed call left is discarded as after
  any failure, and the retry resolves the same upstream outputs of this run.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core import artifacts as layout
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.launcher import StepLauncher
from pipeline.core.metadata import to_step_artifact
from pipeline.core.pipeline import Pipeline
from pipeline.core.step import StepSpec
from pipeline.core.step_report import StepReport, StepResult, StepState

log = logging.getLogger("pipeline")

# Airflow's run ids (`manual__2026-12-07T22:00:00+00:00`, `scheduled__...`) match its default
# allowed pattern [A-Za-z0-9_.~:+-]; they are used unchanged as the folder name, which POSIX
# file systems accept. The first character is a letter or digit, so no id is ".", ".." or an
# option.
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.~:+-]{0,199}$")


class CallRefused(ConfigError):
    """A call of a run that its record does not allow (exit 2, before the lock)."""


def check_run_id(run_id: str) -> str:
    """Returns `run_id` when it can name a run folder; ConfigError otherwise."""
    if not _RUN_ID.match(run_id):
        raise ConfigError(
            f"--run-id {run_id!r}: a run id is 1-200 letters, digits and _ . ~ : + - "
            "starting with a letter or digit (Airflow's run ids fit)"
        )
    return run_id


@dataclass(frozen=True)
class RunRecord:
    """What the run's folder says so far: its summary ({} before its first call) and the
    configuration it started with (None before its first call)."""

    run_id: str
    folder: str
    summary: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] | None = None

    def entry(self, step: str) -> Mapping[str, Any] | None:
        """The step's summary entry in this run, or None."""
        return self.summary.get("steps", {}).get(step)

    def state(self, step: str) -> StepState | None:
        """The step's state in this run, or None when no call has reached it."""
        entry = self.entry(step)
        return StepState(entry["state"]) if entry else None

    def completed(self, step: str) -> bool:
        """True when the step ran or was cached in this run."""
        state = self.state(step)
        return state is not None and state.completed

    @property
    def stopped_at(self) -> str | None:
        """The step that stopped the latest call (failed, or stopped the run), or None."""
        calls = self.summary.get("calls") or []
        return calls[-1].get("stopped_at") if calls else None


def _read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ConfigError(f"run record {path} cannot be read: {' '.join(str(e).split())}") from None


def read_record(root: str, run_id: str) -> RunRecord:
    """The record of run `run_id` under pipeline root `root` (empty when it has none yet).

    Raises ConfigError naming the file when the summary or config is unreadable.
    """
    folder = layout.run_dir(root, check_run_id(run_id))
    summary = _read_json(os.path.join(folder, layout.SUMMARY_FILE)) or {}
    if summary and "calls" not in summary:
        raise CallRefused(
            f"run {run_id}: {folder} holds a run made by one call, which takes no more calls; "
            "choose another --run-id"
        )
    return RunRecord(run_id, folder, summary, _read_json(os.path.join(folder, layout.CONFIG_FILE)))


def _finished_because(record: RunRecord, pipeline: Pipeline) -> str | None:
    last = pipeline.all_steps[-1].name
    if record.completed(last):
        return f"its last step {last} completed"
    stopped = record.stopped_at
    if stopped and record.completed(stopped):
        return f"step {stopped} stopped it (exit {record.summary.get('exit_code')})"
    return None


def check_call(record: RunRecord, pipeline: Pipeline, run_config: Mapping[str, Any]) -> None:
    """Raises CallRefused, naming the run and the step, unless the run may go on with the steps
    `pipeline.steps` (see the module docstring for the rules); the configuration must be the
    one the run started with."""
    run_id, first = record.run_id, pipeline.steps[0].name
    prefix = f"run {run_id}: step {first} refused"
    finished = _finished_because(record, pipeline)
    if finished:
        raise CallRefused(f"{prefix}: the run has finished ({finished}); start a new --run-id")
    stopped = record.stopped_at
    if stopped and stopped != first:
        raise CallRefused(
            f"{prefix}: the run stopped when step {stopped} failed; retry that step "
            f"(--from {stopped}) or start a new --run-id"
        )
    for spec in pipeline.steps:
        if record.completed(spec.name):
            raise CallRefused(
                f"{prefix}: step {spec.name} already {record.state(spec.name)} in this run, and a "
                "step runs once per run; start a new --run-id to run it again"
            )
    for spec in pipeline.upstream:
        if not record.completed(spec.name):
            state = record.state(spec.name)
            raise CallRefused(
                f"{prefix}: called out of order, step {spec.name} before it has not completed in "
                f"this run ({state.value if state else 'not run yet'})"
            )
    _check_same_config(record, run_config, prefix)


def _check_same_config(record: RunRecord, run_config: Mapping[str, Any], prefix: str) -> None:
    if record.config is None:
        return
    wanted = json.loads(json.dumps(run_config, default=str))
    for key in sorted(set(wanted) | set(record.config)):
        if wanted.get(key) != record.config.get(key):
            raise CallRefused(
                f"{prefix}: its configuration differs from the one the run started with "
                f"(key {key}; see {os.path.join(record.folder, layout.CONFIG_FILE)}); a run has one "
                "configuration: use the same one or start a new --run-id"
            )


def reuse_recorded(launcher: StepLauncher, spec: StepSpec, position: str, record: RunRecord) -> StepResult:
    """The result step `spec` recorded in this run (ran / cached), its outputs verified against
    their digests, its inputs read back from its execution's lineage.

    Raises PipelineError when the record names no execution of this run, or its outputs are
    missing or altered.
    """
    store, entry = launcher.store, record.entry(spec.name) or {}
    execution_id = entry.get("execution_id")
    if not isinstance(execution_id, int) or store.run_of(execution_id) != record.run_id:
        raise PipelineError(
            f"run {record.run_id}: step {spec.name} has no execution of this run in the metadata store "
            f"(its record {os.path.join(record.folder, layout.SUMMARY_FILE)} names {execution_id!r})"
        )
    outputs = launcher.verified_outputs(spec, execution_id)
    if outputs is None:
        raise PipelineError(
            f"run {record.run_id}: the outputs of step {spec.name} in this run (execution "
            f"{execution_id}) are missing or altered; start a new --run-id"
        )
    inputs = {key: to_step_artifact(store.artifact(a)) for key, a in store.inputs_of(execution_id).items()}
    log.info("%s: %s earlier in run %s (execution %d)", position, entry["state"], record.run_id, execution_id)
    return StepResult(StepReport.from_json(entry, inputs), outputs)
