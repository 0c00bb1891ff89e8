"""Launches one step of a run, in three phases like TFX's launcher, each returning a result:

1. `prepare`: resolve the step's inputs (upstream outputs of this run first, then resolvers,
   which see those), compute its cache key (code, parameters, input fingerprints, library
   versions) and look for a completed execution with that key whose outputs still verify;
2. `run`: record a RUNNING execution and call the executor into fresh staging directories;
3. `publish`: rename the staging directories to their final names and record them, with the
   execution COMPLETE, in one metadata transaction (commit-on-completion); or, on a cache hit,
   `publish_cached` records a CACHED execution linking the reused outputs.

A failure anywhere in 2-3 removes the staging directories and records the execution FAILED; so
does a stop request (`pipeline.core.interrupts`), which then goes on up as `Interrupted`. Such a
request waits while an execution is recorded, committed or failed (`interrupts.held`).
"""

from __future__ import annotations

import importlib
import logging
import shutil
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core import artifacts as layout
from pipeline.core import interrupts, resources
from pipeline.core.digest import directory_digest
from pipeline.core.errors import EXIT_FAILURE, Interrupted, PipelineError, StoreUnavailableError
from pipeline.core.fingerprint import cache_key
from pipeline.core.lock import RunLock
from pipeline.core.metadata import CACHED, COMPLETE, MetadataStore, to_step_artifact
from pipeline.core.step import Artifact, InputSpec, StepContext, StepOutcome, StepSpec
from pipeline.core.step_report import StepReport, StepResult, StepState, Stop

log = logging.getLogger("pipeline")


@dataclass(frozen=True)
class RunScope:
    """What every step of one run shares: its id, root, metadata contexts, Beam options, lock."""

    run_id: str
    root: str
    contexts: list
    beam_args: tuple
    lock: RunLock


@dataclass(frozen=True)
class CacheHit:
    """A completed execution whose outputs can be reused: its id, outputs and stored outcome."""

    execution_id: int
    outputs: Mapping[str, Artifact]
    outcome: Mapping[str, Any]


@dataclass(frozen=True)
class Prepared:
    """A step ready to launch: its resolved inputs, cache key and cache hit (None: run it)."""

    spec: StepSpec
    position: str
    inputs: Mapping[str, Artifact]
    cache_key: str
    cache_hit: CacheHit | None


@dataclass(frozen=True)
class Started:
    """A RUNNING execution and the staging directories (output key -> path) it writes into."""

    execution_id: int
    staging: Mapping[str, str]
    started: float


@dataclass(frozen=True)
class Ran:
    """An executor that returned: its outcome, how long it took and its peak memory."""

    started: Started
    outcome: StepOutcome
    seconds: float
    peak_memory_mib: float | None


def one_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def load_executor(spec: StepSpec):
    """The step's executor function (imported from its "module:function" path when needed)."""
    if callable(spec.executor):
        return spec.executor
    module_name, _, function = spec.executor.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _fingerprint(artifact: Artifact) -> str:
    return str(artifact.properties.get(layout.CONTENT_DIGEST) or f"id:{artifact.id}")


def _uris(outputs: Mapping[str, Artifact]) -> dict:
    return {key: artifact.uri for key, artifact in outputs.items()}


def recorded_stop(outcome: Mapping) -> Stop | None:
    """The stop an execution's recorded `outcome` asked for (a data gate's), or None: a step
    reused from an earlier execution stops the run as that execution did."""
    message = outcome.get("stop_run")
    if not message:
        return None
    log.error("run stopped: %s", message)
    return Stop(message, outcome.get("stop_exit_code", EXIT_FAILURE))


