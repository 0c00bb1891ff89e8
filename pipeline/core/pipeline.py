"""A pipeline as the runner sees it: ordered steps plus where and how to run them.

The application builds one (see `pipeline.factory`); the core only checks that the steps are
wired consistently and never learns what a step does. A partial run is an operation on the
pipeline, like Kedro's `from_nodes` / `to_nodes`: `from_step` and `to_step` return a new
Pipeline whose `steps` are the ones to run; the steps before them (`upstream`) are not run, their
outputs are taken from earlier executions, and the steps after them (`downstream`) are skipped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.core.step import StepSpec, check_wiring
from pipeline.core.store_settings import MySqlSettings


@dataclass(frozen=True)
class Pipeline:
    """An ordered, validated list of steps and the settings the runner needs.

    steps: StepSpecs to run, in an order that respects their producer references.
    root: the pipeline root (artifacts, metadata store, runs/).
    lock_timeout_s: how long a run waits for another run on the same root (then exit 4).
    beam_args: Apache Beam options handed to every step.
    run_config: JSON-ready resolved configuration, saved as runs/<run_id>/config.json.
    summary_fields: constant top-level entries of every run summary (e.g. the serving folder).
    after_run: hook called as after_run(summary, run_dir) once the summary is written; returns
        the path of an extra file it wrote (the report) or None. Its failure never changes the run.
    store_written: hook called as store_written(store) with the run's
        `pipeline.core.metadata.MetadataStore` once the run's record in it is final (after the
        summary is written): the application backs the store up here. Its failure never changes
        the run.
    store: where ML Metadata lives: None = `<root>/metadata.sqlite`, or the
        `store_settings.MySqlSettings` of a shared MySQL / MariaDB database.
    upstream: steps before `steps` (see `from_step`): not run; their outputs come from earlier
        executions.
    downstream: steps after `steps` (see `to_step`): not run.
    """

    steps: tuple
    root: str
    lock_timeout_s: float = 600.0
    beam_args: tuple = ()
    run_config: Mapping = field(default_factory=dict)
    summary_fields: Mapping = field(default_factory=dict)
    after_run: Callable[[dict, str], str | None] | None = None
    store_written: Callable[[Any], None] | None = None
    store: MySqlSettings | None = None
    upstream: tuple = ()
    downstream: tuple = ()

    def __post_init__(self) -> None:
        check_wiring(self.all_steps)
        if not self.steps:
            raise ConfigError("a pipeline needs at least one step to run")

    @property
    def all_steps(self) -> tuple:
        """Every step of the pipeline in order: upstream, the steps to run, downstream."""
        return (*self.upstream, *self.steps, *self.downstream)

    def step(self, name: str) -> StepSpec:
        """Returns the step called `name`; ConfigError when there is none."""
        for spec in self.all_steps:
            if spec.name == name:
                return spec
        raise ConfigError(f"unknown step {name!r} (steps: {', '.join(s.name for s in self.all_steps)})")

    def from_step(self, name: str) -> Pipeline:
        """The pipeline that runs from step `name` on; the steps before it become `upstream`.

        Raises ConfigError when `name` is unknown or not among `steps`.
        """
        index = self._index_to_run(name)
        return dataclasses.replace(
            self, upstream=(*self.upstream, *self.steps[:index]), steps=self.steps[index:]
        )

    def to_step(self, name: str) -> Pipeline:
        """The pipeline that runs up to step `name`; the steps after it become `downstream`.

        Raises ConfigError when `name` is unknown or not among `steps`.
        """
        index = self._index_to_run(name)
        return dataclasses.replace(
            self, steps=self.steps[: index + 1], downstream=(*self.steps[index + 1 :], *self.downstream)
        )

    def _index_to_run(self, name: str) -> int:
        self.step(name)  # unknown names first
        names = [spec.name for spec in self.steps]
        if name not in names:
            where = "before" if name in {spec.name for spec in self.upstream} else "after"
            raise ConfigError(
                f"step {name} comes {where} the steps this pipeline runs ({names[0]} .. {names[-1]})"
            )
        return names.index(name)
