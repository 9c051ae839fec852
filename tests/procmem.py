"""A process's memory as Linux reports it, for memory bounds in tests and bench/.

The high-water mark (VmHWM) only ever rises, so a figure for one request
first lowers it to the current RSS (`clear_refs` 5): otherwise start-up's own
peak (loading compiled components) hides any request that needs less.
"""

from __future__ import annotations

from pathlib import Path


def memory_bytes(pid: int, field: str) -> int:
    """A `Vm*` figure of /proc/PID/status (VmRSS, VmHWM...), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_peak(pid: int) -> int:
    """Lower the process's high-water mark to its current RSS; return it in bytes."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return memory_bytes(pid, "VmHWM")


def peak_growth(pid: int, baseline: int) -> int:
    """Bytes the peak rose above `baseline` (a `reset_peak` value)."""
    return memory_bytes(pid, "VmHWM") - baseline