class StepLauncher:
    """Prepares, runs and publishes the steps of one run against its metadata store."""

    def __init__(self, store: MetadataStore, scope: RunScope):
        self.store = store
        self.scope = scope

    # ---- prepare --------------------------------------------------------------------------
    def resolve_inputs(self, spec: StepSpec, produced: Mapping[str, Artifact]) -> dict:
        """Input key -> Artifact: producer inputs ("step.output" in `produced`) first, then
        resolvers, which see those. Raises PipelineError for a required input with none."""
        inputs: dict = {}
        for by_producer in (True, False):
            for key, inp in spec.inputs.items():
                if (inp.producer is not None) != by_producer:
                    continue
                artifact = self._resolve(inp, produced, inputs)
                if artifact is None:
                    if inp.optional:
                        continue
                    raise PipelineError(f"step {spec.name}: required input {key!r} has no artifact")
                inputs[key] = artifact
        return {key: inputs[key] for key in spec.inputs if key in inputs}

    def _resolve(self, inp: InputSpec, produced: Mapping[str, Artifact], resolved: dict) -> Artifact | None:
        if inp.producer is not None:
            return produced.get(inp.producer)
        assert inp.resolver is not None, "check_wiring: an input has a producer or a resolver"
        return inp.resolver(self.store, dict(resolved))

    def prepare(self, spec: StepSpec, position: str, produced: Mapping[str, Artifact]) -> Prepared:
        """Resolves inputs, computes the cache key and looks for a cache hit (cacheable steps)."""
        inputs = self.resolve_inputs(spec, produced)
        fingerprints = {key: _fingerprint(artifact) for key, artifact in inputs.items()}
        key = cache_key(spec.name, spec.params, spec.code_modules, fingerprints)
        hit = self.find_reusable(spec, key) if spec.cacheable else None
        return Prepared(spec, position, inputs, key, hit)

    def verified_outputs(self, spec: StepSpec, execution_id: int) -> dict | None:
        """Output key -> Artifact of a past execution, if every output exists and verifies."""
        outputs = self.store.outputs_of(execution_id)
        if set(outputs) != set(spec.outputs):
            return None
        result = {}
        for key, artifact_id in outputs.items():
            recorded = self.store.artifact(artifact_id)
            expected = recorded.properties.get(layout.CONTENT_DIGEST)
            try:
                ok = bool(expected) and directory_digest(recorded.uri) == expected
            except (OSError, ValueError):
                ok = False
            if not ok:
                log.warning("%s: output %s at %s is missing or altered", spec.name, key, recorded.uri)
                return None
            result[key] = to_step_artifact(recorded)
        return result

    def find_reusable(self, spec: StepSpec, key: str | None) -> CacheHit | None:
        """The newest completed execution of `spec` (with cache key `key`; any when None)
        whose outputs still verify, or None."""
        for execution in self.store.executions_of(spec.name):
            if execution.last_known_state not in (COMPLETE, CACHED):
                continue
            outcome = self.store.execution_outcome(execution)
            if key is not None and outcome.get("cache_key") != key:
                continue
            outputs = self.verified_outputs(spec, execution.id)
            if outputs is not None:
                return CacheHit(execution.id, outputs, outcome)
        return None

    # ---- launch ---------------------------------------------------------------------------
    def launch(self, spec: StepSpec, position: str, produced: Mapping[str, Artifact]) -> StepResult:
        """Prepares the step, then reuses its cache hit or runs and publishes it.

        A failure of the executor or of the commit is a FAILED result (exit 1, or the
        PipelineError's status); PipelineError from `prepare` propagates. KeyboardInterrupt,
        SystemExit and Interrupted are recorded, then re-raised (Interrupted located here: this
        step committed nothing).
        """
        prepared = self.prepare(spec, position, produced)
        if prepared.cache_hit is not None:
            return self.publish_cached(prepared)
        log.info("%s: running", position)
        started = self.start(prepared)
        try:
            interrupts.checkpoint()  # a stop request that came while the execution was recorded
            ran = self.run(prepared, started)
            # Another run may hold the pipeline by now: commit nothing without the lock.
            self.scope.lock.check()
            return self.publish(prepared, ran)
        except BaseException as error:
            if isinstance(error, Interrupted):
                error.locate(
                    f"during {spec.name} (run {self.scope.run_id})",
                    f"{spec.name} committed nothing, the next run resumes",
                )
            return self.fail(prepared, started, error)

    # ---- run ------------------------------------------------------------------------------
    def start(self, prepared: Prepared) -> Started:
        """Records a RUNNING execution and creates its empty staging directories."""
        spec = prepared.spec
        resources.reset_peak_rss()
        input_ids = {key: a.id for key, a in prepared.inputs.items() if a.id}
        # Not interrupted between the record and `Started`, which `fail` needs to clean up.
        with interrupts.held():
            execution_id = self.store.start_execution(
                spec.name, self.scope.run_id, prepared.cache_key, self.scope.contexts, input_ids
            )
            staging = {
                out: layout.staging_dir(self.scope.root, spec.name, out, execution_id) for out in spec.outputs
            }
            return Started(execution_id, staging, time.monotonic())

    def run(self, prepared: Prepared, started: Started) -> Ran:
        """Calls the executor; raises what it raises, TypeError when it returns no StepOutcome."""
        spec = prepared.spec
        ctx = StepContext(
            step_name=spec.name,
            run_id=self.scope.run_id,
            pipeline_root=self.scope.root,
            inputs=dict(prepared.inputs),
            outputs=dict(started.staging),
            params=spec.params,
            beam_args=tuple(self.scope.beam_args),
            log=logging.getLogger(f"pipeline.{spec.name}"),
        )
        outcome = load_executor(spec)(ctx)
        if not isinstance(outcome, StepOutcome):
            raise TypeError(f"executor of {spec.name} returned {type(outcome).__name__}, not StepOutcome")
        return Ran(started, outcome, time.monotonic() - started.started, resources.peak_rss_mb())

    # ---- publish --------------------------------------------------------------------------
    def publish(self, prepared: Prepared, ran: Ran) -> StepResult:
        """Commits the staging directories and records them LIVE with the execution COMPLETE."""
        spec, outcome = prepared.spec, ran.outcome
        execution_id = ran.started.execution_id
        records = {}
        for out, path in ran.started.staging.items():
            properties = dict(outcome.output_properties.get(out, {}))
            properties[layout.CONTENT_DIGEST] = directory_digest(path)
            records[out] = (
                spec.outputs[out],
                layout.final_dir(self.scope.root, spec.name, out, execution_id),
                properties,
            )
        stored_outcome = {
            "cache_key": prepared.cache_key,
            "properties": outcome.execution_properties,
            "stop_run": outcome.stop_run,
            "stop_exit_code": outcome.stop_exit_code,
        }
        # The renames and their record go together: a stop request waits until both are done.
        with interrupts.held():
            for out, path in ran.started.staging.items():
                layout.commit(path, records[out][1])
            ids = self.store.complete_execution(execution_id, records, stored_outcome, self.scope.contexts)
        outputs = {
            out: Artifact(uri=final, type_name=type_name, properties=properties, id=ids[out])
            for out, (type_name, final, properties) in records.items()
        }
        peak = ran.peak_memory_mib
        log.info(
            "%s: ran in %.1fs%s",
            prepared.position,
            ran.seconds,
            f" (peak memory {peak:.0f} MiB)" if peak is not None else "",
        )
        report = StepReport(
            StepState.RAN,
            execution_id,
            _uris(outputs),
            properties=outcome.execution_properties,
            seconds=ran.seconds,
            peak_memory_mib=peak,
            inputs=prepared.inputs,
        )
        stop = recorded_stop({"stop_run": outcome.stop_run, "stop_exit_code": outcome.stop_exit_code})
        return StepResult(report, outputs, stop)

    def publish_cached(self, prepared: Prepared) -> StepResult:
        """Records a CACHED execution of this run linking the cache hit's outputs."""
        hit = prepared.cache_hit
        assert hit is not None, "publish_cached needs a cache hit"
        execution_id = self.store.record_cached(
            prepared.spec.name,
            self.scope.run_id,
            prepared.cache_key,
            self.scope.contexts,
            {key: a.id for key, a in prepared.inputs.items() if a.id},
            {key: a.id for key, a in hit.outputs.items()},
            dict(hit.outcome),
        )
        log.info("%s: cached (reusing execution %d)", prepared.position, hit.execution_id)
        report = StepReport(
            StepState.CACHED,
            execution_id,
            _uris(hit.outputs),
            properties=hit.outcome.get("properties", {}),
            inputs=prepared.inputs,
        )
        return StepResult(report, hit.outputs, recorded_stop(hit.outcome))

    def fail(self, prepared: Prepared, started: Started, error: BaseException) -> StepResult:
        """Removes the staging directories and records the execution FAILED; returns the
        failed result, or re-raises KeyboardInterrupt / SystemExit / Interrupted once recorded.
        A stop request waits until this is done."""
        message = one_line(error)
        with interrupts.held():
            for out, path in started.staging.items():
                shutil.rmtree(path, ignore_errors=True)
                # A failure between the commit renames and their record (a second output's
                # rename, the store's write) leaves renamed folders nothing records: remove them.
                final = layout.final_dir(self.scope.root, prepared.spec.name, out, started.execution_id)
                shutil.rmtree(final, ignore_errors=True)
            # Without the store (or its lock) the execution stays RUNNING, as after a crash: the
            # next run marks it abandoned and removes what it committed but never recorded.
            if not isinstance(error, StoreUnavailableError):
                try:
                    self.store.fail_execution(started.execution_id, message)
                except Exception as record_error:  # noqa: BLE001 - the step's own error is the one to report
                    log.warning(
                        "%s: could not record the failure (%s); the next run cleans up after it",
                        prepared.position,
                        one_line(record_error),
                    )
        if not isinstance(error, Exception):
            raise error
        seconds = time.monotonic() - started.started
        log.error("%s: failed after %.1fs: %s", prepared.position, seconds, message)
        if not isinstance(error, PipelineError):
            log.debug("traceback:\n%s", traceback.format_exc())
        report = StepReport(
            StepState.FAILED,
            started.execution_id,
            seconds=seconds,
            error=message,
            reason=getattr(error, "__traceback_hint__", None),
            peak_memory_mib=resources.peak_rss_mb(),
            inputs=prepared.inputs,
        )
        exit_code = error.exit_code if isinstance(error, PipelineError) else EXIT_FAILURE
        return StepResult(report, {}, Stop(f"{prepared.spec.name} failed: {message}", exit_code))
