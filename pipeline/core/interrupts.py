"""A stop request (SIGTERM from systemd, Airflow or Kubernetes; SIGINT from Ctrl-C) ends a run
cleanly: the run's failure path runs, then the process exits with 128 + the signal's number.

`stop_on_signals()` installs the handlers (in the main thread, for the `with` block). On the
first signal the handler
1. ends every descendant process at once (SIGKILL; Beam's multi_processing workers, cluster
   training tasks): what they computed is discarded, and they must not write into staging
   folders while those are removed. The process first becomes its descendants' subreaper, so a
   process whose parent is killed as it forks it is re-parented here and found, not lost;
2. starts a watchdog: when the process has not exited `HARD_STOP_S` seconds later (cleanup
   stuck in native code), it ends the descendants again and exits with the same status, as
   after a crash, which the next run recovers from;
3. raises `Interrupted` in the main thread, unless it is inside a `held()` section (a commit
   that must finish or not start); then the request waits for the next `checkpoint()`.
Later signals are noted on stderr and ignored: the cleanup they would interrupt is already
under way, and interrupting it could only leave more behind. After a stop request, an exception
that ends another thread (Beam's thread watching a worker it finds killed) is a consequence of
the stop, logged at debug level instead of printed as a traceback; Beam's own error logs about
the workers it lost are not shown.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

from pipeline.core.errors import EXIT_SIGNAL_BASE, Interrupted

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# After a stop request the process exits within this many seconds, cleanup done or not.
HARD_STOP_S = 10.0
# How long ending the descendants waits for them to be gone.
REAP_WAIT_S = 2.0
PR_SET_CHILD_SUBREAPER = 36


class _State:
    """The process's stop request: the signal (None: none yet), whether `Interrupted` was
    raised for it, and how deep the main thread is in `held()` sections."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.raised = False
        self.held = 0
        self.watchdog: threading.Thread | None = None


_state = _State()
log = logging.getLogger("pipeline")


def _note(text: str) -> None:
    # os.write, not logging: a handler may run while the main thread is inside logging's lock.
    with contextlib.suppress(OSError):
        os.write(sys.stderr.fileno(), f"{text}\n".encode())


def descendants(pid: int | None = None) -> list[int]:
    """The PIDs of every living process descending from `pid` (default: this process), found
    by parent links in /proc; children before their own children."""
    root = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z":  # a zombie is gone already; its parent reaps it
            continue
        children.setdefault(int(fields[1]), []).append(int(name))
    found, frontier = [], [root]
    while frontier:
        kids = [kid for parent in frontier for kid in children.get(parent, [])]
        found.extend(kids)
        frontier = kids
    return found


def end_descendants(wait_s: float = REAP_WAIT_S) -> list[int]:
    """SIGKILLs every descendant of this process (and the process groups they lead, so a
    task's own children go too), again until none is found or `wait_s` has passed; returns
    the PIDs it signalled."""
    own_group = os.getpgrp()
    ended: list[int] = []
    deadline = time.monotonic() + wait_s
    while True:
        # All of them first, then the kills: a killed shell's child would otherwise be
        # re-parented away before it was found.
        found = descendants()
        if not found or time.monotonic() > deadline:
            return ended
        for pid in found:
            with contextlib.suppress(OSError):
                if os.getpgid(pid) == pid and pid != own_group:
                    os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
            ended.append(pid)
        time.sleep(0.05)


def _become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process from now on (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _watchdog(signum: int, hard_stop_s: float) -> None:
    time.sleep(hard_stop_s)
    _note(
        f"error: cleanup after {signal.Signals(signum).name} did not finish in {hard_stop_s:g}s; "
        "exiting now, the next run cleans up as after a crash"
    )
    end_descendants()
    os._exit(EXIT_SIGNAL_BASE + signum)


def _handle(signum: int, frame) -> None:
    if _state.signum is not None:
        _note(f"{signal.Signals(signum).name} ignored: already stopping")
        return
    _state.signum = signum
    _state.watchdog = threading.Thread(
        target=_watchdog, args=(signum, HARD_STOP_S), name="stop-watchdog", daemon=True
    )
    _state.watchdog.start()
    _become_subreaper()
    # Beam logs tracebacks for the workers ended next; the run's own line says what happened.
    logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    end_descendants()
    if _state.held == 0:
        _state.raised = True
        raise Interrupted(signum)


def checkpoint() -> None:
    """Raises `Interrupted` for a stop request that came while held, once."""
    if _state.signum is not None and not _state.raised and _state.held == 0:
        _state.raised = True
        raise Interrupted(_state.signum)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """A section a stop request does not interrupt (a commit: renames and their metadata
    record); a request that comes meanwhile waits for the next `checkpoint()`."""
    _state.held += 1
    try:
        yield
    finally:
        _state.held -= 1


def _thread_excepthook(args: threading.ExceptHookArgs) -> None:
    if _state.signum is None:
        _original_excepthook(args)
        return
    thread = args.thread.name if args.thread is not None else "?"
    log.debug(
        "thread %s ended after the stop request: %s: %s", thread, args.exc_type.__name__, args.exc_value
    )


_original_excepthook = threading.excepthook


@contextlib.contextmanager
def stop_on_signals(signals: tuple = STOP_SIGNALS) -> Iterator[None]:
    """Handles `signals` as stop requests (see the module docstring) for the `with` block;
    the previous handlers come back after it. Only in the main thread (Python delivers
    signals there); elsewhere it changes nothing. After a stop request they stay installed, so
    a repeated signal cannot cut short the exit that follows."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _handle) for signum in signals}
    threading.excepthook = _thread_excepthook
    try:
        yield
    finally:
        if _state.signum is None:
            threading.excepthook = _original_excepthook
            for signum, handler in previous.items():
                signal.signal(signum, handler)
