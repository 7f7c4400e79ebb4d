"""A per-layer latency table from a few measured candidates, to predict any candidate cheaply.

Layers are grouped by stage (the stem BN goes with stage 1). Entries, all measured end to end
on the target in the scenario, each against the all-real all-shared base network:
- `binary[s]`: what binarizing stage s changes (base vs base with stage s binarized);
- `split[s][real|binary]`, mixed scenarios only: what one split BN of stage s costs, from the
  stage with every BN split vs none, divided by its BN count, once with the stage real and
  once binarized (a split before a sign is a per-modality threshold, after a float conv a
  second weight set or a per-sample affine: different costs).
In a single-modality scenario a split BN folds into its conv like a shared one, so split
entries are zero by construction (the error report checks that claim with measured
candidates). Prediction: base + the entries of the candidate's choices (additive).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from frontend.arch import ArchSpec, bn_names

from .latency import Scenario


def stage_of(bn: str) -> int:
    return 0 if bn == "bn1" else int(bn.split(".")[0][len("layer"):]) - 1


def base_arch(template: ArchSpec) -> ArchSpec:
    return replace(template, split=(1,) * len(template.split), binary_stages=(False,) * 4)


def table_archs(template: ArchSpec, scenario: Scenario) -> dict[str, ArchSpec]:
    """The candidates the table is built from (5, or 13 for a mixed scenario)."""
    base = base_arch(template)
    names = bn_names(template.depth, template.family)
    out = {"base": base}
    for s in range(4):
        binary = tuple(i == s for i in range(4))
        out[f"binary{s + 1}"] = replace(base, binary_stages=binary)
        if scenario.mode == "mixed":
            split = tuple(0 if stage_of(n) == s else 1 for n in names)
            out[f"split{s + 1}-real"] = replace(base, split=split)
            out[f"split{s + 1}-binary"] = replace(base, split=split, binary_stages=binary)
    return out


@dataclass
class LatencyTable:
    scenario: str
    base_ms: float
    binary_ms: list[float]                                   # per stage
    split_ms: list[dict[str, float]] = field(default_factory=list)  # per stage: {"real": ms/BN, "binary": ms/BN}
    bns_per_stage: list[int] = field(default_factory=list)

    @classmethod
    def build(cls, template: ArchSpec, scenario: Scenario, measured: dict[str, float]) -> "LatencyTable":
        names = bn_names(template.depth, template.family)
        per_stage = [sum(stage_of(n) == s for n in names) for s in range(4)]
        base = measured["base"]
        binary = [measured[f"binary{s + 1}"] - base for s in range(4)]
        split = []
        for s in range(4):
            if scenario.mode == "mixed":
                split.append({"real": (measured[f"split{s + 1}-real"] - base) / per_stage[s],
                              "binary": (measured[f"split{s + 1}-binary"] - measured[f"binary{s + 1}"]) / per_stage[s]})
            else:
                split.append({"real": 0.0, "binary": 0.0})
        return cls(str(scenario), base, binary, split, per_stage)

    def predict(self, spec: ArchSpec) -> float:
        ms = self.base_ms
        names = bn_names(spec.depth, spec.family)
        for s in range(4):
            b = spec.binary_stages[s]
            ms += self.binary_ms[s] if b else 0.0
            n_split = sum(1 for n, v in zip(names, spec.split) if stage_of(n) == s and v == 0)
            ms += n_split * self.split_ms[s]["binary" if b else "real"]
        return ms

    def rows(self) -> list[dict]:
        out = [{"entry": "base (all real, all shared)", "ms": self.base_ms}]
        for s in range(4):
            out.append({"entry": f"binarize stage {s + 1}", "ms": self.binary_ms[s]})
            for kind in ("real", "binary"):
                out.append({"entry": f"split one BN of stage {s + 1} ({kind} stage)", "ms": self.split_ms[s][kind],
                            "bns": self.bns_per_stage[s]})
        return out

    def to_json(self) -> dict:
        return {"scenario": self.scenario, "base_ms": self.base_ms, "binary_ms": self.binary_ms,
                "split_ms_per_bn": self.split_ms, "bns_per_stage": self.bns_per_stage, "rows": self.rows()}


def prediction_error(table: LatencyTable, measured: list[tuple[ArchSpec, float]]) -> dict:
    """The table against measured end-to-end latencies of candidates it was not built from."""
    rows = [{"predicted_ms": table.predict(s), "measured_ms": m} for s, m in measured]
    for r in rows:
        r["rel_err"] = (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
    errs = [abs(r["rel_err"]) for r in rows]
    return {"candidates": len(rows), "mean_abs_rel_err": sum(errs) / len(errs) if errs else None,
            "max_abs_rel_err": max(errs) if errs else None, "rows": rows}
