"""Evolutionary search over candidates (pure: the caller supplies accuracy and latency).

Each generation keeps the best `population // 2` candidates seen so far as parents and breeds
new, unseen children by uniform crossover and mutation (every decision flips with
probability 1/decisions, at least one flips). "Best" depends on the objective:
- accuracy: highest validation score;
- latency (no budget): non-dominated sorting on (score up, predicted latency down), then
  score within a front (the NSGA-II ranking without crowding);
- latency with a budget: candidates predicted within the budget first, by score; the rest by
  predicted latency (closest to feasible first).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from typing import Callable

from reidc.frontend.arch import ArchSpec

from .latency import arch_key


@dataclass
class Candidate:
    spec: ArchSpec
    score: float            # validation accuracy (mAP)
    predicted_ms: float
    metrics: dict


def mutate(spec: ArchSpec, rng: random.Random) -> ArchSpec:
    genes = list(spec.split) + [int(b) for b in spec.binary_stages]
    flips = [i for i in range(len(genes)) if rng.random() < 1.0 / len(genes)] or [rng.randrange(len(genes))]
    for i in flips:
        genes[i] = 1 - genes[i]
    n = len(spec.split)
    return replace(spec, split=tuple(genes[:n]), binary_stages=tuple(bool(g) for g in genes[n:]))


def crossover(a: ArchSpec, b: ArchSpec, rng: random.Random) -> ArchSpec:
    pick = lambda x, y: tuple(x[i] if rng.random() < 0.5 else y[i] for i in range(len(x)))  # noqa: E731
    return replace(a, split=pick(a.split, b.split), binary_stages=pick(a.binary_stages, b.binary_stages))


def dominates(p: Candidate, q: Candidate) -> bool:
    return (p.score >= q.score and p.predicted_ms <= q.predicted_ms
            and (p.score > q.score or p.predicted_ms < q.predicted_ms))


def pareto_front(cands: list[Candidate]) -> list[Candidate]:
    """Candidates no other one beats in both validation accuracy and predicted latency."""
    return [c for c in cands if not any(dominates(o, c) for o in cands)]


def rank(cands: list[Candidate], objective: str, budget_ms: float | None = None) -> list[Candidate]:
    if objective == "accuracy":
        return sorted(cands, key=lambda c: -c.score)
    if budget_ms is not None:
        ok = sorted((c for c in cands if c.predicted_ms <= budget_ms), key=lambda c: -c.score)
        return ok + sorted((c for c in cands if c.predicted_ms > budget_ms), key=lambda c: c.predicted_ms)
    out, rest = [], list(cands)
    while rest:
        front = pareto_front(rest)
        out += sorted(front, key=lambda c: -c.score)
        rest = [c for c in rest if c not in front]
    return out


def evolve(initial: list[ArchSpec], evaluate: Callable[[ArchSpec], Candidate], objective: str,
           budget_ms: float | None, population: int, generations: int, seed: int,
           deadline: float | None = None, progress: Callable[[str], None] = lambda s: None,
           minimum: int = 0) -> list[Candidate]:
    """Every candidate evaluated, in order. Stops after `generations` or at the deadline; the
    first `minimum` initial candidates are evaluated whatever the deadline."""
    rng = random.Random(seed)
    seen: dict[str, Candidate] = {}

    def add(spec):
        k = arch_key(spec)
        if k not in seen:
            seen[k] = evaluate(spec)
        return seen[k]

    for i, spec in enumerate(initial):
        if i >= minimum and deadline and time.time() > deadline:
            break
        add(spec)
    for gen in range(generations):
        if len(seen) < 2:
            break
        if deadline and time.time() > deadline:
            progress(f"time limit: evolution stops after {gen} of {generations} generations")
            break
        parents = rank(list(seen.values()), objective, budget_ms)[:max(2, population // 2)]
        children, tries = [], 0
        while len(children) < population - len(parents) and tries < 50 * population:
            tries += 1
            a, b = rng.sample(parents, 2)
            child = mutate(crossover(a.spec, b.spec, rng), rng)
            k = arch_key(child)
            if k not in seen and all(arch_key(c) != k for c in children):
                children.append(child)
        for child in children:
            if deadline and time.time() > deadline:
                break
            add(child)
        best = rank(list(seen.values()), objective, budget_ms)[0]
        progress(f"generation {gen + 1}/{generations}: {len(seen)} candidates; best {best.score:.4f} mAP at "
                 f"{best.predicted_ms:.2f} ms predicted")
    return list(seen.values())
