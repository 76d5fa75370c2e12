"""How many of this process's cores are free now: the CPU time other processes use over a short window of
/proc/stat, not the load average (which still counts, for a minute, work that has just finished)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Collection

WINDOW_S = 0.5  # long enough to see a process that holds a core, short enough to wait for before training
Reader = Callable[[str], str]


def read_text(path: str) -> str:
    with open(path) as file:
        return file.read()


def allowed_cpus() -> set[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def _sample(read: Reader, cpus: Collection[int]) -> tuple[int, int, int, int]:
    """(busy, total) clock ticks summed over those of `cpus` that /proc/stat lists, how many it lists, and this
    process's own ticks (all its threads) since it started."""
    busy = total = listed = 0
    for line in read("/proc/stat").splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        # user nice system idle iowait irq softirq steal; guest time is already inside user and nice
        ticks = [int(value) for value in fields[:8]]
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
        listed += 1
    if total == 0:
        raise ValueError("none of this process's CPUs is listed in /proc/stat")
    own = read("/proc/self/stat")
    utime, stime = own[own.rindex(")") + 2:].split()[11:13]  # fields 14 and 15; the name before ")" may hold spaces
    return busy, total, listed, int(utime) + int(stime)


def busy_elsewhere(cpus: Collection[int], *, window: float = WINDOW_S, read: Reader = read_text,
                   sleep: Callable[[float], None] = time.sleep) -> float | None:
    """Cores of `cpus` that other processes kept busy over the next `window` seconds (None without /proc)."""
    try:
        before = _sample(read, cpus)
        sleep(window)
        after = _sample(read, cpus)
    except (OSError, ValueError, IndexError):
        return None
    busy, total, _, own = (b - a for a, b in zip(before, after))
    if total <= 0:
        return None
    return max(0.0, busy - own) / (total / after[2])  # total over the CPUs listed: the window's length in ticks


def free_cores(*, cpus: Collection[int] | None = None, window: float = WINDOW_S, read: Reader = read_text,
               sleep: Callable[[float], None] = time.sleep,
               loadavg: Callable[[], tuple[float, float, float]] | None = getattr(os, "getloadavg", None)) -> int:
    """Cores this process may use less those other processes keep at least half busy now (at least 1); without
    /proc (macOS), less the 1-minute load average beyond this process; without either, all of them."""
    cpus = allowed_cpus() if cpus is None else cpus
    available = len(cpus)
    others = busy_elsewhere(cpus, window=window, read=read, sleep=sleep)
    if others is not None:
        return max(1, available - int(others + 0.5))
    try:
        load = loadavg()[0] if loadavg else None
    except OSError:
        load = None
    if load is None:
        return available
    return max(1, min(available, available - int(load + 0.5) + 1))
