"""What happened to one step in one run: its state, its summary entry, and how a run stops.

These are the results the launcher (`pipeline.core.launcher`) returns and the runner collects;
`StepReport.to_json` is one entry of the run summary's `steps`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.step import Artifact


class StepState(enum.StrEnum):
    """A step's state in a run; the values are the summary's strings."""

    RAN = "ran"
    CACHED = "cached"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def completed(self) -> bool:
        """True when the step has outputs in this run (it ran, or reused a cached execution)."""
        return self in (StepState.RAN, StepState.CACHED)


@dataclass(frozen=True)
class StepReport:
    """One step's entry in a run summary.

    inputs: the step's resolved inputs (input key -> Artifact), for the step's own summary
    contribution (`StepSpec.summary`); not part of the JSON.
    """

    state: StepState
    execution_id: int | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    properties: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    reason: str | None = None
    # Peak resident memory of the pipeline process while the step ran (None: not measured).
    peak_memory_mib: float | None = None
    inputs: Mapping[str, Artifact] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        """The summary entry: state, execution_id, outputs, seconds, then what is known."""
        data: dict[str, Any] = {
            "state": self.state.value,
            "execution_id": self.execution_id,
            "outputs": dict(self.outputs),
            "seconds": round(self.seconds, 3),
        }
        if self.peak_memory_mib is not None:
            data["peak_memory_mib"] = self.peak_memory_mib
        if self.properties:
            data["properties"] = dict(self.properties)
        if self.error:
            data["error"] = self.error
        if self.reason:
            data["reason"] = self.reason
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], inputs: Mapping[str, Artifact]) -> StepReport:
        """The report a summary entry was written from (`to_json`), with its resolved `inputs`.

        Raises ValueError for an unknown state.
        """
        return cls(
            state=StepState(data["state"]),
            execution_id=data.get("execution_id"),
            outputs=dict(data.get("outputs") or {}),
            properties=dict(data.get("properties") or {}),
            seconds=float(data.get("seconds") or 0.0),
            error=data.get("error"),
            reason=data.get("reason"),
            peak_memory_mib=data.get("peak_memory_mib"),
            inputs=dict(inputs),
        )


@dataclass(frozen=True)
class Stop:
    """Why a run stops after a step: a failure, or a step's outcome (the data gate)."""

    message: str
    exit_code: int


@dataclass(frozen=True)
class StepResult:
    """What launching (or reusing) one step gives the run.

    outputs: output key -> Artifact, which later steps of the run read.
    stop: set when the run must not go on after this step.
    """

    report: StepReport
    outputs: Mapping[str, Artifact] = field(default_factory=dict)
    stop: Stop | None = None

    @property
    def completed(self) -> bool:
        """True when the step has outputs in this run (see `StepState.completed`)."""
        return self.report.state.completed
