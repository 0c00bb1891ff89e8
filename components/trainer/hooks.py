"""Session-run hooks for the training loop.

- `NonFiniteLossHook`: raises `TrainingError` at the first step whose loss is NaN or infinite,
  before any later checkpoint or export can pick up broken weights.
- `ProgressHook`: logs step and loss every few steps and measures training throughput
  (examples per second over training steps only, evaluation and checkpointing excluded).
"""

from __future__ import annotations

import logging
import math
import time

import tensorflow as tf

from pipeline.errors import TrainingError


class NonFiniteLossHook(tf.compat.v1.train.SessionRunHook):
    """Stops training with `TrainingError` when the loss of a step is NaN or +-Inf.

    Unlike `tf.compat.v1.train.NanTensorHook`, it names the training step (counted from the
    global step at session start, 1-based) and raises a pipeline error, so the run ends with
    a one-line message and the step leaves no model behind.
    """

    def __init__(self, loss: tf.Tensor):
        self._loss = loss
        self._step = 0

    def after_create_session(self, session, coord):
        del coord
        global_step = tf.compat.v1.train.get_global_step()
        self._step = int(session.run(global_step)) if global_step is not None else 0

    def before_run(self, run_context):
        del run_context
        return tf.compat.v1.train.SessionRunArgs(self._loss)

    def after_run(self, run_context, run_values):
        del run_context
        self._step += 1
        loss = float(run_values.results)
        if not math.isfinite(loss):
            raise TrainingError(
                f"training loss is {loss} (NaN loss) at step {self._step}: the model diverged; "
                "lower trainer.learning_rate or check the training data")


class ProgressHook(tf.compat.v1.train.SessionRunHook):
    """Logs progress every `every_steps` steps and measures training examples per second.

    Throughput counts only the time spent inside training `session.run` calls, skipping the
    first `warmup_steps` (graph and input-pipeline start-up) so that the figure reflects the
    steady state. `examples_per_sec` is None until at least one step has been timed.
    """

    def __init__(self, loss: tf.Tensor, batch_size: int, max_steps: int, every_steps: int,
                 log: logging.Logger, warmup_steps: int = 1):
        self._loss = loss
        self._batch_size = batch_size
        self._max_steps = max_steps
        self._every_steps = max(1, every_steps)
        self._log = log
        self._warmup_steps = warmup_steps
        self._step = 0
        self._started = 0.0
        self._seen_steps = 0
        self.timed_steps = 0
        self.timed_seconds = 0.0

    @property
    def examples_per_sec(self):
        """Training examples per second over timed steps, or None before any was timed."""
        if self.timed_steps == 0 or self.timed_seconds <= 0:
            return None
        return self.timed_steps * self._batch_size / self.timed_seconds

    def after_create_session(self, session, coord):
        del coord
        global_step = tf.compat.v1.train.get_global_step()
        self._step = int(session.run(global_step)) if global_step is not None else 0

    def before_run(self, run_context):
        del run_context
        self._started = time.perf_counter()
        return tf.compat.v1.train.SessionRunArgs(self._loss)

    def after_run(self, run_context, run_values):
        del run_context
        elapsed = time.perf_counter() - self._started
        self._seen_steps += 1
        if self._seen_steps > self._warmup_steps:
            self.timed_steps += 1
            self.timed_seconds += elapsed
        # Counted here rather than fetched: a global step read in the same run as the train
        # op may see the value before or after its increment.
        self._step += 1
        if self._step % self._every_steps == 0 or self._step >= self._max_steps:
            rate = self.examples_per_sec
            self._log.info("train step %d/%d: loss %.4f%s", self._step, self._max_steps,
                           float(run_values.results), f" ({rate:.0f} examples/s)" if rate else "")
