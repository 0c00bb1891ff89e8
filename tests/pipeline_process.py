"""`run_local.py` as a process of its own, for the tests that stop or kill a real run."""

from __future__ import annotations

import os
import subprocess
import sys

from mnist_slices import write_mnist_slice
from run_configs import small_lenient

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def slice_and_config(base, train_steps: int = 120) -> tuple[str, str]:
    """(data root, config path) under `base`: 1,000 training and 200 test digits, the lenient
    small config training `train_steps` steps."""
    data = write_mnist_slice(str(base / "data"), 1000, 200)
    config = base / "config.toml"
    config.write_text(small_lenient(train_steps=train_steps))
    return data, str(config)


def start(data: str, config: str, root, *extra: str, new_session: bool = False) -> subprocess.Popen:
    """`run_local.py` on pipeline root `root` (summary at `<root>.summary.json`), its output
    (stdout and stderr together) in `.stdout`; `new_session`: in a session and process group of
    its own, so a test can tell its descendants apart."""
    env = dict(os.environ, PYTHONPATH=PROJECT, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen(
        [
            sys.executable,
            os.path.join(PROJECT, "run_local.py"),
            "--config",
            config,
            "--data-root",
            data,
            "--pipeline-root",
            str(root),
            "--summary-json",
            str(root) + ".summary.json",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=new_session,
    )
