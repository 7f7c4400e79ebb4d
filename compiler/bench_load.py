"""How busy the machine was with other work while a benchmark ran (Linux /proc; None elsewhere).

Isolating the engines from each other does nothing against other processes (or, on a VM, the
hypervisor's other guests: steal time). `OthersMeter` measures the CPU used by everything but
this process and the given workers over a span, in cores on average, so a report can say
when its figures come from a busy machine.
"""
from __future__ import annotations

import os
import time

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _busy_s() -> float | None:
    """Seconds all CPUs spent not idle (user, nice, system, irq, softirq, steal) since boot."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / _TICK


def _pid_cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) of a live process; 0 once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


class OthersMeter:
    """`start()` ... `cores()`: CPU cores used on average by other processes in between."""

    def __init__(self, pids=()):
        self.pids = tuple(pids)

    def _ours_s(self) -> float:
        t = os.times()
        return t.user + t.system + sum(_pid_cpu_s(p) for p in self.pids)

    def start(self) -> "OthersMeter":
        self.t0, self.busy0, self.ours0 = time.monotonic(), _busy_s(), self._ours_s()
        return self

    def cores(self) -> float | None:
        busy = _busy_s()
        if busy is None or self.busy0 is None:
            return None
        wall = max(time.monotonic() - self.t0, 1e-3)
        return max(0.0, (busy - self.busy0) - (self._ours_s() - self.ours0)) / wall
