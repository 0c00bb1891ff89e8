"""`trainer.precision = "auto"`: bfloat16 compute where this CPU runs it natively and faster.

bfloat16 halves the bytes a network moves, and CPUs with bfloat16 instructions (AVX512-BF16,
AMX-BF16) multiply it natively. Having the instructions is not enough: a CPU whose float32
units are as wide as its bfloat16 ones (Intel cores with AVX512-BF16 but AMX not offered to
this system, for instance) runs bfloat16 slower, paying the conversions. So "auto" asks both
questions: does the CPU report the instructions (Linux /proc/cpuinfo flags), and does a
bfloat16 matrix product here beat the float32 one by `MIN_SPEEDUP` (a probe of under a
second: the median of paired rounds, each timing both precisions back to back, so a busy
machine slows both sides of a pair alike)? Only then mixed_bfloat16.

`resolve(configured)` returns (precision, reason): the precision model functions get, and one
line saying why, which the trainer logs and records.
"""

from __future__ import annotations

import functools
import statistics
import time

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
# the former best-of-3 rates per precision varied 1.03x to 1.76x (README, "Issue 18").
PROBE_ROUNDS = 9
PROBE_PRODUCTS = 4


def cpu_bfloat16_flags(cpuinfo_path: str = "/proc/cpuinfo") -> tuple[str, ...]:
    """The `BFLOAT16_FLAGS` this CPU reports (empty when it reports none or the file is absent)."""
    try:
        with open(cpuinfo_path) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(flag for flag in BFLOAT16_FLAGS if flag in flags)
    except OSError:
        pass
    return ()


def probe_speedup() -> float:
    """bfloat16 over float32 throughput of a square matrix product on this machine: the median
    over `PROBE_ROUNDS` rounds of the ratio of the two rates timed back to back (each precision
    first in turn). Runs in a graph and session of its own, so it works eagerly and inside a
    model function's graph alike."""
    import tensorflow as tf

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


@functools.cache
def _auto() -> tuple[str, str]:
    flags = cpu_bfloat16_flags()
    return choose(flags, probe_speedup() if flags else None)


def resolve(configured: str) -> tuple[str, str]:
    """(precision, reason) for the configured `trainer.precision`: "float32" and
    "mixed_bfloat16" as they are, "auto" decided once per process (module docstring)."""
    if configured in CONCRETE:
        return configured, f"{configured} (configured)"
    if configured != AUTO:
        raise ValueError(f"precision {configured!r}: expected one of {CHOICES}")
    return _auto()
