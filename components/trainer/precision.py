"""`trainer.precision = "auto"`: bfloat16 compute where this CPU runs it natively and faster.

bfloat16 halves the bytes a network moves, and CPUs with bfloat16 instructions (AVX512-BF16,
AMX-BF16) multiply it natively. Having the instructions is not enough: a CPU whose float32
units are as wide as its bfloat16 ones (Intel cores with AVX512-BF16 but AMX not offered to
this system, for instance) runs bfloat16 slower, paying the conversions. So "auto" asks both
questions: does the CPU report the instructions (Linux /proc/cpuinfo flags), and does a
bfloat16 matrix product here beat the float32 one by `MIN_SPEEDUP` (a probe of under a
second: the median of paired rounds, each timing both precisions back to back, so a busy
machine slows both sides of a pair alike)? Only then mixed_bfloat16.

A probe is a measurement, and a measurement near the threshold, or on a busy machine, can come
out either way. So the decision is made once per machine and recorded: a JSON file (`RECORD_ENV`
names it; default `DEFAULT_RECORD`) holds one decision per machine key (the CPU model, its
/proc/cpuinfo flags and the TensorFlow version: what the probe's answer depends on). Every
process on that machine reads the recorded decision instead of probing; a new CPU, new flags
or a new TensorFlow probe again. The probe and the write happen under a lock on the file, so
two processes starting together decide once, alike. A record that does not parse (or a
decision in it that is no precision) is decided again with a warning; a record that cannot be
written leaves the decision to this process, with a warning. Deleting the file re-decides.
A CPU without the instructions needs no probe: float32, and nothing is recorded.

`resolve(configured)` returns (precision, reason): the precision model functions get, and one
line saying why, which the trainer logs and records.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator

from pipeline.core.atomic_files import write_text_atomic

AUTO = "auto"
FLOAT32 = "float32"
MIXED_BFLOAT16 = "mixed_bfloat16"
CONCRETE = (FLOAT32, MIXED_BFLOAT16)
CHOICES = (AUTO,) + CONCRETE
# /proc/cpuinfo flags of native bfloat16 arithmetic.
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
# bfloat16 must be at least this much faster than float32 on the probe to be chosen.
MIN_SPEEDUP = 1.15
PROBE_SIZE = 768
# The median of 9 paired ratios varied 1.40x to 1.48x over 8 probes on a busy 2-core EPYC where
# the former best-of-3 rates per precision varied 1.03x to 1.76x (benchmarks/RESULTS.md, "Accuracy and speed of the default recipe").
PROBE_ROUNDS = 9
PROBE_PRODUCTS = 4
# Where the per-machine decisions are recorded, unless MNIST_PIPELINE_PRECISION_RECORD names a file.
RECORD_ENV = "MNIST_PIPELINE_PRECISION_RECORD"
DEFAULT_RECORD = os.path.join("~", ".cache", "mnist-tfx-pipeline", "precision.json")
RECORD_FORMAT = 1
CPUINFO = "/proc/cpuinfo"

log = logging.getLogger(__name__)


def _cpuinfo_field(cpuinfo_path: str, field: str) -> str | None:
    """The value of the first `field` line of a /proc/cpuinfo file (None: no such line, or no file)."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                name, colon, value = line.partition(":")
                if colon and name.strip() == field:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_bfloat16_flags(cpuinfo_path: str | None = None) -> tuple[str, ...]:
    """The `BFLOAT16_FLAGS` this CPU reports (empty when it reports none or the file is absent).
    cpuinfo_path: default `CPUINFO`."""
    flags = set((_cpuinfo_field(cpuinfo_path or CPUINFO, "flags") or "").split())
    return tuple(flag for flag in BFLOAT16_FLAGS if flag in flags)


def machine(cpuinfo_path: str | None = None) -> dict:
    """What a probe's answer depends on: {"cpu": the model name, "flags": the CPU's flags,
    sorted, "tensorflow": the installed version}; cpuinfo_path: default `CPUINFO`."""
    cpuinfo_path = cpuinfo_path or CPUINFO
    try:
        tensorflow = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        tensorflow = "absent"
    return {
        "cpu": _cpuinfo_field(cpuinfo_path, "model name") or "unknown",
        "flags": sorted(set((_cpuinfo_field(cpuinfo_path, "flags") or "").split())),
        "tensorflow": tensorflow,
    }


def machine_key(identity: dict) -> str:
    """The record's key for a `machine()` identity: a short digest of it."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def record_path() -> str:
    """The decisions file: `RECORD_ENV` when set, else `DEFAULT_RECORD`, as an absolute path."""
    return os.path.abspath(os.path.expanduser(os.environ.get(RECORD_ENV) or DEFAULT_RECORD))


def probe_speedup() -> float:
    """bfloat16 over float32 throughput of a square matrix product on this machine: the median
    over `PROBE_ROUNDS` rounds of the ratio of the two rates timed back to back (each precision
    first in turn). Runs in a graph and session of its own, so it works eagerly and inside a
    model function's graph alike."""
    # The config (which checks trainer.precision against CHOICES) imports this module; it must
    # load without TensorFlow.
    import tensorflow as tf  # noqa: PLC0415

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        products = {}
        for name, dtype in ((FLOAT32, tf.float32), (MIXED_BFLOAT16, tf.bfloat16)):
            a = tf.cast(tf.random.uniform([PROBE_SIZE, PROBE_SIZE]), dtype)
            products[name] = tf.reduce_sum(tf.cast(tf.matmul(a, a), tf.float32))
            session.run(products[name])  # warm up

        def rate(name: str) -> float:
            started = time.perf_counter()
            for _ in range(PROBE_PRODUCTS):
                session.run(products[name])
            return PROBE_PRODUCTS / (time.perf_counter() - started)

        ratios = []
        for round_index in range(PROBE_ROUNDS):
            # Alternate which precision goes first, so an order effect cancels in the median.
            if round_index % 2:
                float32_rate, bfloat16_rate = rate(FLOAT32), rate(MIXED_BFLOAT16)
            else:
                bfloat16_rate, float32_rate = rate(MIXED_BFLOAT16), rate(FLOAT32)
            ratios.append(bfloat16_rate / float32_rate)
    return statistics.median(ratios)


