"""The Pusher's parameters (`[pusher]`), checked when an instance is built (`pipeline.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.params import Params, at_least, local_path


@dataclass(frozen=True)
class PusherParams(Params):
    """Publishing into the serving folder."""

    SECTION = "pusher"

    # "" in a config: <pipeline_root>/serving (the factory hands the step the resolved folder).
    serving_dir: str = ""
    # Test examples the staged copy must answer before it is published.
    verify_examples: int = 8

    CHECKS = {
        "serving_dir": local_path(required=False),
        "verify_examples": at_least(1),
    }
