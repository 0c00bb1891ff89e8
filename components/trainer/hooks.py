"""Session-run hooks for the training loop.

- `NonFiniteLossHook`: raises `TrainingError` at the first step whose loss is NaN or infinite,
  ending training there (the step's outputs are then discarded by the runner).
- `ProgressHook`: logs step, loss, batch accuracy and the time left every few steps, and
  measures training throughput (examples per second over training steps only, evaluation and
  checkpointing excluded).
"""

from __future__ import annotations

import logging
import math
import time

import tensorflow as tf

from components.trainer.estimator_contract import MODEL_LOSS_COLLECTION
from pipeline.core.errors import TrainingError


def model_loss() -> tf.Tensor | None:
    """The default graph's training loss, or None: the loss the trainer's contract recorded
    (`MODEL_LOSS_COLLECTION`, the spec's loss, whatever a module registered elsewhere), else the
    single tensor in the LOSSES collection, where `tf.compat.v1.losses` registers it (the
    Estimator may register it twice)."""
    for collection in (MODEL_LOSS_COLLECTION, tf.compat.v1.GraphKeys.LOSSES):
        losses = list(dict.fromkeys(tf.compat.v1.get_collection(collection)))
        if losses:
            return losses[0] if len(losses) == 1 else None
    return None


def summary_tensor(tag: str) -> tf.Tensor | None:
    """The value tensor of the default graph's scalar summary named `tag` (as the model_fn's
    `tf.compat.v1.summary.scalar(tag, value)` registers it), or None when there is none."""
    for summary in tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.SUMMARIES):
        op = summary.op
        if op.type == "ScalarSummary" and op.name.rsplit("/", 1)[-1] == tag:
            return op.inputs[1]
    return None


def global_step_value(session) -> int:
    """The global step's value in `session` when it starts (0 when the graph has none)."""
    global_step = tf.compat.v1.train.get_global_step()
    return int(session.run(global_step)) if global_step is not None else 0


def format_duration(seconds: float) -> str:
    """12 -> "12s", 75 -> "1m15s", 3725 -> "1h02m"."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class NonFiniteLossHook(tf.compat.v1.train.SessionRunHook):
    """Stops training with `TrainingError` when the loss of a step is NaN or +-Inf.

    Unlike `tf.compat.v1.train.NanTensorHook`, it also catches infinite losses, names the
    training step (counted from the global step at session start, 1-based) and raises a
    pipeline error with a one-line message. Pass it in the Estimator's train hooks: those run
    before the Estimator's own NanTensorHook. `loss`: the tensor to watch; None: `model_loss()`.
    Raises TrainingError at `begin` when no loss tensor can be found.
    """

    def __init__(self, loss: tf.Tensor | None = None):
        self._given_loss = loss
        self._loss = None
        self._step = 0

    def begin(self):
        self._loss = self._given_loss if self._given_loss is not None else model_loss()
        if self._loss is None:
            raise TrainingError(
                "non-finite loss guard: the model registered no single loss in the LOSSES collection"
            )

    def after_create_session(self, session, coord):
        del coord
        self._step = global_step_value(session)

    def before_run(self, run_context):
        del run_context
        return tf.compat.v1.train.SessionRunArgs(self._loss)

    def after_run(self, run_context, run_values):
        del run_context
        self._step += 1
        loss = float(run_values.results)
        if not math.isfinite(loss):
            kind = "NaN" if math.isnan(loss) else "Inf"
            raise TrainingError(
                f"{kind} loss at step {self._step} of training: the model diverged; "
                "lower trainer.learning_rate or check the training data"
            )


class ProgressHook(tf.compat.v1.train.SessionRunHook):
    """Logs progress every `every_steps` steps and measures training examples per second.

    The loss logged is `model_loss()`, the accuracy that of the batch just trained on (the
    model_fn's `train_batch_accuracy` summary); either is left out when the graph has none.
    The time left is the wall time per step so far (evaluations and checkpoints included, as
    they recur) times the steps still to go; it is left out until a step after the first has
    been seen.

    Throughput counts only the time of training steps: from this hook's `before_run` to its
    `after_run`, skipping the first `warmup_steps` (graph and input-pipeline start-up) and every
    `checkpoint_every_steps`-th step, whose `after_run` of the checkpoint saver (which runs
    before this hook's) also saves and evaluates. `examples_per_sec` is None until at least
    one step has been timed.
    """

    ACCURACY_SUMMARY = "train_batch_accuracy"

    def __init__(
        self,
        batch_size: int,
        max_steps: int,
        every_steps: int,
        log: logging.Logger,
        checkpoint_every_steps: int = 0,
        warmup_steps: int = 1,
    ):
        self._batch_size = batch_size
        self._max_steps = max_steps
        self._every_steps = max(1, every_steps)
        self._log = log
        self._warmup_steps = warmup_steps
        self._checkpoint_every_steps = checkpoint_every_steps
        self._fetches: dict = {}
        self._step = 0
        self._started = 0.0
        self._seen_steps = 0
        self._clock_start: tuple | None = None  # (time, step) after the first step
        self.timed_steps = 0
        self.timed_seconds = 0.0

    @property
    def examples_per_sec(self):
        """Training examples per second over timed steps, or None before any was timed."""
        if self.timed_steps == 0 or self.timed_seconds <= 0:
            return None
        return self.timed_steps * self._batch_size / self.timed_seconds

    def seconds_left(self) -> float | None:
        """Estimated wall seconds until `max_steps`, or None before two steps were seen."""
        if self._clock_start is None:
            return None
        started, first_step = self._clock_start
        done = self._step - first_step
        if done <= 0:
            return None
        return (time.perf_counter() - started) / done * max(0, self._max_steps - self._step)

    def begin(self):
        fetches = {"loss": model_loss(), "accuracy": summary_tensor(self.ACCURACY_SUMMARY)}
        self._fetches = {k: v for k, v in fetches.items() if v is not None}

    def after_create_session(self, session, coord):
        del coord
        self._step = global_step_value(session)

    def before_run(self, run_context):
        del run_context
        self._started = time.perf_counter()
        return tf.compat.v1.train.SessionRunArgs(self._fetches) if self._fetches else None

    def after_run(self, run_context, run_values):
        del run_context
        elapsed = time.perf_counter() - self._started
        # Counted here rather than fetched: a global step read in the same run as the train
        # op may see the value before or after its increment.
        self._step += 1
        self._seen_steps += 1
        checkpointed = self._checkpoint_every_steps > 0 and self._step % self._checkpoint_every_steps == 0
        if self._seen_steps > self._warmup_steps and not checkpointed:
            self.timed_steps += 1
            self.timed_seconds += elapsed
        if self._clock_start is None:
            # From the end of the first step: graph and input start-up do not recur.
            self._clock_start = (time.perf_counter(), self._step)
        if self._step % self._every_steps == 0 or self._step >= self._max_steps:
            results = run_values.results or {}
            values = [
                f"{name} {float(results[name]):.4f}"
                for name in ("loss", "accuracy")
                if results.get(name) is not None
            ]
            rate, left = self.examples_per_sec, self.seconds_left()
            details = ([f"{rate:.0f} examples/s"] if rate else []) + (
                [f"~{format_duration(left)} left"]
                if left is not None and self._step < self._max_steps
                else []
            )
            self._log.info(
                "train step %d/%d%s%s",
                self._step,
                self._max_steps,
                ": " + ", ".join(values) if values else "",
                f" ({', '.join(details)})" if details else "",
            )
