"""A latency table from measured candidates, to predict any candidate cheaply.

Entries, all measured end to end on the target in the scenario:
- `patterns[b1b2b3b4]`: every one of the 16 real/binarized stage patterns with all BNs shared.
  Binarization is measured per pattern, not per stage, because it is not additive: at batch 1
  a real network streams its float weights from memory (45 MB for ResNet-18) and binarizing
  a stage both removes compute and moves the weights across cache sizes, so the saving of two
  stages is not the sum of their savings (measured: `additive_error`, the error of per-stage
  sums on the 16 patterns, e.g. a negative latency predicted for the fully binarized net).
- `split[s][real|binary]`, mixed scenarios only: what one split BN of stage s costs (the stem
  BN counts with stage 1), from stage s with every BN split vs none, divided by its BN count;
  `real` in the all-real network, `binary` in the all-binarized one (before a sign a split BN
  is a per-modality threshold, after a float conv a second weight set or a per-sample affine).
  Each is measured in the fastest context it can be, where the VM's timing noise (5-15%) is
  smallest in milliseconds; a negative difference is noise (a split adds work) and counts 0.
In a single-modality scenario a split BN folds into its conv like a shared one, so split
entries are zero by construction (the error report checks that claim on measured candidates).
Prediction: the pattern's latency + the split entries of the candidate's split BNs.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace

from reidc.compiler.ir import RunMode
from reidc.frontend.arch import ArchSpec, bn_names
from reidc.frontend.supernet import stage_index as stage_of

from .latency import Scenario

PATTERNS = ["".join(bits) for bits in itertools.product("01", repeat=4)]


def pattern(spec: ArchSpec) -> str:
    return "".join("1" if b else "0" for b in spec.binary_stages)


def base_arch(template: ArchSpec) -> ArchSpec:
    return replace(template, split=(1,) * len(template.split), binary_stages=(False,) * 4)


def table_archs(template: ArchSpec, scenario: Scenario, patterns: str = "all") -> dict[str, ArchSpec]:
    """The candidates the table is built from: 16 patterns, or with `patterns="stages"` the
    all-real one, one per binarized stage and the all-binarized one (6; the rest summed per
    stage, no faster than all-binarized: cheaper and less accurate); plus 8 for a mixed scenario."""
    if patterns not in ("all", "stages"):
        raise ValueError(f"--latency-table {patterns!r}: expected all or stages")
    base = base_arch(template)
    names = bn_names(template.depth, template.family)
    chosen = PATTERNS if patterns == "all" else ["0000"] + [_single(s) for s in range(4)] + ["1111"]
    out = {f"binary{p}": replace(base, binary_stages=tuple(c == "1" for c in p)) for p in chosen}
    if scenario.mode == RunMode.MIXED:
        for s in range(4):
            split = tuple(0 if stage_of(n) == s else 1 for n in names)
            out[f"split{s + 1}-real"] = replace(base, split=split)
            out[f"split{s + 1}-binary"] = replace(base, split=split, binary_stages=(True,) * 4)
    return out


def _single(s: int) -> str:
    return "".join("1" if i == s else "0" for i in range(4))


@dataclass
class LatencyTable:
    scenario: str
    patterns: dict[str, float]                                       # stage pattern -> ms
    measured_patterns: list[str] = field(default_factory=list)
    split_ms: list[dict[str, float]] = field(default_factory=list)   # per stage: {"real": ms/BN, "binary": ms/BN}
    bns_per_stage: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, template: ArchSpec, scenario: Scenario, measured: dict[str, float]) -> "LatencyTable":
        names = bn_names(template.depth, template.family)
        per_stage = [sum(stage_of(n) == s for n in names) for s in range(4)]
        measured_patterns = [p for p in PATTERNS if f"binary{p}" in measured]
        base = measured["binary0000"]
        delta = [measured[f"binary{_single(s)}"] - base for s in range(4)]
        # an unmeasured pattern: the per-stage sum, never below the all-binarized network (the
        # sum alone can go negative: the savings of single stages overlap)
        floor = measured["binary1111"]
        patterns = {p: measured.get(f"binary{p}", max(floor, base + sum(d for d, c in zip(delta, p) if c == "1")))
                    for p in PATTERNS}
        split = []
        for s in range(4):
            if scenario.mode == RunMode.MIXED:
                split.append({"real": max(0.0, measured[f"split{s + 1}-real"] - patterns["0000"]) / per_stage[s],
                              "binary": max(0.0, measured[f"split{s + 1}-binary"] - patterns["1111"]) / per_stage[s]})
            else:
                split.append({"real": 0.0, "binary": 0.0})
        return cls(str(scenario), patterns, measured_patterns, split, per_stage)

    def predict(self, spec: ArchSpec) -> float:
        ms = self.patterns[pattern(spec)]
        for n, v in zip(bn_names(spec.depth, spec.family), spec.split):
            if v == 0:
                s = stage_of(n)
                ms += self.split_ms[s]["binary" if spec.binary_stages[s] else "real"]
        return ms

    def additive_error(self) -> dict | None:
        """How wrong per-stage binarization entries would be: base + the sum of single-stage
        savings, against each measured pattern (None when only those were measured)."""
        if len(self.measured_patterns) <= 5:  # pragma: no cover (tables always measure 6 or 16)
            return None
        base = self.patterns["0000"]
        delta = [self.patterns[_single(s)] - base for s in range(4)]
        rows = {p: (base + sum(d for d, c in zip(delta, p) if c == "1"), self.patterns[p]) for p in self.measured_patterns}
        errs = {p: (pred - ms) / ms for p, (pred, ms) in rows.items()}
        worst = max(errs, key=lambda p: abs(errs[p]))
        return {"max_abs_rel_err": abs(errs[worst]), "worst_pattern": worst, "predicted_ms": rows[worst][0],
                "measured_ms": rows[worst][1]}

    def rows(self) -> list[dict]:
        out = [{"entry": f"stages binarized {p} (all BNs shared)", "ms": ms,
                "measured": p in self.measured_patterns} for p, ms in self.patterns.items()]
        for s in range(4):
            for kind in ("real", "binary"):
                out.append({"entry": f"split one BN of stage {s + 1} ({kind} stage)", "ms": self.split_ms[s][kind],
                            "bns": self.bns_per_stage[s]})
        return out

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "patterns_ms": self.patterns, "split_ms_per_bn": self.split_ms,
                "bns_per_stage": self.bns_per_stage, "additive_stage_model": self.additive_error(),
                "rows": self.rows()}


def prediction_error(table: LatencyTable, measured: list[tuple[ArchSpec, float]]) -> dict:
    """The table against measured end-to-end latencies of candidates it was not built from."""
    rows = [{"predicted_ms": table.predict(s), "measured_ms": m} for s, m in measured]
    for r in rows:
        r["rel_err"] = (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
    errs = [abs(r["rel_err"]) for r in rows]
    return {"candidates": len(rows), "mean_abs_rel_err": sum(errs) / len(errs) if errs else None,
            "max_abs_rel_err": max(errs) if errs else None, "rows": rows}
