"""One task of a TensorFlow training cluster:

    TF_CONFIG='{"cluster": {...}, "task": {"type": "worker", "index": 0}}' \\
        python -m components.trainer.cluster_task --spec <model_dir>/cluster/spec.json

`TF_CONFIG` says which task this is; the spec file (written by `cluster.train_on_cluster`, or
copied to every machine of a multi-machine cluster) holds what every task trains:
`params` (the `TrainerParams` as `to_dict` writes it), `examples_uri`, `model_dir` (shared by all tasks),
`warm_start_checkpoint` (or null), `module_digest` (the sha256 `params["module_file"]` must
have, or null) and `cluster_dir` (where result files go).

Every task builds its Estimator and specs through `executor.build_training`, the function
the one-process trainer uses, and runs `tf.estimator.train_and_evaluate`:
- chief: trains, and after every checkpoint evaluates and runs the exporters in this process
  (`EvaluateAfterSave`), as one process does; logs the cluster's global step and measures the
  cluster's throughput (`ClusterProgressHook`); writes `result-chief-0.json` holding its
  `TrainingResult`;
- worker: trains; writes `result-worker-<i>.json` with its own throughput;
- ps: serves the variables until it is ended (TensorFlow's ps never returns).
A pipeline error (NaN loss, bad records) is written as {"error": {"type", "message"}} into the
task's result file and logged; the task exits 1. Lines for the step log start with
`cluster.LOG_PREFIX`. The process ends with `os._exit`, so gRPC threads left by the in-process
server cannot keep it alive after its work (tensorflow/tensorflow#21305).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback

from components.trainer import cluster
from components.trainer.params import TrainerParams
from pipeline.core.atomic_files import write_text_atomic
from pipeline.core.errors import PipelineError


def _logger() -> logging.Logger:
    log = logging.getLogger("pipeline.trainer.cluster_task")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(cluster.LOG_PREFIX + "%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def _task() -> tuple:
    """(type, index) of this task from TF_CONFIG; SystemExit with one line when unusable."""
    try:
        task = json.loads(os.environ["TF_CONFIG"])["task"]
        return str(task["type"]), int(task["index"])
    except (KeyError, ValueError, TypeError) as e:
        raise SystemExit(
            f"error: TF_CONFIG must name this task as "
            f'{{"task": {{"type": ..., "index": ...}}}} ({type(e).__name__}: {e})'
        ) from None


def _chief_classes():
    """(ClusterProgressHook, EvaluateAfterSave), defined once TensorFlow is imported."""
    import tensorflow as tf  # noqa: PLC0415 - after main's tie_to_launcher(), not during TF's import

    class ClusterProgressHook(tf.compat.v1.train.SessionRunHook):
        """Chief only: logs the cluster's global step every `every_steps` steps and measures the
        cluster's throughput, global steps (of all tasks) x batch size per second from the end of
        the chief's first step to its last, leaving out the chief's evaluations (their time and
        the steps made meanwhile), as one process leaves out its evaluations."""

        def __init__(self, batch_size: int, max_steps: int, every_steps: int, log: logging.Logger):
            self._batch_size, self._max_steps = batch_size, max_steps
            self._every_steps, self._log = max(1, every_steps), log
            self._global_step = None
            self._first = self._last = None  # (time, global step)
            self._next_log = 0
            self._paused_seconds, self._paused_steps = 0.0, 0
            self._pending = (0.0, 0)  # an evaluation not yet followed by a chief step

        def begin(self):
            self._global_step = tf.compat.v1.train.get_global_step()

        def before_run(self, run_context):
            del run_context
            return tf.compat.v1.train.SessionRunArgs(self._global_step)

        def after_run(self, run_context, run_values):
            del run_context
            now, step = time.perf_counter(), int(run_values.results)
            # An evaluation counts as a pause only once training went on after it: the final
            # one happens after the last step and must not shorten the measured time.
            self._paused_seconds += self._pending[0]
            self._paused_steps += self._pending[1]
            self._pending = (0.0, 0)
            if self._first is None:
                self._first = (now, step)
                self._next_log = step - step % self._every_steps + self._every_steps
            self._last = (now, step)
            if step >= self._next_log:
                self._next_log = step - step % self._every_steps + self._every_steps
                rate = self.examples_per_sec
                self._log.info(
                    "cluster step %d/%d%s",
                    step,
                    self._max_steps,
                    f" ({rate:.0f} examples/s, all tasks)" if rate else "",
                )

        def pause(self, seconds: float, steps: int) -> None:
            """Leaves an evaluation's `seconds` and the `steps` made during it out of the rate."""
            if self._first is not None:
                self._pending = (self._pending[0] + seconds, self._pending[1] + steps)

        @property
        def examples_per_sec(self):
            """Cluster examples per second so far, or None before two chief steps."""
            if self._first is None:
                return None
            seconds = self._last[0] - self._first[0] - self._paused_seconds
            steps = self._last[1] - self._first[1] - self._paused_steps
            return steps * self._batch_size / seconds if seconds > 0 and steps > 0 else None

    class EvaluateAfterSave(tf.estimator.CheckpointSaverListener):
        """Evaluates every checkpoint the chief saves after its first (the untrained start-up
        one) and hands the result to the eval spec's exporters, as `train_and_evaluate` does in
        one process; the final checkpoint too. `training` is set once it is built."""

        def __init__(self, progress: ClusterProgressHook):
            self.training = None
            self._progress = progress
            self._global_step = None
            self._first = True
            self._last_step = None

        def begin(self):
            self._global_step = tf.compat.v1.train.get_global_step()

        def after_save(self, session, global_step_value):
            if self._first:
                self._first = False
                return
            self._evaluate(session, global_step_value)

        def end(self, session, global_step_value):
            if global_step_value != self._last_step:
                self._evaluate(session, global_step_value)

        def _evaluate(self, session, global_step_value):
            self._last_step = global_step_value
            started = time.perf_counter()
            estimator, spec = self.training.estimator, self.training.eval_spec
            checkpoint = tf.train.latest_checkpoint(estimator.model_dir)
            result = estimator.evaluate(
                spec.input_fn, steps=spec.steps, name=spec.name, checkpoint_path=checkpoint, hooks=spec.hooks
            )
            final = result[tf.compat.v1.GraphKeys.GLOBAL_STEP] >= self.training.train_spec.max_steps
            for exporter in spec.exporters:
                exporter.export(
                    estimator,
                    os.path.join(estimator.model_dir, "export", exporter.name),
                    checkpoint,
                    result,
                    final,
                )
            self._progress.pause(
                time.perf_counter() - started, int(session.run(self._global_step)) - int(global_step_value)
            )

    return ClusterProgressHook, EvaluateAfterSave