def choose(flags: tuple[str, ...], speedup: float | None) -> tuple[str, str]:
    """(precision, reason) for "auto" given the CPU's bfloat16 flags and the probe's speedup
    (bfloat16 over float32; None, not probed, when there are no flags)."""
    if not flags:
        return FLOAT32, "auto: float32 (this CPU reports no AVX512-BF16 or AMX-BF16)"
    have = " and ".join(flag.upper().replace("_", "-") for flag in flags)
    if speedup < MIN_SPEEDUP:
        return FLOAT32, (
            f"auto: float32 (this CPU has {have}, but bfloat16 ran {speedup:.3f}x "
            f"float32 here, under the {MIN_SPEEDUP}x that pays)"
        )
    return MIXED_BFLOAT16, f"auto: mixed_bfloat16 (this CPU has {have}; bfloat16 ran {speedup:.2f}x float32)"


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Holds an exclusive lock on `<path>.lock` (created, with its folder, as needed).
    Raises OSError when it cannot be created."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _read_decisions(path: str) -> dict:
    """{machine key: decision} recorded in `path`; {} when there is no file, and, with a
    warning naming the file, when it does not parse as a decisions record."""
    try:
        with open(path) as f:
            record = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.warning("precision record %s: unreadable (%s); deciding again", path, e)
        return {}
    if not (
        isinstance(record, dict)
        and record.get("format") == RECORD_FORMAT
        and isinstance(record.get("machines"), dict)
    ):
        log.warning(
            'precision record %s: not a decisions record (expected {"format": %d, "machines": {...}}); '
            "deciding again",
            path,
            RECORD_FORMAT,
        )
        return {}
    return record["machines"]


def _usable(decision, path: str, key: str) -> bool:
    """Whether a recorded `decision` names a precision, a reason and its date (a warning when
    present but not)."""
    if decision is None:
        return False
    if (
        isinstance(decision, dict)
        and decision.get("precision") in CONCRETE
        and isinstance(decision.get("reason"), str)
        and isinstance(decision.get("decided_at"), str)
    ):
        return True
    log.warning(
        "precision record %s: machine %s has no usable decision (%r); deciding again", path, key, decision
    )
    return False


def decide_auto(
    cpuinfo_path: str | None = None, path: str | None = None, probe: Callable[[], float] | None = None
) -> tuple[str, str]:
    """(precision, reason) that "auto" means on this machine: read from the decisions record at
    `path` (default `record_path()`), or decided by `choose` on the CPU's flags and `probe`
    (default `probe_speedup`) and recorded there. The reason names the record.
    cpuinfo_path: default `CPUINFO`."""
    flags = cpu_bfloat16_flags(cpuinfo_path)
    if not flags:
        return choose((), None)
    path = path or record_path()
    identity = machine(cpuinfo_path)
    key = machine_key(identity)
    decision = None
    try:
        with _locked(path):
            decisions = _read_decisions(path)
            if _usable(decisions.get(key), path, key):
                decision = decisions[key]
            else:
                decision = _probe_and_choose(flags, probe, identity)
                decisions[key] = decision
                text = json.dumps({"format": RECORD_FORMAT, "machines": decisions}, indent=2, sort_keys=True)
                write_text_atomic(path, text + "\n")
    except OSError as e:
        decision = decision or _probe_and_choose(flags, probe, identity)
        log.warning(
            "precision record %s: cannot be used (%s); this process trains in %s, other processes "
            "decide for themselves (set %s to a writable file, or trainer.precision)",
            path,
            e,
            decision["precision"],
            RECORD_ENV,
        )
        return decision["precision"], decision["reason"]
    return decision[
        "precision"
    ], f"{decision['reason']}; decided {decision['decided_at']}, recorded in {path}"


def _probe_and_choose(flags: tuple[str, ...], probe: Callable[[], float] | None, identity: dict) -> dict:
    """A decision to record: {"precision", "reason", "speedup", "decided_at", and the machine's
    identity}, from `choose` on `flags` and what `probe` (default `probe_speedup`) measures."""
    speedup = (probe or probe_speedup)()
    chosen, reason = choose(flags, speedup)
    return {
        "precision": chosen,
        "reason": reason,
        "speedup": round(speedup, 4),
        "decided_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **identity,
    }


@functools.cache
def _auto(path: str) -> tuple[str, str]:
    return decide_auto(path=path)


def resolve(configured: str) -> tuple[str, str]:
    """(precision, reason) for the configured `trainer.precision`: "float32" and
    "mixed_bfloat16" as they are, "auto" as this machine's recorded decision (`decide_auto`;
    read once per process and record file)."""
    if configured in CONCRETE:
        return configured, f"{configured} (configured)"
    if configured != AUTO:
        raise ValueError(f"precision {configured!r}: expected one of {CHOICES}")
    return _auto(record_path())
