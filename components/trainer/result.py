"""What a training run hands back to the step, whether it ran in this process or on a cluster.

The step's finishing (checks, publishing the chosen export, digest, history, properties) reads
only a `TrainingResult`, so both ways of training end the same way.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class TrainingResult:
    """The facts the step reports about one training run.

    evaluations: one record per evaluation ({"step", "accuracy", "loss", ...}), in order.
    best: the one whose checkpoint is exported (`exporters.choose`), None when there was no
        evaluation.
    best_export_dir: the chosen evaluation's SavedModel under `<model_run>/export/`, or None.
    best_export_step: the global step that export was evaluated at, or None.
    steps_trained: the global step of the final checkpoint.
    examples_per_sec: training throughput, evaluations left out (on a cluster: of all tasks
        together, from the global step), None when no step was timed.
    train_seconds: wall time of `train_and_evaluate` (on a cluster: the chief's).
    """

    evaluations: list[dict]
    best: dict | None
    best_export_dir: str | None
    best_export_step: int | None
    steps_trained: int
    examples_per_sec: float | None
    train_seconds: float

    def to_json(self) -> dict:
        """A JSON-ready dict; `from_json` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TrainingResult:
        """Rebuilds a result from `to_json`'s dict; KeyError/TypeError when fields are missing."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})
