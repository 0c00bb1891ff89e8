"""Runs a `Pipeline`: order, lock, cleanup after a crash, the run summary and the run's hooks.

Under the pipeline root's lock, in order, every step of `pipeline.steps` is launched
(`pipeline.core.launcher`: prepare, run, publish); the steps before them (`pipeline.upstream`,
a partial run) are not run but resolved from earlier outputs: the newest that verify, or, for a
call of a run recorded under `--run-id`, that run's own (`pipeline.core.run_record`). The
first failure or gate stop ends the run: every later step is "skipped". Then the summary is
written to runs/<run_id>/summary.json and the application's hooks are called (store_written,
then after_run).

A stop request (`pipeline.core.interrupts`: SIGTERM, SIGINT) raises `Interrupted` wherever the
run is; the step it interrupts is failed by the launcher, and before the lock is released the
run does what the next run would do after a crash (abandoned executions marked failed,
staging and uncommitted folders removed), so nothing is left behind. No summary is written
for an interrupted call: the next run, or the retried call of a recorded run, resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.core import artifacts as layout
from pipeline.core import interrupts
from pipeline.core.atomic_files import write_json_atomic
from pipeline.core.errors import EXIT_OK, ConfigError, Interrupted, PipelineError, write_fault
from pipeline.core.launcher import RunScope, StepLauncher, one_line, recorded_stop
from pipeline.core.lock import RunLock, run_lock
from pipeline.core.metadata import MetadataStore, open_store
from pipeline.core.pipeline import Pipeline
from pipeline.core.run_record import RunRecord, check_call, check_run_id, read_record, reuse_recorded
from pipeline.core.step import StepSpec
from pipeline.core.step_report import StepReport, StepResult, StepState, Stop

log = logging.getLogger("pipeline")

AFTER_STOP = "an earlier step failed or stopped the run"

# reuse(spec, position, produced) -> StepResult of a step before the ones to run.
Reuse = Callable[[StepSpec, str, Mapping], StepResult]


@dataclass(frozen=True)
class RunResult:
    """The outcome of `run_pipeline`: exit status, summary (as written) and its path."""

    exit_code: int
    summary: dict
    summary_path: str


@dataclass(frozen=True)
class Walked:
    """Every step's report, in pipeline order, and what stopped the run (None: nothing)."""

    reports: dict
    stop: Stop | None
    stopped_at: str | None

    @property
    def exit_code(self) -> int:
        return self.stop.exit_code if self.stop else EXIT_OK


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def partial(pipeline: Pipeline, from_step: str | None, to_step: str | None) -> Pipeline:
    """The pipeline narrowed to --from / --to; ConfigError when --from comes after --to."""
    names = [spec.name for spec in pipeline.steps]
    if (
        from_step
        and to_step
        and names.index(pipeline.step(from_step).name) > names.index(pipeline.step(to_step).name)
    ):
        raise ConfigError(f"--from {from_step} comes after --to {to_step}")
    if to_step:
        pipeline = pipeline.to_step(to_step)
    if from_step:
        pipeline = pipeline.from_step(from_step)
    return pipeline


# ---- steps before the ones to run -----------------------------------------------------------
def reuse_latest(launcher: StepLauncher, first: str) -> Reuse:
    """A run of its own reuses the newest verified outputs of each step before `first`."""

    def reuse(spec: StepSpec, position: str, produced: Mapping) -> StepResult:
        inputs = launcher.resolve_inputs(spec, produced)
        hit = launcher.find_reusable(spec, None)
        if hit is None:
            raise ConfigError(
                f"--from {first}: step {spec.name} has no completed outputs to start from; run it first"
            )
        log.info("%s: skipped (--from), reusing execution %d", position, hit.execution_id)
        report = StepReport(
            StepState.SKIPPED,
            hit.execution_id,
            {key: a.uri for key, a in hit.outputs.items()},
            reason="before --from; reused its latest outputs",
            inputs=inputs,
        )
        # A data gate that stopped the run it ran in stops this one too: `--from trainer` after
        # exit 3 must not train on the data it refused.
        return StepResult(report, hit.outputs, recorded_stop(hit.outcome))

    return reuse


