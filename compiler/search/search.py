"""`reidc search`: supernet training, evolutionary search scored by validation accuracy (and,
latency-aware, by latency on the target), measurement of the Pareto front, the chosen
checkpoint compiled and verified. Output directory:

    supernet/                    training state (shared by both modes; resumable)
    accuracy.json                validation scores per architecture (shared by both modes)
    latency-table.json           the per-layer table, its measurements and its error
    <mode>/pareto.json           the Pareto front (validation accuracy vs latency, memory)
    <mode>/pareto.png            its plot
    <mode>/chosen/               the pick as a reidc checkpoint (`reidc compile` takes it)
    <mode>/chosen-<target>/      the pick compiled for the target, verified against PyTorch

<mode> is `latency-aware` or `accuracy-only`.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from frontend.arch import ArchSpec
from frontend.supernet import extract, random_arch, set_arch

from .accuracy import evaluate_candidate, prepare_candidate
from .data import load_dataset
from .evolution import Candidate, evolve, pareto_front, rank
from .latency import LatencyMeter, Scenario, arch_key, interleaved_ms
from .latency_table import LatencyTable, prediction_error, table_archs
from .train import TrainConfig, train_supernet


@dataclass
class SearchOptions:
    latency_aware: bool = True
    dataset: str = "synthetic"
    input_size: tuple[int, int] = (64, 32)
    target: str = "host"
    scenario: str = "mixed:8"
    budget_ms: float | None = None
    margin: float = 0.02              # latency-aware without a budget: accuracy it may give up
    time_limit_s: float = 1200.0
    train_steps: int = 600
    train_share: float = 0.5          # at most this share of the time limit goes to training
    population: int = 12
    generations: int = 6
    measure_front: int = 6            # Pareto candidates measured on the target at the end
    latency_table: str = "all"        # "all": 16 stage patterns measured; "stages": 6, the rest summed
    seed: int = 0
    rpc: tuple[str, str] | None = None
    latency_cache: Path | None = None
    progress: Callable[[str], None] = field(default=lambda s: None)

    @property
    def mode(self) -> str:
        return "latency-aware" if self.latency_aware else "accuracy-only"


def _write_json(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _spec_json(spec: ArchSpec) -> dict:
    return {"split": "".join(map(str, spec.split)), "binary_stages": "".join("1" if b else "0" for b in spec.binary_stages),
            "split_bns": spec.split.count(0), "binary_stage_count": sum(spec.binary_stages)}


class _Search:
    def __init__(self, out: Path, opts: SearchOptions):
        self.out, self.opts, self.say = out, opts, opts.progress
        self.t0 = time.time()
        self.deadline = self.t0 + opts.time_limit_s
        self.data = load_dataset(opts.dataset, opts.input_size, opts.seed, self.say)
        self.cfg = TrainConfig(steps=opts.train_steps, seed=opts.seed)
        self.scenario = Scenario.parse(opts.scenario)
        self.meter = LatencyMeter(opts.target, self.scenario, opts.latency_cache, opts.rpc, progress=self.say)
        self.acc_path = out / "accuracy.json"
        self.acc = json.loads(self.acc_path.read_text()) if self.acc_path.is_file() else {}
        self.template = random_arch(random.Random(0), self.data.input_size, self.data.train.num_ids)
        self.net = None
        self.weight_bytes: dict[str, int] = {}   # arch key -> deployed weight bytes

    # -- accuracy ---------------------------------------------------------------------------
    def accuracy(self, spec: ArchSpec) -> dict:
        k = arch_key(spec)
        if k not in self.acc:
            self.acc[k] = evaluate_candidate(self.net, spec, self.data, self.cfg)
            _write_json(self.acc_path, self.acc)
        return self.acc[k]

    def model(self, spec: ArchSpec):
        """The candidate with inherited weights and recalibrated BNs, as a plain model."""
        return extract(prepare_candidate(self.net, spec, self.data, self.cfg), spec)

    # -- latency ----------------------------------------------------------------------------
    def measure(self, spec: ArchSpec, why: str) -> float:
        hit = self.meter.cached(spec)
        if not hit:
            self.say(f"measuring {why} on {self.meter.preset.name} ({self.scenario.describe()}): compile, verify, time")
        return self.meter.measure(spec, self.model(spec) if not hit else None)["ms"]

    def build_table(self) -> LatencyTable:
        archs = table_archs(self.template, self.scenario, self.opts.latency_table)
        measured = {name: self.measure(spec, f"latency-table entry {name} ({i + 1}/{len(archs)})")
                    for i, (name, spec) in enumerate(archs.items())}
        table = LatencyTable.build(self.template, self.scenario, measured)
        self.table_keys = {arch_key(s) for s in archs.values()}
        self.table_measured = measured
        return table

    def memory(self, spec: ArchSpec) -> int:
        k = arch_key(spec)
        if k not in self.weight_bytes:
            self.weight_bytes[k] = self._memory(spec)
        return self.weight_bytes[k]

    def _memory(self, spec: ArchSpec) -> int:
        from compiler.costs import deployed_weight_bytes
        from compiler.passes.pipeline import run_pipeline
        from frontend.capture import capture_module
        model = extract(self.net, spec)
        g = capture_module(model, (3,) + tuple(spec.input_size), spec.name)
        return deployed_weight_bytes({m: run_pipeline(g, m) for m in ("visible", "infrared", "mixed")})

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> dict:
        o = self.opts
        self.net, steps = train_supernet(self.data, self.cfg, self.out / "supernet",
                                         deadline=self.t0 + o.train_share * o.time_limit_s, progress=self.say)
        table = self.build_table()
        per_measure = max([r["seconds"] for r in self.meter.cache.values() if "seconds" in r] or [20.0])
        reserve = (o.measure_front + 4) * per_measure + 60
        add = table.additive_error()
        self.say(f"latency table ({self.scenario.describe()}): all real {table.patterns['0000']:.2f} ms, all binarized "
                 f"{table.patterns['1111']:.2f} ms" + (
                     f"; per-stage sums would be off by up to {100 * add['max_abs_rel_err']:.0f}% (pattern "
                     f"{add['worst_pattern']}), so patterns are measured whole" if add else " (per-stage sums)"))

        def evaluate(spec):
            a = self.accuracy(spec)
            return Candidate(spec, a["score"], table.predict(spec), a["settings"])

        rng = random.Random(o.seed)
        base = table_archs(self.template, self.scenario, "stages")["binary0000"]
        initial = [base, ArchSpec(**{**base.__dict__, "binary_stages": (True,) * 4})] + [
            random_arch(rng, self.data.input_size, self.data.train.num_ids) for _ in range(o.population - 2)]
        objective = "latency" if o.latency_aware else "accuracy"
        self.say(f"evolution ({o.mode}): population {o.population}, {o.generations} generations"
                 + (f", budget {o.budget_ms} ms" if o.budget_ms else ""))
        cands = evolve(initial, evaluate, objective, o.budget_ms if o.latency_aware else None, o.population,
                       o.generations, o.seed, deadline=self.deadline - reserve, progress=self.say)
        return self.finish(cands, table, steps)

    def pick(self, cands: list[Candidate], measured: dict[str, float]) -> Candidate:
        o = self.opts
        if not o.latency_aware:
            return rank(cands, "accuracy")[0]
        if o.budget_ms is not None:
            for c in rank(cands, "latency", o.budget_ms):
                if c.predicted_ms > 1.15 * o.budget_ms:
                    break
                ms = measured.setdefault(arch_key(c.spec), self.measure(c.spec, "a candidate near the budget"))
                if ms <= o.budget_ms:
                    return c
            raise ValueError(f"no candidate measured within --budget-ms {o.budget_ms} (the fastest predicted: "
                             f"{min(c.predicted_ms for c in cands):.2f} ms); raise the budget")
        best = max(c.score for c in cands)
        ok = [c for c in pareto_front(cands) if c.score >= best - o.margin]
        for c in ok:
            measured.setdefault(arch_key(c.spec), self.measure(c.spec, "a Pareto candidate"))
        return min(ok, key=lambda c: measured[arch_key(c.spec)])

    def compare(self, pick: Candidate, best: Candidate, pick_art: Path) -> dict | None:
        """The latency-aware pick against the most accurate candidate, timed in alternating rounds."""
        from compiler.compile import CompileOptions, compile_checkpoint
        from frontend.checkpoint import save_checkpoint
        if arch_key(best.spec) == arch_key(pick.spec):
            return None
        self.say("timing the pick against the most accurate candidate in alternating rounds")
        with tempfile.TemporaryDirectory(prefix="reidc-ab-") as d:
            save_checkpoint(self.model(best.spec), Path(d) / "ckpt")
            compile_checkpoint(Path(d) / "ckpt", Path(d) / "art", CompileOptions(
                target=self.opts.target, verify=not self.meter.preset.missing_on_host()))
            ms = interleaved_ms({"pick": pick_art, "most_accurate": Path(d) / "art"}, self.scenario,
                                self.data.input_size, rpc=self.opts.rpc)
        return {"pick_ms": ms["pick"], "most_accurate_ms": ms["most_accurate"], "speedup": ms["most_accurate"] / ms["pick"],
                "pick_val_mAP": pick.score, "most_accurate_val_mAP": best.score,
                "most_accurate_arch": _spec_json(best.spec), "timing": "min over 8 alternating rounds of 10 runs"}

    def finish(self, cands: list[Candidate], table: LatencyTable, steps: int) -> dict:
        from compiler.compile import CompileOptions, compile_checkpoint
        from frontend.checkpoint import save_checkpoint
        o = self.opts
        mode_dir = self.out / o.mode
        mode_dir.mkdir(parents=True, exist_ok=True)
        front = sorted(pareto_front(cands), key=lambda c: c.predicted_ms)
        step = max(1, len(front) // max(1, o.measure_front))
        measured: dict[str, float] = {}
        for c in front[::step][:o.measure_front]:
            measured[arch_key(c.spec)] = self.measure(c.spec, "a Pareto candidate")
        pick = self.pick(cands, measured)
        k = arch_key(pick.spec)
        if k not in measured:
            measured[k] = self.measure(pick.spec, "the pick")
        # the table against every measured candidate it was not built from
        error = prediction_error(table, [(c.spec, measured[arch_key(c.spec)]) for c in cands
                                         if arch_key(c.spec) in measured and arch_key(c.spec) not in self.table_keys])
        self.say("evaluating the pick on the test identities")
        test = evaluate_candidate(self.net, pick.spec, self.data, self.cfg, protocol="test")
        chosen = mode_dir / "chosen"
        save_checkpoint(extract(self.net, pick.spec), chosen)
        self.say(f"compiling the pick for {o.target} and verifying it against PyTorch")
        art = mode_dir / f"chosen-{self.meter.preset.name}"
        manifest = compile_checkpoint(chosen, art, CompileOptions(target=o.target, progress=self.say,
                                                                  verify=not self.meter.preset.missing_on_host()))

        ab = self.compare(pick, rank(cands, "accuracy")[0], art) if o.latency_aware else None

        def row(c: Candidate) -> dict:
            key = arch_key(c.spec)
            return {"arch": _spec_json(c.spec), "val_score_mAP": c.score, "val": c.metrics,
                    "predicted_ms": c.predicted_ms, "measured_ms": measured.get(key),
                    "weight_bytes": self.memory(c.spec) if key in measured else None, "key": key}

        front_rows = [row(c) for c in front]
        pick_row = {**row(pick), "test": test["settings"], "test_score_mAP": test["score"],
                    "checkpoint": str(chosen), "artifact": str(art),
                    "verification": manifest["verification"].get("max_rel_err"),
                    "library_bytes": manifest["weights"]["artifact_bytes"]}
        result = {
            "mode": o.mode, "dataset": self.data.name, "input_size": list(self.data.input_size),
            "target": self.meter.setup(), "scenario": self.scenario.describe(), "budget_ms": o.budget_ms,
            "margin": o.margin if o.latency_aware and o.budget_ms is None else None,
            "supernet_steps": steps, "candidates_evaluated": len(cands), "latency_measurements_new": self.meter.measured,
            "accuracy": "validation identities, mAP averaged over the protocol's settings (val_score_mAP); "
                        "the pick also on the test identities",
            "latency": "measured_ms: compiled by reidc and timed on the target; predicted_ms: the per-layer table",
            "pareto_front": front_rows, "pick": pick_row, "pick_vs_most_accurate": ab,
            "latency_table": {**table.to_json(), "measured": self.table_measured, "error": error},
            "seconds": round(time.time() - self.t0, 1),
        }
        _write_json(mode_dir / "pareto.json", result)
        _write_json(self.out / "latency-table.json", result["latency_table"])
        from .plot import plot_pareto
        plot_pareto(result, [c for c in cands], mode_dir / "pareto.png")
        self.say(f"wrote {mode_dir}/pareto.json, pareto.png, chosen/ and {art.name}/")
        return result


def search(out: str | Path, opts: SearchOptions) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return _Search(out, opts).run()
