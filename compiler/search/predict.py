"""What the search predicts a candidate's latency with, and how well it does on candidates it
was not fitted on.

In this process every measurement has its kernels' times, and the per-kernel model
(latency_model.py) predicts; through an RPC tracker only whole-run times come back, and the
latency table (latency_table.py: stage patterns and per-stage split costs) predicts instead.
Held-out candidates (`--latency-holdout N`, drawn at random with the search's seed, none of the
table's) are measured beside the table and never fitted on: their error is the model's figure.
"""
from __future__ import annotations

import random
from typing import Callable

from reidc.frontend.arch import ArchSpec
from reidc.frontend.supernet import random_arch

from .latency import Scenario, arch_key, candidate_kernels
from .latency_model import LatencyModel, held_out_error
from .latency_table import LatencyTable


def holdout_archs(n: int, seed: int, input_size, num_ids: int, exclude: set[str]) -> list[ArchSpec]:
    """`n` random candidates, distinct and none of `exclude` (arch keys), the same for a seed."""
    rng, out, keys = random.Random(seed * 7919 + 1), [], set(exclude)
    for _ in range(100 * max(1, n)):
        if len(out) == n:
            break
        spec = random_arch(rng, input_size, num_ids)
        if arch_key(spec) not in keys:
            keys.add(arch_key(spec))
            out.append(spec)
    return out


class Predictor:
    def __init__(self, table: LatencyTable, records: dict[str, dict], scenario: Scenario, preset,
                 model_of: Callable[[ArchSpec], object]):
        """`records`: the latency records of the table's candidates; `model_of(spec)`: a PyTorch
        network of the candidate (its weights do not matter: only its program's kernels do)."""
        self.table, self.scenario, self.preset, self.model_of = table, scenario, preset, model_of
        with_kernels = [r for r in records.values() if r.get("kernel_times") is not None]
        self.model = (LatencyModel.fit([(r["kernel_times"], r["ms"]) for r in with_kernels])
                      if with_kernels and len(with_kernels) == len(records) else None)
        self._kernels: dict[str, list] = {}
        self.held_out: dict | None = None

    @property
    def name(self) -> str:
        return "the per-kernel model" if self.model else "the latency table"

    def kernels(self, spec: ArchSpec) -> list:
        k = arch_key(spec)
        if k not in self._kernels:
            self._kernels[k] = candidate_kernels(self.model_of(spec), self.scenario.mode, self.preset)
        return self._kernels[k]

    def predict(self, spec: ArchSpec) -> float:
        return self.model.predict(self.kernels(spec)) if self.model else self.table.predict(spec)

    def error(self, measured: list[tuple[ArchSpec, float]]) -> dict:
        """Prediction against measured whole-run times (of candidates not fitted on)."""
        rows = []
        for spec, ms in measured:
            row = {"key": arch_key(spec), "predicted_ms": self.predict(spec), "measured_ms": ms}
            if self.model:
                row["kernels_found"] = self.model.explain(self.kernels(spec))["kernels_found"]
            rows.append(row)
        return held_out_error(rows)

    def evaluate_held_out(self, measured: list[tuple[ArchSpec, float]]) -> dict:
        self.held_out = self.error(measured)
        return self.held_out

    def to_json(self) -> dict:
        return {"predictor": self.name, "model": self.model.to_json() if self.model else None,
                "held_out": self.held_out}
