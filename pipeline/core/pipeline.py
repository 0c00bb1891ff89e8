"""A pipeline as the runner sees it: ordered steps plus where and how to run them.

The application builds one (see `pipeline.factory`); the core only checks that the steps are
wired consistently and never learns what a step does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pipeline.core.errors import ConfigError
from pipeline.core.step import StepSpec, check_wiring
from pipeline.core.store_settings import MySqlSettings


@dataclass(frozen=True)
class Pipeline:
    """An ordered, validated list of steps and the settings the runner needs.

    steps: StepSpecs in an order that respects their producer references.
    root: the pipeline root (artifacts, metadata store, runs/).
    lock_timeout_s: how long a run waits for another run on the same root (then exit 4).
    beam_args: Apache Beam options handed to every step.
    run_config: JSON-ready resolved configuration, saved as runs/<run_id>/config.json.
    summary_fields: constant top-level entries of every run summary (e.g. the serving folder).
    after_run: called as after_run(summary, run_dir) once the summary is written; returns the
        path of an extra file it wrote (the report) or None. Its failure never changes the run.
    store: where ML Metadata lives: None = `<root>/metadata.sqlite`, or the
        `store_settings.MySqlSettings` of a shared MySQL / MariaDB database.
    """

    steps: tuple
    root: str
    lock_timeout_s: float = 600.0
    beam_args: tuple = ()
    run_config: Mapping = field(default_factory=dict)
    summary_fields: Mapping = field(default_factory=dict)
    after_run: Callable[[dict, str], str | None] | None = None
    store: MySqlSettings | None = None

    def __post_init__(self):
        check_wiring(self.steps)

    def step(self, name: str) -> StepSpec:
        """Returns the step called `name`; ConfigError when there is none."""
        for spec in self.steps:
            if spec.name == name:
                return spec
        raise ConfigError(f"unknown step {name!r} (steps: {', '.join(s.name for s in self.steps)})")
