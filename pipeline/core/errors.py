"""Error types of the pipeline, each tied to the process exit status it ends in.

Every error carries a one-line message that names what went wrong and where (a file, a
setting, a record). `run_local.py` prints that line before any traceback.
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATA_GATE = 3
EXIT_LOCKED = 4


class PipelineError(Exception):
    """Base class: a failure the pipeline understands, ending the run with `exit_code`."""

    exit_code = EXIT_FAILURE


class ConfigError(PipelineError):
    """Bad usage or configuration: unknown key, bad value, path outside its root."""

    exit_code = EXIT_USAGE


class InputDataError(PipelineError):
    """Raw input that cannot be trusted (bad IDX header, truncated gzip, count mismatch)."""

    exit_code = EXIT_DATA_GATE


class TrainingError(PipelineError):
    """Training cannot produce a trustworthy model (NaN or Inf loss, no checkpoint)."""


class ModelIntegrityError(PipelineError):
    """A model's files do not match the digest recorded when it was exported."""


class PushError(PipelineError):
    """The pusher could not publish a verified model; nothing was published."""


class LockTimeoutError(PipelineError):
    """Another run holds the pipeline root's lock and did not release it in time."""

    exit_code = EXIT_LOCKED


class StoreDamagedError(PipelineError):
    """The metadata store's file is not a sound SQLite database (or is gone while its backup
    exists); nothing was read from or written to it."""


class StoreRestoreError(PipelineError):
    """The metadata store could not be restored from its backup; nothing was changed."""


class StoreSettingsError(ConfigError):
    """The metadata store's connection settings do not work: server unreachable, login refused,
    no such database. The message names host, port and database, never the password."""


class StoreUnavailableError(PipelineError):
    """A shared metadata store went away mid-run (its connection, or the run lock held on it,
    was lost): the run stops, and the next run recovers as after a crash."""


class WriteFaultError(PipelineError):
    """A folder or file the pipeline must write cannot be written (read-only file system, no
    space left, no permission). The message names the path and the reason."""


def failed_path(error: OSError) -> str | None:
    """The path a file system error failed on: the destination where it names two (a copy's)."""
    return error.filename2 if error.filename2 is not None else error.filename


def write_fault(what: str, error: OSError) -> WriteFaultError:
    """A WriteFaultError "[<what>: ]cannot write <path>: <reason>" for `error`, naming the path
    it failed on (`failed_path`)."""
    return WriteFaultError(
        f"{what + ': ' if what else ''}cannot write {failed_path(error)}: {error.strerror or error}"
    )


# A run stopped by a signal ends with 128 + the signal's number, as a shell reports it.
EXIT_SIGNAL_BASE = 128


class Interrupted(BaseException):
    """A stop request (SIGTERM, SIGINT) raised in the main thread by
    `pipeline.core.interrupts.stop_on_signals`; the run ends with 128 + the signal's number.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` in a step swallows
    it. The runner `locate`s it once, where it first passes: what was interrupted and what that
    left committed.
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.where = "before the run started"
        self.consequence = "nothing changed"
        self.located = False

    @property
    def exit_code(self) -> int:
        return EXIT_SIGNAL_BASE + self.signum

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    def locate(self, where: str, consequence: str) -> Interrupted:
        """Records what was interrupted ("during trainer (run ID)") and what that left
        ("trainer committed nothing, ..."), unless an inner frame did already; returns self."""
        if not self.located:
            self.where, self.consequence, self.located = where, consequence, True
        return self

    def __str__(self) -> str:
        return f"stopped by {self.signal_name} {self.where}; {self.consequence}"
