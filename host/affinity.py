"""CPU pinning: every thread of a serving process on one CPU (`--cpu-pinning`).

A request crosses threads that all need the GIL: the event loop hands it to a
guest thread, every host call the guest makes takes the GIL back, the pool's
refiller instantiates beside them. On one core these hand-offs are cheap; free
to run on different cores at once, the threads contend for the GIL across cores
and each hand-off costs a cross-core wake-up. Measured (one `host up`, 16
connections, 2 cores, bench/workers.py): 2.5-4x the CPU per request floating
compared with pinned. So each serving process pins itself once it has loaded
the app (compiling still uses every core), and more cores are used by more
processes (`--workers`), one CPU each:

- one process (`host up`): the CPU it runs on when it starts serving (the
  kernel's choice, so several hosts on a node spread as their starts did);
- workers: the supervisor hands out the CPUs it may use in turn, starting
  from its own, so N workers on N cores get one each.

What it gives up: guests that compute (wasm runs without the GIL) no longer
run on several cores at once within one process: ~10 ms of wasm per request
served 0.51x floating's req/s on 2 cores; `--workers` gets it back.

Linux only (elsewhere, and with one usable CPU, nothing happens). `off` leaves
threads free: for compute-heavy guests in one process, or a node where the
operator places processes some other way.
Child processes started while serving would inherit the mask: `host watch`,
whose rebuilds run while it serves, does not pin.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("host.affinity")

CPU_PINNING = ("auto", "off")

_libc = ctypes.CDLL(None, use_errno=True)


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on, in order ([] where affinity is unsupported)."""
    if not hasattr(os, "sched_getaffinity"):
        return []
    return sorted(os.sched_getaffinity(0))


def current_cpu() -> int | None:
    """The CPU the calling thread runs on now (None where unknown)."""
    getcpu = getattr(_libc, "sched_getcpu", None)
    if getcpu is None:
        return None
    cpu = getcpu()
    return cpu if cpu >= 0 else None


def worker_cpus(count: int) -> list[int] | None:
    """One CPU per worker slot: the allowed CPUs in turn, starting from the current
    one (None: nothing to pin, one CPU or no affinity support)."""
    cpus = allowed_cpus()
    if len(cpus) < 2:
        return None
    here = current_cpu()
    start = cpus.index(here) if here in cpus else 0
    return [cpus[(start + slot) % len(cpus)] for slot in range(count)]


def process_cpu() -> int | None:
    """The CPU a single serving process pins itself to: the one it runs on (None:
    nothing to pin)."""
    cpus = worker_cpus(1)
    return cpus[0] if cpus else None


def pin_threads(cpu: int) -> bool:
    """Pin every thread of this process (and so the threads they start) to `cpu`.

    Threads started later inherit the mask of the thread that starts them. A
    failure (the CPU went offline, a seccomp profile refusing the call) leaves
    the threads as they were, with one warning: pinning is never worth a failed
    start."""
    before = os.sched_getaffinity(0)
    try:
        _set_all({cpu})
    except OSError as exc:
        try:
            _set_all(before)
        except OSError:
            pass
        log.warning("cannot pin the host's threads to CPU %d (%s); they run on any CPU "
                    "(--cpu-pinning off silences this)", cpu, exc.strerror or exc)
        return False
    log.debug("threads pinned to CPU %d", cpu)
    return True


def _set_all(cpus: set[int]) -> None:
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
