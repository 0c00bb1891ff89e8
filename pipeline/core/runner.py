"""Runs a `Pipeline`: order, lock, cache, commit-on-completion, metadata and the run summary.

For each step, in order:
1. resolve its inputs (upstream outputs of this run, or resolvers over the metadata store);
2. compute its cache key (code, parameters, input fingerprints, library versions);
3. reuse a completed execution with the same key whose outputs still exist and verify
   (state "cached"), or run the executor into staging directories and commit them only once it
   has returned (state "ran");
4. stop at the first failure or gate stop; every later step is "skipped".
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import shutil
import time
import traceback
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.core import artifacts as layout
from pipeline.core import resources
from pipeline.core.atomic_files import write_json_atomic
from pipeline.core.digest import directory_digest
from pipeline.core.errors import EXIT_FAILURE, EXIT_OK, ConfigError, PipelineError, StoreUnavailableError
from pipeline.core.fingerprint import cache_key
from pipeline.core.lock import RunLock, run_lock
from pipeline.core.metadata import CACHED, COMPLETE, MetadataStore, open_store, to_step_artifact
from pipeline.core.pipeline import Pipeline
from pipeline.core.step import Artifact, StepContext, StepOutcome, StepSpec
from pipeline.core.store_backup import keep_backup

log = logging.getLogger("pipeline")

RAN, CACHED_STATE, FAILED_STATE, SKIPPED = "ran", "cached", "failed", "skipped"


@dataclass
class StepReport:
    """What happened to one step in one run (one entry of the summary's `steps`)."""

    state: str
    execution_id: int | None = None
    outputs: dict = field(default_factory=dict)
    properties: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    reason: str | None = None
    # Peak resident memory of the pipeline process while the step ran (None: not measured).
    peak_memory_mib: float | None = None
    # The step's resolved inputs (input key -> Artifact), for its summary contribution.
    inputs: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        data = {
            "state": self.state,
            "execution_id": self.execution_id,
            "outputs": self.outputs,
            "seconds": round(self.seconds, 3),
        }
        if self.peak_memory_mib is not None:
            data["peak_memory_mib"] = self.peak_memory_mib
        if self.properties:
            data["properties"] = self.properties
        if self.error:
            data["error"] = self.error
        if self.reason:
            data["reason"] = self.reason
        return data


@dataclass
class RunResult:
    """The outcome of `run_pipeline`: exit status, summary (as written) and its path."""

    exit_code: int
    summary: dict
    summary_path: str


def new_run_id() -> str:
    """A sortable, unique run id: UTC time plus a random suffix."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def _load_executor(spec: StepSpec):
    if callable(spec.executor):
        return spec.executor
    module_name, _, function = spec.executor.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _step_range(pipeline: Pipeline, from_step: str | None, to_step: str | None) -> tuple:
    names = [s.name for s in pipeline.steps]
    first = names.index(pipeline.step(from_step).name) if from_step else 0
    last = names.index(pipeline.step(to_step).name) if to_step else len(names) - 1
    if first > last:
        raise ConfigError(f"--from {from_step} comes after --to {to_step}")
    return first, last


class _Run:
    """State of one run; `execute` walks the steps."""

    def __init__(
        self,
        pipeline: Pipeline,
        store: MetadataStore,
        run_id: str,
        first: int,
        last: int,
        lock: RunLock | None = None,
    ):
        self.pipeline = pipeline
        self.lock = lock or RunLock()
        self.root = pipeline.root
        self.store = store
        self.run_id = run_id
        self.first, self.last = first, last
        self.produced: dict = {}  # "step.output" -> Artifact
        self.reports: dict = {}
        self.exit_code = EXIT_OK
        self.stop_message: str | None = None
        self.contexts = store.run_contexts(run_id, {"pipeline_root": self.root})

    # ---- inputs ---------------------------------------------------------------------------
    def _resolve_inputs(self, spec: StepSpec) -> dict:
        """Input key -> Artifact: producer inputs first, then resolvers, which see those."""
        inputs = {}
        for by_producer in (True, False):
            for key, inp in spec.inputs.items():
                if (inp.producer is not None) != by_producer:
                    continue
                if by_producer:
                    artifact = self.produced.get(inp.producer)
                else:
                    artifact = inp.resolver(self.store, dict(inputs))
                if artifact is None:
                    if inp.optional:
                        continue
                    raise PipelineError(f"step {spec.name}: required input {key!r} has no artifact")
                inputs[key] = artifact
        return {key: inputs[key] for key in spec.inputs if key in inputs}

    @staticmethod
    def _fingerprint(artifact: Artifact) -> str:
        props = artifact.properties
        return str(props.get(layout.CONTENT_DIGEST) or f"id:{artifact.id}")

    # ---- cache ----------------------------------------------------------------------------
    def _verified_outputs(self, spec: StepSpec, execution) -> dict | None:
        """Output key -> Artifact of a past execution, if every output exists and verifies."""
        outputs = self.store.outputs_of(execution.id)
        if set(outputs) != set(spec.outputs):
            return None
        result = {}
        for key, artifact_id in outputs.items():
            recorded = self.store.artifact(artifact_id)
            expected = recorded.properties.get(layout.CONTENT_DIGEST)
            try:
                ok = expected and directory_digest(recorded.uri) == expected
            except (OSError, ValueError):
                ok = False
            if not ok:
                log.warning(
                    "%s: cached output %s at %s is missing or altered; running again",
                    spec.name,
                    key,
                    recorded.uri,
                )
                return None
            result[key] = to_step_artifact(recorded)
        return result

    def _find_cached(self, spec: StepSpec, key: str | None) -> tuple | None:
        """(execution, outputs) of the newest reusable execution; any key when `key` is None."""
        for execution in self.store.executions_of(spec.name):
            if execution.last_known_state not in (COMPLETE, CACHED):
                continue
            if key is not None and self.store.execution_outcome(execution).get("cache_key") != key:
                continue
            outputs = self._verified_outputs(spec, execution)
            if outputs is not None:
                return execution, outputs
        return None

    # ---- one step -------------------------------------------------------------------------
    def _publish(self, spec: StepSpec, outputs: dict) -> None:
        for key, artifact in outputs.items():
            self.produced[f"{spec.name}.{key}"] = artifact

    def _run_step(self, spec: StepSpec, index: int) -> StepReport:
        self.lock.check()
        inputs = self._resolve_inputs(spec)
        report = self._execute_step(spec, index, inputs)
        report.inputs = inputs
        return report

    def _execute_step(self, spec: StepSpec, index: int, inputs: dict) -> StepReport:
        position = f"[{index + 1}/{len(self.pipeline.steps)}] {spec.name}"
        key = cache_key(
            spec.name, spec.params, spec.code_modules, {k: self._fingerprint(a) for k, a in inputs.items()}
        )
        input_ids = {k: a.id for k, a in inputs.items() if a.id}

        if index < self.first:
            found = self._find_cached(spec, None)
            if found is None:
                raise ConfigError(
                    f"--from {self.pipeline.steps[self.first].name}: step {spec.name} "
                    "has no completed outputs to start from; run it first"
                )
            execution, outputs = found
            self._publish(spec, outputs)
            log.info("%s: skipped (--from), reusing execution %d", position, execution.id)
            return StepReport(
                SKIPPED,
                execution.id,
                {k: a.uri for k, a in outputs.items()},
                reason="before --from; reused its latest outputs",
            )

        if spec.cacheable:
            found = self._find_cached(spec, key)
            if found is not None:
                execution, outputs = found
                outcome = self.store.execution_outcome(execution)
                execution_id = self.store.record_cached(
                    spec.name,
                    self.run_id,
                    key,
                    self.contexts,
                    input_ids,
                    {k: a.id for k, a in outputs.items()},
                    outcome,
                )
                self._publish(spec, outputs)
                log.info("%s: cached (reusing execution %d)", position, execution.id)
                report = StepReport(
                    CACHED_STATE,
                    execution_id,
                    {k: a.uri for k, a in outputs.items()},
                    properties=outcome.get("properties", {}),
                )
                self._apply_stop(outcome.get("stop_run"), outcome.get("stop_exit_code", EXIT_FAILURE))
                return report

        log.info("%s: running", position)
        resources.reset_peak_rss()
        started = time.monotonic()
        execution_id = self.store.start_execution(spec.name, self.run_id, key, self.contexts, input_ids)
        staging = {out: layout.staging_dir(self.root, spec.name, out, execution_id) for out in spec.outputs}
        ctx = StepContext(
            step_name=spec.name,
            run_id=self.run_id,
            pipeline_root=self.root,
            inputs=inputs,
            outputs=dict(staging),
            params=spec.params,
            beam_args=tuple(self.pipeline.beam_args),
            log=logging.getLogger(f"pipeline.{spec.name}"),
        )
        try:
            outcome = _load_executor(spec)(ctx)
            if not isinstance(outcome, StepOutcome):
                raise TypeError(f"executor of {spec.name} returned {type(outcome).__name__}, not StepOutcome")
            # Another run may hold the pipeline by now: commit nothing without the lock.
            self.lock.check()
            committed = self._commit(spec, execution_id, staging, outcome, key)
        except BaseException as e:
            for path in staging.values():
                shutil.rmtree(path, ignore_errors=True)
            message = _one_line(e)
            # Without the store (or its lock) the execution stays RUNNING, as after a crash: the
            # next run marks it abandoned and removes what it committed but never recorded.
            if not isinstance(e, StoreUnavailableError):
                self.store.fail_execution(execution_id, message)
            if not isinstance(e, Exception):
                raise  # KeyboardInterrupt / SystemExit: recorded, then let it end the process
            self.exit_code = e.exit_code if isinstance(e, PipelineError) else EXIT_FAILURE
            self.stop_message = f"{spec.name} failed: {message}"
            log.error("%s: failed after %.1fs: %s", position, time.monotonic() - started, message)
            if not isinstance(e, PipelineError):
                log.debug("traceback:\n%s", traceback.format_exc())
            return StepReport(
                FAILED_STATE,
                execution_id,
                seconds=time.monotonic() - started,
                error=message,
                reason=getattr(e, "__traceback_hint__", None),
                peak_memory_mib=resources.peak_rss_mb(),
            )
        self._publish(spec, committed)
        seconds = time.monotonic() - started
        peak = resources.peak_rss_mb()
        log.info(
            "%s: ran in %.1fs%s",
            position,
            seconds,
            f" (peak memory {peak:.0f} MiB)" if peak is not None else "",
        )
        self._apply_stop(outcome.stop_run, outcome.stop_exit_code)
        return StepReport(
            RAN,
            execution_id,
            {k: a.uri for k, a in committed.items()},
            properties=outcome.execution_properties,
            seconds=seconds,
            peak_memory_mib=peak,
        )

    def _commit(
        self, spec: StepSpec, execution_id: int, staging: dict, outcome: StepOutcome, key: str
    ) -> dict:
        """Renames staging dirs to their final names and records them LIVE in one transaction."""
        records = {}
        for out, path in staging.items():
            final = layout.final_dir(self.root, spec.name, out, execution_id)
            properties = dict(outcome.output_properties.get(out, {}))
            properties[layout.CONTENT_DIGEST] = directory_digest(path)
            layout.commit(path, final)
            records[out] = (spec.outputs[out], final, properties)
        stored_outcome = {
            "cache_key": key,
            "properties": outcome.execution_properties,
            "stop_run": outcome.stop_run,
            "stop_exit_code": outcome.stop_exit_code,
        }
        ids = self.store.complete_execution(execution_id, records, stored_outcome, self.contexts)
        return {
            out: Artifact(
                uri=records[out][1], type_name=records[out][0], properties=records[out][2], id=ids[out]
            )
            for out in records
        }

    def _apply_stop(self, message: str | None, exit_code: int) -> None:
        if message:
            self.stop_message = message
            self.exit_code = exit_code
            log.error("run stopped: %s", message)

    # ---- the walk -------------------------------------------------------------------------
    def execute(self) -> None:
        for index, spec in enumerate(self.pipeline.steps):
            if self.stop_message is not None:
                self.reports[spec.name] = StepReport(
                    SKIPPED, reason="an earlier step failed or stopped the run"
                )
            elif index > self.last:
                self.reports[spec.name] = StepReport(SKIPPED, reason="after --to")
            else:
                try:
                    self.reports[spec.name] = self._run_step(spec, index)
                except PipelineError as e:  # input resolution or --from problems
                    self.exit_code, self.stop_message = e.exit_code, f"{spec.name}: {_one_line(e)}"
                    log.error("%s: %s", spec.name, _one_line(e))
                    self.reports[spec.name] = StepReport(FAILED_STATE, error=_one_line(e))


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def run_pipeline(
    pipeline: Pipeline,
    from_step: str | None = None,
    to_step: str | None = None,
    summary_json: str | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Runs `pipeline` under the pipeline root's lock and writes the run summary.

    Returns a RunResult whose `exit_code` follows pipeline.core.errors (0 ok, 1 failure, 2 usage,
    3 data gate, 4 lock timeout). Raises ConfigError for bad --from/--to before taking the lock,
    LockTimeoutError when another run holds the lock too long, StoreSettingsError when a MySQL
    store (`pipeline.store`) cannot be reached or opened, and StoreDamagedError when a SQLite
    store fails its integrity check: then nothing in the root is touched but the lock. A MySQL
    store lost mid-run fails the step it was in (exit 1; the next run recovers as after a crash).
    After the summary is written, a SQLite store is backed up beside it (`keep_backup`).
    """
    first, last = _step_range(pipeline, from_step, to_step)
    root = pipeline.root
    os.makedirs(root, exist_ok=True)
    run_id = run_id or new_run_id()
    started = datetime.now(UTC)
    with run_lock(root, pipeline.lock_timeout_s, pipeline.store) as lock:
        # First of all: a damaged or unreachable store stops the run before anything changes.
        store = open_store(root, pipeline.store)
        abandoned = store.abandon_running_executions()
        removed = layout.remove_stale_staging(root) + layout.remove_uncommitted(
            root, {spec.name: tuple(spec.outputs) for spec in pipeline.steps}, abandoned
        )
        if abandoned or removed:
            log.warning(
                "cleaned up after an interrupted run: %d execution(s) marked failed, "
                "%d uncommitted folder(s) removed",
                len(abandoned),
                len(removed),
            )
        run_dir = layout.run_dir(root, run_id)
        run_config = {
            "pipeline_root": root,
            "lock_timeout_s": pipeline.lock_timeout_s,
            "beam_args": list(pipeline.beam_args),
            **pipeline.run_config,
        }
        write_json_atomic(os.path.join(run_dir, layout.CONFIG_FILE), run_config)
        log.info("run %s: pipeline root %s", run_id, root)
        state = _Run(pipeline, store, run_id, first, last, lock)
        state.execute()
        summary = {
            "run_id": run_id,
            "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "exit_code": state.exit_code,
            "status": "completed" if state.exit_code == EXIT_OK else "failed",
            "message": state.stop_message,
            "pipeline_root": root,
            **pipeline.summary_fields,
            "steps": {name: report.to_json() for name, report in state.reports.items()},
        }
        for spec in pipeline.steps:
            if spec.summary is not None:
                summary.update(spec.summary(state.reports[spec.name]))
        summary_path = os.path.join(run_dir, layout.SUMMARY_FILE)
        write_json_atomic(summary_path, summary)
        if store.path is not None:  # a MySQL store is backed up by its server's tools
            keep_backup(store.path)
        extra = _after_run(pipeline, summary, run_dir)
        if extra:
            summary["report"] = extra
            write_json_atomic(summary_path, summary)
        if summary_json:
            write_json_atomic(summary_json, summary)
    return RunResult(state.exit_code, summary, summary_path)


def _after_run(pipeline: Pipeline, summary: dict, run_dir: str) -> str | None:
    """Calls the pipeline's `after_run` hook; returns the path it wrote, or None.

    The hook only describes the run (the report): its failure is one warning and never changes
    the run's outcome.
    """
    if pipeline.after_run is None:
        return None
    try:
        return pipeline.after_run(summary, run_dir)
    except Exception as e:  # noqa: BLE001 - see the docstring
        log.warning("run report not written: %s", _one_line(e))
        log.debug("traceback:\n%s", traceback.format_exc())
        return None
