"""The time limit of `reidc search`: planned up front from cost estimates, enforced by phase.

A search runs the latency table, supernet training, the evolution and the final phase
(measuring the Pareto front, measuring and compiling the pick, timing it against the most
accurate candidate, fine-tuning the pick and a few other candidates stand-alone). Costs per unit of work come from what earlier runs recorded (the latency
cache's `seconds`, accuracy.json's `seconds`, the supernet's `seconds_per_step`) or from a
probe in this run, and are refined as the run measures them.

The least a run must do to produce a pick: the latency table, `MIN_TRAIN_SHARE` of the training
steps, the two anchor candidates (all real, all binarized) and the final phase for the pick
alone. `Budget.check` raises `TimeLimitError` as soon as the time left cannot hold that, with the
time limit that would hold the whole run. Otherwise training gets what it needs if the full
evolution still fits, else at least `train_share` of the time before the final phase; the
evolution stops where the final phase's reserve starts.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

MIN_TRAIN_SHARE = 0.1     # of --train-steps: below this the supernet ranks candidates at random
ANCHORS = 2               # candidates every run evaluates (all real, all binarized)
COMPILE_PICK = 2.0        # compiling the pick (every modality, verified), in latency measurements
COMPARE = 2.5             # compiling the most accurate candidate and timing both, in measurements
OVERHEAD_S = 5.0          # weight memory of measured candidates, the plot, the JSON files
DEFAULT_MEASURE_S = 20.0  # a latency measurement after the table when none was timed (all cached, untimed)


class TimeLimitError(ValueError):
    """--time-limit cannot hold a run that produces a pick."""


def format_duration(seconds: float) -> str:
    """180 -> '3m', 90 -> '90s', 7200 -> '2h' (the form --time-limit takes)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _min(seconds: float) -> str:
    return f"~{seconds / 60:.1f} min"


@dataclass
class Costs:
    """Seconds per unit of work; None while unknown: counted as free, so that a run is refused
    only for what is known (the search times a step and an evaluation before the table, and
    the table's first measurement tells what a measurement costs)."""
    measure: float | None = None    # a latency measurement: prepare, compile, verify, time
    step: float | None = None       # a supernet training step
    evaluate: float | None = None   # a candidate's validation accuracy (BN recalibration, embedding)
    predict: float | None = None    # a candidate's predicted latency (its kernels listed: latency_model.py)
    arch_step: float | None = None  # a differentiable search's step (a weight and an architecture step)
    test_ratio: float = 1.0         # the test protocol's cost relative to validation


@dataclass
class Work:
    """What the run still has to do."""
    table: int                  # latency-table entries not in the cache
    table_all: bool             # --latency-table all (16 patterns)
    steps_done: int
    steps: int
    evaluations: int            # evaluations of a full evolution not in accuracy.json
    front: int                  # Pareto candidates measured at the end
    compare: bool               # latency-aware: the pick timed against the most accurate candidate
    standalone_steps: int = 0   # the pick's stand-alone fine-tuning (standalone.py)
    standalone_more: int = 0    # the other stand-alone checks' steps, all together
    arch_steps: int = 0         # --method differentiable: its steps (in place of most evaluations)
    predictions: int = 0        # --method differentiable, latency-aware: the expected latency's terms

    @property
    def min_steps(self) -> int:
        return max(0, math.ceil(MIN_TRAIN_SHARE * self.steps) - self.steps_done)

    @property
    def steps_left(self) -> int:
        return max(0, self.steps - self.steps_done)


