"""Each kernel of a compiled CPU program timed alone: one instrumented run records every kernel
call with its arguments (the VM's own instrument hook: no rebuild), then each distinct call is
timed on those arguments, the kernels taking turns in alternating rounds. `reidc profile` and
the search's latency model (compiler/search/latency_model.py) read programs this way."""
from __future__ import annotations

import time

from .runtime import Compiled


def calls_per_round(func, args, budget_s: float) -> int:
    """How many calls of func(*args) take about budget_s (after one warm-up call)."""
    func(*args)
    t0 = time.perf_counter()
    func(*args)
    return max(1, int(budget_s / max(time.perf_counter() - t0, 1e-6)))


def time_kernels(calls: dict[tuple, list], budget_s: float = 0.05, rounds: int = 3) -> dict[tuple, float]:
    """Seconds per call of each recorded kernel alone on its recorded arguments: the best of
    `rounds` rounds of about budget_s each, the kernels taking turns within a round (so the
    slow drift of a shared machine's speed hits them alike)."""
    number = {k: calls_per_round(f, a, budget_s) for k, (f, a, _) in calls.items()}
    best = {k: float("inf") for k in calls}
    for _ in range(rounds):
        for k, (func, args, _) in calls.items():
            t0 = time.perf_counter()
            for _ in range(number[k]):
                func(*args)
            best[k] = min(best[k], (time.perf_counter() - t0) / number[k])
    return best


def record_kernels(comp: Compiled, entry: str, arrays) -> tuple[dict[tuple, list], int]:
    """One instrumented run of `entry` on `arrays` (the VM's instrument hook: no rebuild):
    {(kernel name, argument shapes and dtypes): [func, args, calls]} in first-call order, and
    the number of VM builtin calls."""
    return record_vm_kernels(comp.executor.vm, entry, arrays)


def record_vm_kernels(vm, entry: str, arrays) -> tuple[dict[tuple, list], int]:
    """`record_kernels` on a Relax VirtualMachine itself."""
    import tvm
    tensors = [tvm.runtime.tensor(a) for a in arrays]
    vm[entry](*tensors)   # warm-up: the first call allocates
    calls: dict[tuple, list] = {}
    builtins = {"calls": 0}

    def record(func, name, before_run, ret, *args):
        if not before_run:
            return 0
        if name.startswith("vm.builtin"):
            builtins["calls"] += 1
            return 0
        key = (name, tuple((tuple(int(d) for d in a.shape), str(a.dtype)) for a in args if hasattr(a, "shape")))
        if key not in calls:
            calls[key] = [func, list(args), 0]
        calls[key][2] += 1
        return 0
    vm.set_instrument(record)
    try:
        vm[entry](*tensors)
    finally:
        vm.set_instrument(None)
    return calls, builtins["calls"]
