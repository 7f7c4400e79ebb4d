"""What `reidc tune` says while it runs and how it stays stoppable: the time left (Clock), and
the two MetaSchedule callbacks around each measured batch (Hold takes the write lock before the
records are appended, Progress counts the trials, saves them, releases the lock, prints, and
stops the search on Ctrl-C or when an RPC tracker has no device left)."""
from __future__ import annotations

import time

from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms


def ms_text(secs, missing: str = "-") -> str:
    return f"{secs * 1e3:.3f} ms" if secs else missing


class Clock:
    def __init__(self, total: int):
        self.total, self.done, self.t0 = total, 0, time.monotonic()

    def left_s(self) -> float:
        return (time.monotonic() - self.t0) / max(1, self.done) * max(0, self.total - self.done)


@derived_object
class Hold(ms.measure_callback.PyMeasureCallback):
    """First of a batch's callbacks: take the write lock while the records are appended and the
    trial counts saved, so a second Ctrl-C never cuts a record in half or leaves it uncounted."""

    def __init__(self, watch):
        self.watch = watch

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        self.watch.hold()


@derived_object
class Progress(ms.measure_callback.PyMeasureCallback):
    """Last of a batch's callbacks: count trials and failures, save them, release the write lock,
    print progress; then stop if Ctrl-C was pressed or, with RPC, the tracker has no device left
    for the key."""

    def __init__(self, entry, save, say, label, budget, clock, opts, stop):
        self.entry, self.save, self.say, self.label, self.budget, self.clock = entry, save, say, label, budget, clock
        self.opts, self.stop = opts, stop
        self.abort = None
        self.holding = False

    def hold(self) -> None:
        self.stop.writing.acquire()
        self.holding = True

    def release(self) -> None:
        if self.holding:
            self.holding = False
            self.stop.writing.release()

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
        try:
            n, ok = self._count(builder_results, runner_results)
        finally:
            self.release()
        if self.stop.requested:
            raise RuntimeError("interrupted")  # reaches tune_checkpoint wrapped by TVM
        if self.opts.rpc_tracker and ok < n:
            self._check_devices()

    def _count(self, builder_results, runner_results) -> tuple[int, int]:
        ok = []
        for b, r in zip(builder_results, runner_results):
            if b.error_msg is None and r.error_msg is None and r.run_secs:
                ok.append(sum(float(s) for s in r.run_secs) / len(r.run_secs))
        n = len(runner_results)
        if n == 0:  # MetaSchedule reports an empty batch when the space has nothing new
            return 0, 0
        self.entry["trials"] += n
        self.entry["failed"] += n - len(ok)
        if ok:
            self.entry["best_s"] = min(ok + ([self.entry["best_s"]] if self.entry.get("best_s") else []))
        self.save()
        self.clock.done += n
        best, default = self.entry.get("best_s"), self.entry.get("default_s")
        self.say(f"{self.label}: {self.entry['trials']}/{self.budget} trials ({self.entry['failed']} failed); "
                 f"best searched {ms_text(best)}, reidc default {ms_text(default)}; about {self.clock.left_s() / 60:.1f} min left")
        return n, len(ok)

    def _check_devices(self) -> None:
        from reidc.targets.rpc import tracker_devices
        host, _, port = self.opts.rpc_tracker.rpartition(":")
        if tracker_devices(host, int(port), self.opts.rpc_key) == 0:
            self.abort = (f"no device with key {self.opts.rpc_key!r} is left on the tracker "
                          f"{self.opts.rpc_tracker}; {self.entry['trials']} trials of this task are saved, "
                          "rerun `reidc tune` to resume")
            raise RuntimeError(self.abort)
