"""Peak memory of the pipeline process, step by step (Linux; elsewhere the figures are None).

The kernel keeps a process's peak resident set size (VmHWM in /proc/self/status) and lets the
process reset it (writing "5" to /proc/self/clear_refs, Linux 4.0+), so the peak of each step
is measured exactly, with no sampling thread. Worker processes a Beam runner starts (the
multi_processing mode, a portable job service) are not counted: their memory is their own.
"""

from __future__ import annotations


def reset_peak_rss() -> bool:
    """Resets this process's peak resident memory to its current size; False where the
    platform does not allow it (the next `peak_rss_mb` then reports the process's lifetime peak)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(pid: str = "self") -> float | None:
    """Peak resident memory of process `pid` since its last reset, in MiB, or None where /proc
    has no figure."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None