def reuse_from_record(launcher: StepLauncher, record: RunRecord) -> Reuse:
    """A call of a recorded run reuses what each earlier step produced in that run."""
    return lambda spec, position, produced: reuse_recorded(launcher, spec, position, record)


# ---- the walk -------------------------------------------------------------------------------
def _failed_before_launch(spec: StepSpec, error: PipelineError) -> StepResult:
    log.error("%s: %s", spec.name, one_line(error))
    report = StepReport(StepState.FAILED, error=one_line(error))
    return StepResult(report, {}, Stop(f"{spec.name}: {one_line(error)}", error.exit_code))


def walk(
    pipeline: Pipeline, launcher: StepLauncher, reuse: Reuse, lock: RunLock, not_run_reason: str
) -> Walked:
    """Reuses the upstream steps, launches `pipeline.steps` until one stops the run, and
    reports every step (`not_run_reason` for the downstream ones)."""
    produced: dict = {}  # "step.output" -> Artifact
    reports: dict = {}
    stop, stopped_at = None, None
    upstream = {spec.name for spec in pipeline.upstream}
    downstream = {spec.name for spec in pipeline.downstream}
    total = len(pipeline.all_steps)
    last: tuple[str, StepResult] | None = None  # the latest step reused or launched
    for index, spec in enumerate(pipeline.all_steps):
        _checkpoint(launcher.scope.run_id, last)
        if stop is not None:
            reports[spec.name] = StepReport(StepState.SKIPPED, reason=AFTER_STOP)
            continue
        if spec.name in downstream:
            reports[spec.name] = StepReport(StepState.SKIPPED, reason=not_run_reason)
            continue
        position = f"[{index + 1}/{total}] {spec.name}"
        try:
            lock.check()
            if spec.name in upstream:
                result = reuse(spec, position, produced)
            else:
                result = launcher.launch(spec, position, produced)
        except Interrupted as request:  # while its inputs were resolved or its cache looked up
            request.locate(
                f"during {spec.name} (run {launcher.scope.run_id})",
                f"{spec.name} committed nothing, the next run resumes",
            )
            raise
        except PipelineError as e:  # input resolution, --from, a lost store lock
            result = _failed_before_launch(spec, e)
        last = (spec.name, result)
        reports[spec.name] = result.report
        produced.update({f"{spec.name}.{key}": a for key, a in result.outputs.items()})
        if result.stop is not None:
            stop, stopped_at = result.stop, spec.name
    _checkpoint(launcher.scope.run_id, last)
    return Walked(reports, stop, stopped_at)


def _checkpoint(run_id: str, last: tuple[str, StepResult] | None) -> None:
    """Raises, located, a stop request that waited while a step committed or failed."""
    try:
        interrupts.checkpoint()
    except Interrupted as stop:
        if last is None:
            raise stop.locate(f"before the steps of run {run_id}", "nothing committed") from None
        previous, result = last
        committed = result.completed
        raise stop.locate(
            f"after {previous} (run {run_id})",
            f"{previous} {'is committed' if committed else 'failed and committed nothing'}, "
            "the next run resumes",
        ) from None


# ---- the summary ----------------------------------------------------------------------------
def build_summary(
    pipeline: Pipeline, run_id: str, started: datetime, walked: Walked, record: RunRecord | None
) -> dict:
    """The run summary: outcome, every step's entry, the steps' own contributions; for a
    recorded run also its `calls` (each call's steps, times, exit status and stopping step)."""
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    summary: dict[str, Any] = {
        "run_id": run_id,
        "started": started.isoformat(timespec="seconds"),
        "finished": finished,
        "exit_code": walked.exit_code,
        "status": "completed" if walked.exit_code == EXIT_OK else "failed",
        "message": walked.stop.message if walked.stop else None,
        "pipeline_root": pipeline.root,
        **pipeline.summary_fields,
        "steps": {name: report.to_json() for name, report in walked.reports.items()},
    }
    for spec in pipeline.all_steps:
        if spec.summary is not None:
            summary.update(spec.summary(walked.reports[spec.name]))
    if record is not None:
        call = {
            "steps": [spec.name for spec in pipeline.steps],
            "started": summary["started"],
            "finished": finished,
            "exit_code": walked.exit_code,
            "stopped_at": walked.stopped_at,
        }
        summary["started"] = record.summary.get("started", summary["started"])
        summary["calls"] = [*record.summary.get("calls", []), call]
    return summary