class Budget:
    def __init__(self, limit_s: float, start: float, work: Work, costs: Costs, train_share: float = 0.5,
                 clock: Callable[[], float] = time.time):
        self.limit_s, self.start, self.end = limit_s, start, start + limit_s
        self.work, self.costs, self.train_share, self.clock = work, costs, train_share, clock

    def left(self) -> float:
        return self.end - self.clock()

    # -- phase estimates (seconds) ------------------------------------------------------------
    def _m(self) -> float:
        return self.costs.measure or 0.0

    def table_s(self) -> float:
        return self.work.table * self._m()

    def train_s(self, minimum: bool = False) -> float:
        steps = self.work.min_steps if minimum else self.work.steps_left
        return steps * (self.costs.step or 0.0)

    def evolve_s(self, minimum: bool = False) -> float:
        """The search proper: the evolution's evaluations, or the differentiable search's
        steps, its latency terms and the evaluations of its argmax candidates."""
        n = min(ANCHORS, self.work.evaluations) if minimum else self.work.evaluations
        diff = 0.0 if minimum else (self.work.arch_steps * (self.costs.arch_step or 0.0)
                                    + self.work.predictions * (self.costs.predict or 0.0))
        return n * ((self.costs.evaluate or 0.0) + (self.costs.predict or 0.0)) + diff

    def pick_s(self) -> float:
        """Measuring, fine-tuning stand-alone, testing and compiling the pick: what the final phase cannot drop."""
        ev = self.costs.evaluate or 0.0
        return (1 + COMPILE_PICK) * self._m() + self.costs.test_ratio * ev + OVERHEAD_S + (
            self.work.standalone_steps * (self.costs.step or 0.0) + (1 + self.costs.test_ratio) * ev
            if self.work.standalone_steps else 0.0)

    def compare_s(self) -> float:
        return COMPARE * self._m() if self.work.compare else 0.0

    def final_s(self, minimum: bool = False) -> float:
        if minimum:
            return self.pick_s()
        return self.pick_s() + self.work.front * self._m() + self.compare_s() + self.standalone_more_s()

    def standalone_more_s(self) -> float:
        return self.work.standalone_more * (self.costs.step or 0.0)

    def need_s(self) -> float:
        """The least the rest of the run takes."""
        return self.table_s() + self.train_s(True) + self.evolve_s(True) + self.final_s(True)

    def full_s(self) -> float:
        return self.table_s() + self.train_s() + self.evolve_s() + self.final_s()

    # -- the plan ------------------------------------------------------------------------------
    def check(self) -> None:
        """Raise TimeLimitError when the time left cannot hold a run that produces a pick."""
        need, left = self.need_s(), self.left()
        if need > left:
            raise TimeLimitError(self.message(need, left))

    def suggest(self) -> str:
        """A --time-limit that holds the whole run (20% spare), in whole minutes."""
        b = self if self.costs.measure else Budget(self.limit_s, self.start, self.work, replace(
            self.costs, measure=DEFAULT_MEASURE_S), self.train_share, self.clock)   # a guess until measured
        total = (self.clock() - self.start) + b.full_s()
        return f"{max(1, math.ceil(1.2 * total / 60))}m"

    def message(self, need: float, left: float) -> str:
        w = self.work
        parts = []
        if self.table_s():
            parts.append(f"the latency table ({w.table} compiles, {_min(self.table_s())})")
        if self.train_s(True):
            parts.append(f"training (at least {w.min_steps} of {w.steps} steps, {_min(self.train_s(True))})")
        if self.evolve_s(True):
            parts.append(f"evaluating the first {min(ANCHORS, w.evaluations)} candidates ({_min(self.evolve_s(True))})")
        parts.append(f"measuring and compiling the pick ({_min(self.final_s(True))})")
        listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        how = (["lower --train-steps"] if w.steps_left else []) + (
            ["use --latency-table stages"] if w.table_all and w.table else [])
        return (f"--time-limit {format_duration(self.limit_s)} leaves no time to evaluate candidates: {listed} "
                f"need {_min(need)}, {_min(max(0.0, left))} is left; about {self.suggest()} would do"
                + (f", or {' / '.join(how)}" if how else ""))

    def final_reserve(self) -> float:
        """Time kept for the final phase: all of it if the rest of the least run still fits."""
        full = self.table_s() + self.train_s(True) + self.evolve_s(True) + self.final_s()
        return self.final_s() if full <= self.left() else self.final_s(True)

    def train_deadline(self) -> float:
        """When training stops (time.time()): all its steps if the full evolution still fits
        after them, else at least its share of the time before the final phase; never into the
        least evolution."""
        now = self.clock()
        room = self.end - now - self.table_s() - self.final_reserve()     # training and evolution
        cap = room - self.evolve_s(True)
        if self.train_s() + self.evolve_s() <= room:
            return now + cap
        give = max(self.train_s(True), self.train_share * room, room - self.evolve_s())
        return now + max(0.0, min(self.train_s(), cap, give))

    def evolve_deadline(self) -> float:
        return self.end - self.final_reserve()

    def room_for_front(self) -> bool:
        """Whether one more Pareto candidate may be measured and the pick still fits."""
        return self.left() >= self._m() + self.final_s(True) + self.compare_s()

    def room_for_compare(self) -> bool:
        return self.left() >= self.compare_s()
