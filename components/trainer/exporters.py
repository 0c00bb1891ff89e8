"""Estimator exporters run after every periodic evaluation.

- `EvalHistory` exports nothing: it records (and logs) each evaluation's step, accuracy and
  loss, which become `training_history.json`.
- `BestAccuracyExporter` keeps the SavedModel of the evaluation the history picks
  (`EvalHistory.best`, that is `choose`) and remembers where it is.

`choose(evaluations, tolerance)` is the one rule for which checkpoint is exported: the latest
whose eval accuracy is within `tolerance` of the best accuracy; with tolerance 0, the best
itself (ties broken by lower loss, then the earliest). Preferring the latest of the near-best
is for schedules that anneal (cosine, the default): a mid-schedule checkpoint that leads the
annealed ones by a digit or two of the eval split is noise, while the annealed ones score
higher on average (README, "Issue 18").
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import tensorflow as tf

ACCURACY = "accuracy"
LOSS = "loss"
MEAN_PER_CLASS_ACCURACY = "mean_per_class_accuracy"
GLOBAL_STEP = tf.compat.v1.GraphKeys.GLOBAL_STEP
# Over the float32 rounding of two accuracies (6e-8 each), under one digit of any eval split
# smaller than a million (1/n: 2e-4 for 5,071).
ROUNDING = 1e-6


def _check(result: dict) -> None:
    """Raises ValueError when an eval result lacks accuracy or loss, or its accuracy is not finite."""
    if not result or ACCURACY not in result or LOSS not in result:
        raise ValueError(f"eval result without {ACCURACY!r} and {LOSS!r}: {result!r}")
    if not math.isfinite(float(result[ACCURACY])):
        raise ValueError(f"eval result with a non-finite {ACCURACY!r}: {result!r}")


def is_better(best_eval_result: dict, current_eval_result: dict) -> bool:
    """True when `current` beats `best`: higher accuracy, then lower loss.

    Raises ValueError when either result lacks accuracy or loss.
    """
    _check(best_eval_result)
    _check(current_eval_result)
    best_acc, current_acc = best_eval_result[ACCURACY], current_eval_result[ACCURACY]
    if current_acc != best_acc:
        return current_acc > best_acc
    return current_eval_result[LOSS] < best_eval_result[LOSS]


def choose(evaluations: Sequence[dict], tolerance: float) -> dict | None:
    """The evaluation whose checkpoint is exported, among `evaluations` in the order they ran
    (each with "accuracy" and "loss"; None when there is none).

    tolerance > 0: the latest one whose accuracy is at most `tolerance` under the best accuracy
    (1 = the last evaluation); tolerance 0: the best by `is_better`, the earliest of equals.
    Raises ValueError when a record lacks accuracy or loss or its accuracy is not finite.
    """
    for record in evaluations:
        _check(record)
    if not evaluations:
        return None
    if tolerance <= 0:
        chosen = evaluations[0]
        for record in evaluations[1:]:
            if is_better(chosen, record):
                chosen = record
        return chosen
    # In float64 whatever the records hold (TensorFlow's float32 or Python floats), and with a
    # margin for rounding: a lead of exactly the tolerance (a whole number of eval digits) is
    # within it.
    top = max(float(record[ACCURACY]) for record in evaluations)
    return [record for record in evaluations if top - float(record[ACCURACY]) <= tolerance + ROUNDING][-1]


class EvalHistory(tf.estimator.Exporter):
    """Collects one record per evaluation: {"step", "accuracy", "loss", "mean_per_class_accuracy"}."""

    def __init__(self, log: logging.Logger, *, tolerance: float, name: str = "eval_history"):
        self._name = name
        self._log = log
        self._tolerance = tolerance
        self.evaluations: list[dict] = []

    @property
    def name(self) -> str:
        return self._name

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        del estimator, export_path, checkpoint_path, is_the_final_export
        record = {
            "step": int(eval_result[GLOBAL_STEP]),
            ACCURACY: float(eval_result[ACCURACY]),
            LOSS: float(eval_result[LOSS]),
        }
        if MEAN_PER_CLASS_ACCURACY in eval_result:
            record[MEAN_PER_CLASS_ACCURACY] = float(eval_result[MEAN_PER_CLASS_ACCURACY])
        # The final evaluation may repeat the last periodic one's step; keep one record per step.
        self.evaluations = [r for r in self.evaluations if r["step"] != record["step"]] + [record]
        self._log.info(
            "eval at step %d: accuracy %.4f, loss %.4f", record["step"], record[ACCURACY], record[LOSS]
        )
        return None

    def best(self) -> dict | None:
        """The record `choose` picks with this history's tolerance, or None before any eval."""
        return choose(self.evaluations, self._tolerance)


class BestAccuracyExporter(tf.estimator.BestExporter):
    """A BestExporter that keeps the SavedModel of the evaluation `history.best()` picks and
    remembers it.

    `history` is the run's `EvalHistory`, listed before this exporter in the EvalSpec so that it
    has recorded the current evaluation when this one runs; the export therefore always follows
    the history's choice (`choose` with the history's tolerance). `best_export_dir` is the
    directory of that SavedModel (None before the first export) and `best_eval_result` the
    evaluation it was exported for.
    """

    def __init__(self, serving_input_receiver_fn, history: EvalHistory, name: str = "best"):
        # event_file_pattern=None: every run starts from an empty model_run folder, so there
        # are no earlier evaluations to compare with.
        super().__init__(
            name=name,
            serving_input_receiver_fn=serving_input_receiver_fn,
            event_file_pattern=None,
            compare_fn=self._picks_current,
            exports_to_keep=1,
        )
        self._history = history
        self.best_export_dir: str | None = None
        self.best_eval_result: dict | None = None

    def _picks_current(self, best_eval_result: dict, current_eval_result: dict) -> bool:
        """BestExporter's compare_fn: whether the history now picks the current evaluation."""
        step = int(current_eval_result[GLOBAL_STEP])
        if int(best_eval_result[GLOBAL_STEP]) == step:
            return False  # a step evaluated again is not exported again
        return self._history.best()["step"] == step

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        step = int(eval_result[GLOBAL_STEP])
        if not self._history.evaluations or self._history.evaluations[-1]["step"] != step:
            raise RuntimeError(
                f"evaluation of step {step} reached {self.name!r} before the "
                "EvalHistory: list the history first among the exporters"
            )
        result = super().export(estimator, export_path, checkpoint_path, eval_result, is_the_final_export)
        if result is not None:
            self.best_export_dir = result.decode() if isinstance(result, bytes) else str(result)
            self.best_eval_result = dict(eval_result)
        return result
