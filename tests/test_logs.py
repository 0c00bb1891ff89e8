"""Readable logs: the one known-harmless TensorFlow teardown traceback is dropped, nothing else."""

import os
import signal
import subprocess
import sys
import types

import pytest

from pipeline import logs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AtomicFunction:  # the name TensorFlow 2.15's class has
    def __del__(self):
        pass


class OtherObject:
    def __del__(self):
        pass


def _unraisable(function, exc_type=TypeError):
    return types.SimpleNamespace(
        exc_type=exc_type, exc_value=exc_type("x"), exc_traceback=None, err_msg=None, object=function
    )


def _passed_on(unraisable, finalizing: bool) -> bool:
    seen = []
    logs._drop_tensorflow_teardown_noise(
        unraisable, default_hook=seen.append, is_finalizing=lambda: finalizing
    )
    return seen == [unraisable]


def test_atomic_function_typeerror_at_teardown_is_dropped():
    assert not _passed_on(_unraisable(AtomicFunction.__del__), finalizing=True)


@pytest.mark.parametrize(
    "unraisable, finalizing",
    [
        (_unraisable(AtomicFunction.__del__), False),  # while the program runs: a real bug
        (_unraisable(AtomicFunction.__del__, ValueError), True),  # another failure of the same method
        (_unraisable(OtherObject.__del__), True),  # another object at teardown
    ],
)
def test_everything_else_reaches_the_default_hook(unraisable, finalizing):
    assert _passed_on(unraisable, finalizing)


@pytest.mark.parametrize("verbose, installed", [(False, True), (True, False)])
def test_configure_logging_installs_the_hook_unless_verbose(monkeypatch, verbose, installed):
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    logs.configure_logging(verbose)
    assert (sys.unraisablehook is logs._drop_tensorflow_teardown_noise) == installed


def test_a_reader_that_went_away_ends_the_command_quietly_with_sigpipes_status(tmp_path):
    """`run_local.py ... | head`: once the pipe's reader is gone, no traceback, exit 128 + SIGPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        done = subprocess.run(
            # `runs` prints its table's header even for a root without runs.
            [sys.executable, "run_local.py", "runs", "--pipeline-root", str(tmp_path)],
            cwd=REPO,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 128 + signal.SIGPIPE, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
