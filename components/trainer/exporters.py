"""Estimator exporters run after every periodic evaluation.

- `EvalHistory` exports nothing: it records (and logs) each evaluation's step, accuracy and
  loss, which become `training_history.json`.
- `BestAccuracyExporter` keeps the SavedModel of the best evaluation so far (highest accuracy,
  ties broken by lower loss) and remembers where it is.
"""

from __future__ import annotations

import logging
from typing import List, Optional

import tensorflow as tf

ACCURACY = "accuracy"
LOSS = "loss"
MEAN_PER_CLASS_ACCURACY = "mean_per_class_accuracy"


def is_better(best_eval_result: dict, current_eval_result: dict) -> bool:
    """BestExporter compare_fn: True when `current` beats `best` (higher accuracy, then lower loss).

    Raises ValueError when either result lacks accuracy or loss.
    """
    for result in (best_eval_result, current_eval_result):
        if not result or ACCURACY not in result or LOSS not in result:
            raise ValueError(f"eval result without {ACCURACY!r} and {LOSS!r}: {result!r}")
    best_acc, current_acc = best_eval_result[ACCURACY], current_eval_result[ACCURACY]
    if current_acc != best_acc:
        return current_acc > best_acc
    return current_eval_result[LOSS] < best_eval_result[LOSS]


class EvalHistory(tf.estimator.Exporter):
    """Collects one record per evaluation: {"step", "accuracy", "loss", "mean_per_class_accuracy"}."""

    def __init__(self, log: logging.Logger, name: str = "eval_history"):
        self._name = name
        self._log = log
        self.evaluations: List[dict] = []

    @property
    def name(self) -> str:
        return self._name

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        del estimator, export_path, checkpoint_path, is_the_final_export
        record = {
            "step": int(eval_result[tf.compat.v1.GraphKeys.GLOBAL_STEP]),
            ACCURACY: float(eval_result[ACCURACY]),
            LOSS: float(eval_result[LOSS]),
        }
        if MEAN_PER_CLASS_ACCURACY in eval_result:
            record[MEAN_PER_CLASS_ACCURACY] = float(eval_result[MEAN_PER_CLASS_ACCURACY])
        # The final evaluation may repeat the last periodic one's step; keep one record per step.
        self.evaluations = [r for r in self.evaluations if r["step"] != record["step"]] + [record]
        self._log.info("eval at step %d: accuracy %.4f, loss %.4f",
                       record["step"], record[ACCURACY], record[LOSS])
        return None

    def best(self) -> Optional[dict]:
        """The best record by `is_better` (the earliest of equals), or None before any eval."""
        best = None
        for record in self.evaluations:
            if best is None or is_better(best, record):
                best = record
        return best


class BestAccuracyExporter(tf.estimator.BestExporter):
    """A BestExporter on eval accuracy that remembers its latest export.

    `best_export_dir` is the directory of the best SavedModel so far (None before the first
    export) and `best_eval_result` the evaluation it was exported for.
    """

    def __init__(self, serving_input_receiver_fn, name: str = "best"):
        # event_file_pattern=None: every run starts from an empty model_run folder, so there
        # are no earlier evaluations to compare with.
        super().__init__(name=name, serving_input_receiver_fn=serving_input_receiver_fn,
                         event_file_pattern=None, compare_fn=is_better, exports_to_keep=1)
        self.best_export_dir: Optional[str] = None
        self.best_eval_result: Optional[dict] = None

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        result = super().export(estimator, export_path, checkpoint_path, eval_result,
                                is_the_final_export)
        if result is not None:
            self.best_export_dir = result.decode() if isinstance(result, bytes) else str(result)
            self.best_eval_result = dict(eval_result)
        return result
