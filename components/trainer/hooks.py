"""Session-run hooks for the training loop.

- `NonFiniteLossHook`: raises `TrainingError` at the first step whose loss is NaN or infinite,
  ending training there (the step's outputs are then discarded by the runner).
- `ProgressHook`: logs step and loss every few steps and measures training throughput
  (examples per second over training steps only, evaluation and checkpointing excluded).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Optional

import tensorflow as tf

from pipeline.errors import TrainingError


def model_loss() -> Optional[tf.Tensor]:
    """The default graph's training loss: the single tensor in the LOSSES collection, where
    `tf.compat.v1.losses` registers it (the Estimator may register it twice), or None."""
    losses = list(dict.fromkeys(tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES)))
    return losses[0] if len(losses) == 1 else None


class NonFiniteLossHook(tf.compat.v1.train.SessionRunHook):
    """Stops training with `TrainingError` when the loss of a step is NaN or +-Inf.

    Unlike `tf.compat.v1.train.NanTensorHook`, it also catches infinite losses, names the
    training step (counted from the global step at session start, 1-based) and raises a
    pipeline error with a one-line message. Pass it in the Estimator's train hooks: those run
    before the Estimator's own NanTensorHook. `loss`: the tensor to watch; None: `model_loss()`.
    Raises TrainingError at `begin` when no loss tensor can be found.
    """

    def __init__(self, loss: Optional[tf.Tensor] = None):
        self._given_loss = loss
        self._loss = None
        self._step = 0

    def begin(self):
        self._loss = self._given_loss if self._given_loss is not None else model_loss()
        if self._loss is None:
            raise TrainingError("non-finite loss guard: the model registered no single loss "
                                "in the LOSSES collection")

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
            kind = "NaN" if math.isnan(loss) else "Inf"
            raise TrainingError(
                f"{kind} loss at step {self._step} of training: the model diverged; "
                "lower trainer.learning_rate or check the training data")


class ProgressHook(tf.compat.v1.train.SessionRunHook):
    """Logs progress every `every_steps` steps and measures training examples per second.

    The loss logged is `model_loss()` (not logged when there is none).

    Throughput counts only the time of training steps: from this hook's `before_run` to its
    `after_run`, skipping the first `warmup_steps` (graph and input-pipeline start-up) and every
    `checkpoint_every_steps`-th step, whose `after_run` of the checkpoint saver (which runs
    before this hook's) also saves and evaluates. `examples_per_sec` is None until at least
    one step has been timed.
    """

    def __init__(self, batch_size: int, max_steps: int, every_steps: int, log: logging.Logger,
                 checkpoint_every_steps: int = 0, warmup_steps: int = 1):
        self._batch_size = batch_size
        self._max_steps = max_steps
        self._every_steps = max(1, every_steps)
        self._log = log
        self._warmup_steps = warmup_steps
        self._checkpoint_every_steps = checkpoint_every_steps
        self._loss = None
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

    def begin(self):
        self._loss = model_loss()

    def after_create_session(self, session, coord):
        del coord
        global_step = tf.compat.v1.train.get_global_step()
        self._step = int(session.run(global_step)) if global_step is not None else 0

    def before_run(self, run_context):
        del run_context
        self._started = time.perf_counter()
        return tf.compat.v1.train.SessionRunArgs(self._loss) if self._loss is not None else None

    def after_run(self, run_context, run_values):
        del run_context
        elapsed = time.perf_counter() - self._started
        # Counted here rather than fetched: a global step read in the same run as the train
        # op may see the value before or after its increment.
        self._step += 1
        self._seen_steps += 1
        checkpointed = (self._checkpoint_every_steps > 0
                        and self._step % self._checkpoint_every_steps == 0)
        if self._seen_steps > self._warmup_steps and not checkpointed:
            self.timed_steps += 1
            self.timed_seconds += elapsed
        if self._step % self._every_steps == 0 or self._step >= self._max_steps:
            rate = self.examples_per_sec
            loss = run_values.results
            self._log.info("train step %d/%d%s%s", self._step, self._max_steps,
                           f": loss {float(loss):.4f}" if loss is not None else "",
                           f" ({rate:.0f} examples/s)" if rate else "")