def run_task(spec: dict, task_type: str, log: logging.Logger) -> dict:
    """Runs this task's part of `train_and_evaluate` (TF_CONFIG names the task; `task_type`
    is its type); returns what it reports (see the module docstring), except a ps, which never
    returns. Raises PipelineError for failures the pipeline understands."""
    # TensorFlow (seconds to import) loads only once main() has tied this task to its launcher,
    # so a launcher that dies meanwhile takes the task with it.
    import tensorflow as tf  # noqa: PLC0415

    from components.trainer import executor, user_module  # noqa: PLC0415 - imports TensorFlow

    # Checked again as it is rebuilt: a spec edited by hand fails here with the key it breaks.
    cfg = TrainerParams.from_dict(spec["params"])
    # The code the run fingerprinted, or InputDataError; the Estimator then gets this very load.
    user_module.load_module(cfg.module_file, spec.get("module_digest"))
    warm_start = (
        tf.estimator.WarmStartSettings(ckpt_to_initialize_from=spec["warm_start_checkpoint"])
        if spec.get("warm_start_checkpoint")
        else None
    )
    if task_type != "chief":
        training = executor.build_training(cfg, spec["examples_uri"], spec["model_dir"], warm_start, log)
        training.train_and_evaluate(spec["examples_uri"])
        return {
            "examples_per_sec": training.progress.examples_per_sec,
            "timed_steps": training.progress.timed_steps,
        }
    progress_class, listener_class = _chief_classes()
    progress = progress_class(
        cfg.batch_size, cfg.train_steps, max(1, cfg.eval_every_steps // executor.LOGS_PER_EVAL), log
    )
    listener = listener_class(progress)
    training = executor.build_training(
        cfg, spec["examples_uri"], spec["model_dir"], warm_start, log, saving_listeners=(listener,)
    )
    listener.training = training
    train_spec = training.train_spec
    training.train_spec = tf.estimator.TrainSpec(
        train_spec.input_fn,
        train_spec.max_steps,
        tuple(train_spec.hooks) + (progress,),
        train_spec.saving_listeners,
    )
    result = training.result(training.train_and_evaluate(spec["examples_uri"]))
    result.examples_per_sec = progress.examples_per_sec
    return {"result": result.to_json()}


def main(argv=None) -> int:
    """Entry point; returns the exit status (0 done, 1 failed)."""
    cluster.tie_to_launcher()
    parser = argparse.ArgumentParser(prog="python -m components.trainer.cluster_task")
    parser.add_argument("--spec", required=True, help="the spec.json every task of the cluster reads")
    args = parser.parse_args(argv)
    log = _logger()
    task_type, index = _task()
    name = f"{task_type}:{index}"
    with open(args.spec) as f:
        spec = json.load(f)
    out = cluster.result_path(spec["cluster_dir"], name)
    log.info("cluster task %s (pid %d) starting", name, os.getpid())
    try:
        report = run_task(spec, task_type, log)
    except PipelineError as e:
        write_text_atomic(out, json.dumps({"error": {"type": type(e).__name__, "message": str(e)}}) + "\n")
        log.error("%s: %s", type(e).__name__, e)
        return 1
    except Exception as e:  # noqa: BLE001 - reported as the task's last line, traceback above it
        traceback.print_exc()
        log.error("%s: %s", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return 1
    write_text_atomic(out, json.dumps(report, indent=2) + "\n")
    log.info("cluster task %s done", name)
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
