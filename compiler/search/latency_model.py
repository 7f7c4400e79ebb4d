"""A candidate's latency from its kernels (nn-Meter style), fitted on measured programs.

A measured program (latency.py) records its whole-run time and, per kernel TVM fused for it
(compiler/lower/kernel_list.py: keyed by the PrimFunc's structural hash, as tuning keys them),
its calls per run and its time per call alone on the program's own arguments (profile.py: the
kernels taking turns in alternating rounds). A candidate's program is listed without building
it (legalise and fuse: about a second), and

    predicted ms = a x sum over its kernels of calls x t(kernel) + b

t(kernel): the median over measured programs that ran the kernel of its time per call; for a
kernel no measured program ran, one with the same family (TVM's name without its numbering) and
argument shapes, else its family's median time per multiply-accumulate x its MACs (convs), else
its family's median time per call; a kernel of an unseen family counts 0 and is reported.
a, b: least squares of the relative error of the measured programs' whole-run times on their
kernel sums (so fast and slow candidates weigh alike): the
residual a whole run adds to kernels alone (the VM's calls and allocations, caches cold from the
previous kernel). A split BN's cost by position is not a table entry here: it is what its
kernels (a conv with a second weight set, a per-sample affine, a per-modality threshold) cost
where the candidate runs them.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import numpy as np

from reidc.compiler.lower.kernel_list import Kernel, family

WITHIN = 0.10    # the share of held-out candidates predicted within +-10% is the model's figure of merit


def shape_key(k: Kernel | dict) -> str:
    fam, shapes = (k.family, k.shapes) if isinstance(k, Kernel) else (family(k["name"]), k["shapes"])
    return fam + "|" + ";".join(",".join(s) for s in shapes)


def kernel_record(k: Kernel, ms: float) -> dict:
    """What a latency-cache entry keeps per kernel (JSON)."""
    return {"key": k.key, "name": k.name, "calls": k.calls, "ms": ms, "macs": k.macs,
            "shapes": [list(s) for s in k.shapes]}


def record_problem(kernels) -> str | None:
    """Why a cache entry's kernel list cannot be used (None if it can): the cache is input."""
    if not isinstance(kernels, list):
        return f"kernels is a JSON {type(kernels).__name__}, not a list"
    for r in kernels:
        ok = (isinstance(r, dict) and isinstance(r.get("key"), str) and isinstance(r.get("name"), str)
              and type(r.get("calls")) is int and r["calls"] >= 1 and type(r.get("ms")) in (int, float)
              and np.isfinite(r["ms"]) and r["ms"] >= 0 and (r.get("macs") is None or type(r["macs"]) is int)
              and isinstance(r.get("shapes"), list)
              and all(isinstance(s, list) and all(isinstance(d, str) for d in s) for s in r["shapes"]))
        if not ok:
            return f"a kernel entry {str(r)[:80]} is not {{key, name, calls >= 1, ms >= 0, macs, shapes}}"
    return None


@dataclass
class LatencyModel:
    times: dict[str, float]                  # kernel key -> ms per call
    by_shape: dict[str, float]               # family|shapes -> ms per call
    per_mac: dict[str, float]                # family -> ms per multiply-accumulate
    per_family: dict[str, float]             # family -> ms per call
    a: float = 1.0
    b: float = 0.0
    programs: int = 0
    fit_rows: list[dict] = field(default_factory=list)

    @classmethod
    def fit(cls, programs: list[tuple[list[dict], float]]) -> "LatencyModel":
        """`programs`: (kernel records, measured whole-run ms) of each measured program."""
        if not programs:
            raise ValueError("a latency model needs at least one measured program")
        seen: dict[str, list[float]] = {}
        shaped: dict[str, list[float]] = {}
        macs: dict[str, list[float]] = {}
        fams: dict[str, list[float]] = {}
        for kernels, _ in programs:
            for r in kernels:
                seen.setdefault(r["key"], []).append(r["ms"])
                shaped.setdefault(shape_key(r), []).append(r["ms"])
                fams.setdefault(family(r["name"]), []).append(r["ms"])
                if r.get("macs"):
                    macs.setdefault(family(r["name"]), []).append(r["ms"] / r["macs"])
        med = {k: statistics.median(v) for k, v in seen.items()}
        model = cls(med, {k: statistics.median(v) for k, v in shaped.items()},
                    {k: statistics.median(v) for k, v in macs.items()},
                    {k: statistics.median(v) for k, v in fams.items()}, programs=len(programs))
        sums = np.array([sum(r["calls"] * med[r["key"]] for r in kernels) for kernels, _ in programs])
        whole = np.array([ms for _, ms in programs])
        if len(programs) >= 3 and np.ptp(sums) > 0:   # least relative squares: each row over its measured ms
            a, b = np.linalg.lstsq(np.stack([sums, np.ones_like(sums)], 1) / whole[:, None], np.ones_like(whole),
                                   rcond=None)[0]
        else:
            a, b = None, None
        if a is None or a <= 0:       # too few programs, or a fit that says nothing: the mean ratio
            a, b = float(np.mean(whole / np.maximum(sums, 1e-9))), 0.0
        model.a, model.b = float(a), float(b)
        model.fit_rows = [{"kernels_ms": float(s), "measured_ms": float(m), "predicted_ms": float(model.a * s + model.b)}
                          for s, m in zip(sums, whole)]
        return model

    def kernel_ms(self, k: Kernel) -> tuple[float, str]:
        """(ms per call, how it was found): key | shapes | macs | family | unknown."""
        if k.key in self.times:
            return self.times[k.key], "key"
        if shape_key(k) in self.by_shape:
            return self.by_shape[shape_key(k)], "shapes"
        if k.macs and k.family in self.per_mac:
            return self.per_mac[k.family] * k.macs, "macs"
        if k.family in self.per_family:
            return self.per_family[k.family], "family"
        return 0.0, "unknown"

    def explain(self, kernels: list[Kernel]) -> dict:
        """The prediction with its parts: the kernel sum, and how many kernels were found how."""
        total, how = 0.0, {}
        for k in kernels:
            ms, h = self.kernel_ms(k)
            total += k.calls * ms
            how[h] = how.get(h, 0) + 1
        return {"predicted_ms": self.a * total + self.b, "kernels_ms": total, "kernels_found": how}

    def predict(self, kernels: list[Kernel]) -> float:
        return self.explain(kernels)["predicted_ms"]

    def to_json(self) -> dict:
        errs = [abs(r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"] for r in self.fit_rows]
        return {"how": "a x (sum of calls x ms per call of the candidate's kernels) + b (latency_model.py)",
                "a": self.a, "b_ms": self.b, "programs": self.programs, "kernels": len(self.times),
                "fit_mean_abs_rel_err": float(np.mean(errs)) if errs else None, "fit": self.fit_rows}


def held_out_error(rows: list[dict]) -> dict:
    """Rows of {"predicted_ms", "measured_ms", ...} of candidates the model was not fitted on:
    mean and max relative error, and the share within +-10%."""
    for r in rows:
        r["rel_err"] = (r["predicted_ms"] - r["measured_ms"]) / r["measured_ms"]
    errs = [abs(r["rel_err"]) for r in rows]
    return {"candidates": len(rows), "mean_abs_rel_err": float(np.mean(errs)) if errs else None,
            "max_abs_rel_err": max(errs) if errs else None,
            "within_10pct": sum(e <= WITHIN + 1e-12 for e in errs) / len(errs) if errs else None, "rows": rows}