def _call_hook(failed: str, hook: Callable[..., Any] | None, *args: Any) -> Any:
    """Calls an application hook and returns what it returns; its failure is one warning
    (`failed`: what did not happen) and never changes the run."""
    if hook is None:
        return None
    try:
        return hook(*args)
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.warning("%s: %s", failed, one_line(e))
        log.debug("traceback:\n%s", traceback.format_exc())
        return None


# ---- a run ----------------------------------------------------------------------------------
def _clean_up(pipeline: Pipeline, store: MetadataStore) -> tuple[list, list]:
    """What an interrupted run left, under the lock: its RUNNING executions marked failed, its
    staging folders and the final-named folders of those executions removed. Returns (the
    executions, the folders)."""
    abandoned = store.abandon_running_executions()
    removed = layout.remove_stale_staging(pipeline.root) + layout.remove_uncommitted(
        pipeline.root, {spec.name: tuple(spec.outputs) for spec in pipeline.all_steps}, abandoned
    )
    return abandoned, removed


def _open_and_clean(pipeline: Pipeline) -> MetadataStore:
    """Opens the store (a damaged or unreachable one stops the run before anything changes)
    and cleans up after an interrupted run: abandoned executions, staging, unrecorded folders."""
    store = open_store(pipeline.root, pipeline.store)
    abandoned, removed = _clean_up(pipeline, store)
    if abandoned or removed:
        log.warning(
            "cleaned up after an interrupted run: %d execution(s) marked failed, "
            "%d uncommitted folder(s) removed",
            len(abandoned),
            len(removed),
        )
    return store


def _stopped(pipeline: Pipeline, store: MetadataStore | None, stop: Interrupted) -> None:
    """After a stop request, still under the lock: ends every child process, then does the
    crash cleanup the next run would do (idempotent; the launcher did most of it already), so
    the next run finds nothing to clean. A cleanup that fails is one warning: the next run
    does it then."""
    log.error("run %s", stop)
    interrupts.end_descendants()
    if store is None:
        return
    try:
        abandoned, removed = _clean_up(pipeline, store)
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.warning("cleanup after the stop request not finished (%s); the next run does it", one_line(e))
        return
    if abandoned or removed:
        log.warning(
            "after the stop request: %d execution(s) marked failed, %d folder(s) removed",
            len(abandoned),
            len(removed),
        )


def _run_config(pipeline: Pipeline) -> dict:
    return {
        "pipeline_root": pipeline.root,
        "lock_timeout_s": pipeline.lock_timeout_s,
        "beam_args": list(pipeline.beam_args),
        **pipeline.run_config,
    }


def _checked_record(pipeline: Pipeline, run_id: str) -> RunRecord:
    record = read_record(pipeline.root, run_id)
    check_call(record, pipeline, _run_config(pipeline))
    return record


def run_pipeline(
    pipeline: Pipeline,
    from_step: str | None = None,
    to_step: str | None = None,
    summary_json: str | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Runs `pipeline` (narrowed to --from / --to) under the pipeline root's lock and writes the
    run summary.

    run_id: None for a run of its own (a fresh id). Given, the call adds to the run recorded
        under that id (`pipeline.core.run_record`): its steps read that run's outputs, and the
        call is refused (CallRefused, exit 2) before the lock, and again under it, when the
        record does not allow it.
    Returns a RunResult whose `exit_code` follows pipeline.core.errors (0 ok, 1 failure, 2 usage,
    3 data gate, 4 lock timeout). Raises ConfigError for bad --from/--to or run id before taking
    the lock, LockTimeoutError when another run holds the lock too long, StoreSettingsError when
    a MySQL store (`pipeline.store`) cannot be reached or opened, WriteFaultError when the root or
    its lock file cannot be written (read-only, full), and StoreDamagedError when a
    SQLite store fails its integrity check: then nothing in the root is touched but the lock. A
    MySQL store lost mid-run fails the step it was in (exit 1; the next run recovers as after a
    crash). After the summary is written the hooks `store_written` (the store's backup) and
    `after_run` (the report) are called. A stop request (`pipeline.core.interrupts`) raises
    Interrupted, saying what it interrupted, once the run has cleaned up and before the lock is
    released.
    """
    pipeline = partial(pipeline, from_step, to_step)
    recorded = run_id is not None
    run_id = check_run_id(run_id) if run_id is not None else new_run_id()
    if recorded:
        _checked_record(pipeline, run_id)
    try:
        os.makedirs(pipeline.root, exist_ok=True)
    except OSError as e:  # a read-only or full parent: one line, nothing else tried
        raise write_fault("pipeline root", e) from e
    started = datetime.now(UTC)
    with run_lock(pipeline.root, pipeline.lock_timeout_s, pipeline.store) as lock:
        store = None
        try:
            # Another call of the same run may have gone on while this one waited for the lock.
            record = _checked_record(pipeline, run_id) if recorded else None
            store = _open_and_clean(pipeline)
            walked = _walk(pipeline, store, lock, run_id, record)
            summary = build_summary(pipeline, run_id, started, walked, record)
            summary_path = os.path.join(layout.run_dir(pipeline.root, run_id), layout.SUMMARY_FILE)
            with _phase(
                run_id, "while writing the run summary", "its steps are committed, the next run reuses them"
            ):
                write_json_atomic(summary_path, summary)
            with _phase(
                run_id,
                "during the metadata store's backup",
                "the run is committed and recorded; the backup was not updated",
            ):
                _call_hook("store_written hook failed", pipeline.store_written, store)
            with _phase(
                run_id,
                "during the run report",
                "the run is committed and recorded; its report was not written",
            ):
                extra = _call_hook(
                    "run report not written",
                    pipeline.after_run,
                    summary,
                    layout.run_dir(pipeline.root, run_id),
                )
                if extra:
                    summary["report"] = extra
                    write_json_atomic(summary_path, summary)
                if summary_json:
                    write_json_atomic(summary_json, summary)
        except Interrupted as stop:
            stop.locate(f"before the steps of run {run_id}", "nothing committed")
            with interrupts.held():
                _stopped(pipeline, store, stop)
            raise
    return RunResult(walked.exit_code, summary, summary_path)


def _walk(
    pipeline: Pipeline, store: MetadataStore, lock: RunLock, run_id: str, record: RunRecord | None
) -> Walked:
    """Writes the run's config.json and walks its steps (see `walk`)."""
    run_dir = layout.run_dir(pipeline.root, run_id)
    write_json_atomic(os.path.join(run_dir, layout.CONFIG_FILE), _run_config(pipeline))
    log.info("run %s: pipeline root %s", run_id, pipeline.root)
    scope = RunScope(
        run_id,
        pipeline.root,
        store.run_contexts(run_id, {"pipeline_root": pipeline.root}),
        tuple(pipeline.beam_args),
        lock,
    )
    launcher = StepLauncher(store, scope)
    if record is not None:
        return walk(pipeline, launcher, reuse_from_record(launcher, record), lock, "not run yet in this run")
    return walk(pipeline, launcher, reuse_latest(launcher, pipeline.steps[0].name), lock, "after --to")


@contextlib.contextmanager
def _phase(run_id: str, where: str, consequence: str) -> Iterator[None]:
    """Locates a stop request that comes in the `with` block (a phase after the steps)."""
    try:
        yield
    except Interrupted as stop:
        stop.locate(f"{where} (run {run_id})", consequence)
        raise
