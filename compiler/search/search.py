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

<mode> is `latency-aware` or `accuracy-only`. `-o` may name a missing or empty folder or one
that holds only these (a rerun resumes): files.py. The time limit covers the whole run:
budget.py plans it.
"""
from __future__ import annotations

import random
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from reidc.compiler.base.atomic import OutputError, atomic_write_json
from reidc.compiler.ir import MODEL_MODES
from reidc.frontend.arch import ArchSpec
from reidc.frontend.supernet import extract, random_arch

from .accuracy import evaluate_candidate, prepare_candidate, score_model
from .standalone import check, finetune, kendall_tau
from .budget import ANCHORS, DEFAULT_MEASURE_S, OVERHEAD_S, Budget, Costs, TimeLimitError, Work
from reidc.compiler.datasets import load_dataset
from reidc.compiler.datasets.uncertainty import compare
from .evolution import Candidate, evolve, pareto_front, rank
from .files import guard_search_dir, make_dir, read_accuracy
from .latency import LatencyMeter, Scenario, arch_key, interleaved_ms
from .latency_table import LatencyTable, prediction_error, table_archs
from .losses import DEFAULT_OBJECTIVE, check_objective
from .train import TrainConfig, load_supernet, probe_step_seconds, read_record, seconds_per_step, train_supernet


@dataclass
class SearchOptions:
    latency_aware: bool = True
    dataset: str = "synthetic"
    input_size: tuple[int, int] = (64, 32)
    target: str = "host"
    scenario: str = "mixed:8"
    budget_ms: float | None = None
    margin: float | None = None       # latency-aware without a budget: mAP it may give up; None: any candidate
                                      # validation cannot tell from the most accurate (paired bootstrap)
    time_limit_s: float = 1200.0
    train_steps: int = 600
    train_share: float = 0.5          # training's share of the time limit when not all of it fits
    population: int = 12
    generations: int = 6
    measure_front: int = 6            # Pareto candidates measured on the target at the end
    latency_table: str = "all"        # "all": 16 stage patterns measured; "stages": 6, the rest summed
    seed: int = 0
    rpc: tuple[str, str] | None = None
    latency_cache: Path | None = None
    objective: str = DEFAULT_OBJECTIVE    # the supernet's training loss: "cmnas" | "reidc" (losses.py)
    standalone_steps: int | None = None   # the pick's stand-alone fine-tuning; None: a quarter of train_steps
    standalone_check: int = 4             # candidates fine-tuned stand-alone (the pick included) for Kendall tau
    progress: Callable[[str], None] = field(default=lambda s: None)

    @property
    def finetune_steps(self) -> int:
        return max(1, self.train_steps // 4) if self.standalone_steps is None else self.standalone_steps

    @property
    def mode(self) -> str:
        return "latency-aware" if self.latency_aware else "accuracy-only"


def _spec_json(spec: ArchSpec) -> dict:
    return {"split": "".join(map(str, spec.split)), "binary_stages": "".join("1" if b else "0" for b in spec.binary_stages),
            "split_bns": spec.split.count(0), "binary_stage_count": sum(spec.binary_stages)}


def _evaluations(o: SearchOptions) -> int:
    """Evaluations of a full evolution: the initial population, then the children per generation."""
    return o.population + o.generations * max(0, o.population - max(2, o.population // 2))


class _Search:
    def __init__(self, out: Path, opts: SearchOptions):
        self.t0 = time.time()
        self.out, self.opts, self.say = out, opts, opts.progress
        # inputs first, cheapest first: a bad file is reported before minutes of work
        check_objective(opts.objective)
        if opts.standalone_steps is not None and opts.standalone_steps < 0:
            raise ValueError(f"--standalone-steps {opts.standalone_steps}: expected 0 (none) or more")
        if opts.standalone_check < 1:
            raise ValueError(f"--standalone-check {opts.standalone_check}: expected 1 (the pick alone) or more")
        self.scenario = Scenario.parse(opts.scenario)
        table_archs(random_arch(random.Random(0), opts.input_size, 8), self.scenario, opts.latency_table)  # checks it
        self.acc_path = out / "accuracy.json"
        self.acc = read_accuracy(self.acc_path)
        record = read_record(out / "supernet")
        self.meter = LatencyMeter(opts.target, self.scenario, opts.latency_cache, opts.rpc, progress=self.say)
        # validation ids held out of training: the search scores candidates on them (SYSU-MM01's
        # val ids, RegDB's last fifth); the test galleries are the standard's, whatever the seed
        self.data = load_dataset(opts.dataset, opts.input_size, opts.seed, self.say, hold_out_val=True)
        self.cfg = TrainConfig(steps=opts.train_steps, seed=opts.seed, objective=opts.objective)
        self.template = random_arch(random.Random(0), self.data.input_size, self.data.train.num_ids)
        self.state = load_supernet(out / "supernet", self.data, self.cfg)
        self.net, self.steps = self.state[0], self.state[2]
        self.weight_bytes: dict[str, int] = {}   # arch key -> deployed weight bytes
        self.took = {"measure": [], "evaluate": []}  # seconds of this run's measurements and evaluations
        self.archs = table_archs(self.template, self.scenario, opts.latency_table)
        evaluated = [r["seconds"] for r in self.acc.values() if "seconds" in r]
        val, test = len(self.data.val.pool.images), len(self.data.test.pool.images)
        costs = Costs(measure=self.meter.seconds_per_measurement(), step=seconds_per_step(record),
                      evaluate=sorted(evaluated)[len(evaluated) // 2] if evaluated else None,
                      test_ratio=max(1.0, test / max(1, val)))
        work = Work(table=sum(not self.meter.cached(s) for s in self.archs.values()),
                    table_all=opts.latency_table == "all", steps_done=self.steps, steps=self.cfg.steps,
                    evaluations=self._evaluations_left(), front=opts.measure_front, compare=opts.latency_aware,
                    standalone_steps=opts.finetune_steps,
                    standalone_more=opts.finetune_steps * max(0, opts.standalone_check - 1))
        self.budget = Budget(opts.time_limit_s, self.t0, work, costs, opts.train_share)

    def _evaluations_left(self) -> int:
        """Evaluations a full evolution would still make: accuracy.json's scores count only for
        the supernet they were taken with (a resumed supernet scores anew)."""
        if self.steps < self.cfg.steps:
            return _evaluations(self.opts)
        return max(0, _evaluations(self.opts) - sum(self._scored(r) for r in self.acc.values()))

    def _scored(self, rec: dict) -> bool:
        """Scored with this supernet, and with the per-identity statistics intervals need."""
        return rec.get("supernet_steps") == self.steps and "identity_stats" in rec

    # -- accuracy ---------------------------------------------------------------------------
    def accuracy(self, spec: ArchSpec) -> dict:
        k = arch_key(spec)
        if k not in self.acc or not self._scored(self.acc[k]):
            t = time.time()
            rec = evaluate_candidate(self.net, spec, self.data, self.cfg)
            rec.update(seconds=round(time.time() - t, 2), supernet_steps=self.steps)
            self._took("evaluate", rec["seconds"])
            self.acc[k] = rec
            atomic_write_json(self.acc_path, self.acc)
        return self.acc[k]

    def _took(self, what: str, seconds: float) -> None:
        self.took[what].append(seconds)
        setattr(self.budget.costs, what, sum(self.took[what]) / len(self.took[what]))

    def model(self, spec: ArchSpec):
        """The candidate with inherited weights and recalibrated BNs, as a plain model."""
        return extract(prepare_candidate(self.net, spec, self.data, self.cfg), spec)

    # -- latency ----------------------------------------------------------------------------
    def measure(self, spec: ArchSpec, why: str) -> float:
        hit = self.meter.cached(spec)
        if hit:
            return hit["ms"]
        self.say(f"measuring {why} on {self.meter.preset.name} ({self.scenario.describe()}): compile, verify, time")
        t = time.time()
        model = self.model(spec)
        rec = self.meter.measure(spec, model, prepare_s=time.time() - t)
        self._took("measure", rec["seconds"])
        return rec["ms"]

    def build_table(self) -> LatencyTable:
        archs, b = self.archs, self.budget
        measured = {}
        for i, (name, spec) in enumerate(archs.items()):
            new = not self.meter.cached(spec)
            measured[name] = self.measure(spec, f"latency-table entry {name} ({i + 1}/{len(archs)})")
            if new:
                b.work.table -= 1
                b.check()       # the first measurement tells what the table costs
        table = LatencyTable.build(self.template, self.scenario, measured)
        self.table_keys = {arch_key(s) for s in archs.values()}
        self.table_measured = measured
        if b.costs.measure is None:  # all cached without timings: a guess for the final phase
            b.costs.measure = DEFAULT_MEASURE_S
        return table

    def memory(self, spec: ArchSpec) -> int:
        k = arch_key(spec)
        if k not in self.weight_bytes:
            self.weight_bytes[k] = self._memory(spec)
        return self.weight_bytes[k]

    def _memory(self, spec: ArchSpec) -> int:
        from reidc.compiler.costs import deployed_weight_bytes
        from reidc.compiler.passes.pipeline import run_pipeline
        from reidc.frontend.capture import capture_module
        model = extract(self.net, spec)
        g = capture_module(model, (3,) + tuple(spec.input_size), spec.name)
        return deployed_weight_bytes({m: run_pipeline(g, m) for m in MODEL_MODES})

    # -- the run ----------------------------------------------------------------------------
    def probe(self) -> None:
        """Time what no earlier run recorded: a training step, a candidate's evaluation."""
        b, base = self.budget, self.archs["binary0000"]
        if (b.costs.step is None and b.work.steps_left) or b.costs.evaluate is None:
            self.say("timing a training step and a candidate's evaluation to plan the time limit")
        if b.costs.step is None and b.work.steps_left:
            b.costs.step = probe_step_seconds(self.net, self.data, self.cfg, self.steps)
        if b.costs.evaluate is None:
            if self.steps >= self.cfg.steps:
                self.accuracy(base)    # a real score: the supernet is trained
            else:
                t = time.time()
                evaluate_candidate(self.net, base, self.data, self.cfg)
                b.costs.evaluate = time.time() - t

    def run(self) -> dict:
        o, b = self.opts, self.budget
        self.probe()                   # what earlier runs did not record (for a suggestion worth its name)
        b.check()
        table = self.build_table()
        add = table.additive_error()
        whole = o.latency_table == "all"
        self.say(f"latency table ({self.scenario.describe()}): all real {table.patterns['0000']:.2f} ms, all binarized "
                 f"{table.patterns['1111']:.2f} ms" + (
                     f"; per-stage sums would be off by up to {100 * add['max_abs_rel_err']:.0f}% (pattern "
                     f"{add['worst_pattern']}), " + ("so patterns are measured whole" if whole else
                                                     "and the other patterns are such sums (--latency-table all "
                                                     "measures them)") if add else " (per-stage sums)"))
        b.check()
        deadline = b.train_deadline() if b.work.steps_left else None
        self.net, self.steps = train_supernet(self.data, self.cfg, self.out / "supernet", deadline=deadline,
                                              progress=self.say, state=self.state)
        b.work.steps = b.work.steps_done = self.steps   # training is over for this run
        b.work.evaluations = self._evaluations_left()
        b.check()

        def evaluate(spec):
            a = self.accuracy(spec)
            return Candidate(spec, a["score"], table.predict(spec), a["settings"])

        rng = random.Random(o.seed)
        base = self.archs["binary0000"]     # every table has the all-real network
        initial = [base, ArchSpec(**{**base.__dict__, "binary_stages": (True,) * 4})] + [
            random_arch(rng, self.data.input_size, self.data.train.num_ids) for _ in range(o.population - 2)]
        objective = "latency" if o.latency_aware else "accuracy"
        self.say(f"evolution ({o.mode}): population {o.population}, {o.generations} generations"
                 + (f", budget {o.budget_ms} ms" if o.budget_ms else ""))
        cands = evolve(initial, evaluate, objective, o.budget_ms if o.latency_aware else None, o.population,
                       o.generations, o.seed, deadline=b.evolve_deadline(), progress=self.say, minimum=ANCHORS)
        return self.finish(cands, table, self.steps)

    def _may_measure(self, spec: ArchSpec) -> bool:
        """A cached latency is free; a new one only while the pick still fits in the time limit."""
        return bool(self.meter.cached(spec)) or self.budget.room_for_front()

    def pick(self, cands: list[Candidate], measured: dict[str, float]) -> Candidate:
        o = self.opts
        if not o.latency_aware:
            return rank(cands, "accuracy")[0]
        if o.budget_ms is not None:
            for c in rank(cands, "latency", o.budget_ms):
                if c.predicted_ms > 1.15 * o.budget_ms:
                    break
                k = arch_key(c.spec)
                if k not in measured:
                    if not self._may_measure(c.spec):
                        raise TimeLimitError(f"--time-limit ran out before a candidate was measured within --budget-ms "
                                             f"{o.budget_ms}; rerun to continue (measurements are cached), or raise "
                                             "the budget")
                    measured[k] = self.measure(c.spec, "a candidate near the budget")
                if measured[k] <= o.budget_ms:
                    return c
            raise ValueError(f"no candidate measured within --budget-ms {o.budget_ms} (the fastest predicted: "
                             f"{min(c.predicted_ms for c in cands):.2f} ms); raise the budget")
        best = rank(cands, "accuracy")[0]
        ok = sorted((c for c in pareto_front(cands) if self._close_enough(c, best)), key=lambda c: c.predicted_ms)
        for c in ok:
            k = arch_key(c.spec)
            if k not in measured and (self._may_measure(c.spec) or not any(arch_key(x.spec) in measured for x in ok)):
                measured[k] = self.measure(c.spec, "a Pareto candidate")
        return min((c for c in ok if arch_key(c.spec) in measured), key=lambda c: measured[arch_key(c.spec)])

    def _close_enough(self, c: Candidate, best: Candidate) -> bool:
        """May the latency-aware pick be c? Within --margin of the best's validation mAP, or
        without one, not measurably below it (the paired bootstrap's interval holds 0)."""
        if self.opts.margin is not None:
            return c.score >= best.score - self.opts.margin
        if arch_key(c.spec) == arch_key(best.spec):
            return True
        stats = [self.acc[arch_key(x.spec)]["identity_stats"] for x in (c, best)]
        return compare(*stats)["indistinguishable"]

    def compare(self, pick: Candidate, best: Candidate, pick_art: Path) -> dict | None:
        """The latency-aware pick against the most accurate candidate, timed in alternating rounds."""
        from reidc.compiler.compile import CompileOptions, compile_checkpoint
        from reidc.frontend.checkpoint import save_checkpoint
        if arch_key(best.spec) == arch_key(pick.spec):
            return None
        if not self.budget.room_for_compare():
            self.say("time limit: the pick is not timed against the most accurate candidate")
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

    def _say_noise(self, pick: Candidate, best: Candidate, front: list[Candidate], stats) -> None:
        """Say what validation cannot tell apart: the pick from the most accurate candidate, and
        how many Pareto candidates are within the noise of the best."""
        tied = [c for c in front if arch_key(c.spec) != arch_key(best.spec)
                and compare(stats(c), stats(best))["indistinguishable"]]
        ci = self.acc[arch_key(best.spec)]["ci95"]
        self.say(f"validation: the most accurate candidate scores mAP {best.score:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f} "
                 f"over {len(stats(best)['ids'])} identities); {len(tied)} of the other {len(front) - 1} Pareto "
                 "candidates are indistinguishable from it (paired bootstrap interval holds 0)")
        if arch_key(pick.spec) != arch_key(best.spec):
            d = compare(stats(pick), stats(best))
            verdict = "indistinguishable from" if d["indistinguishable"] else "measurably below"
            self.say(f"validation: the pick is {verdict} the most accurate candidate (mAP difference "
                     f"{d['difference']:+.3f}, 95% CI {d['ci95'][0]:+.3f} to {d['ci95'][1]:+.3f})")

    def _standalone(self, cands: list[Candidate], pick: Candidate, best: Candidate, pick_check: dict) -> dict:
        """The pick and up to --standalone-check - 1 more candidates (the most accurate first,
        then spread over the supernet's scores) fine-tuned alone; Kendall tau of the two rankings."""
        o, b = self.opts, self.budget
        others = [c for c in rank(cands, "accuracy") if arch_key(c.spec) not in (arch_key(pick.spec), arch_key(best.spec))]
        first = [best] if arch_key(best.spec) != arch_key(pick.spec) else []
        n = max(0, o.standalone_check - 1 - len(first))
        spread = sorted({round(i * (len(others) - 1) / max(1, n - 1)) for i in range(n)}) if others else []
        chosen = (first + [others[i] for i in spread])[:max(0, o.standalone_check - 1)]
        rows = [pick_check] + check(self.net, [(arch_key(c.spec), c.spec, c.score) for c in chosen],
                                    self.data, self.cfg, o.finetune_steps,
                                    lambda took: b.left() >= took + OVERHEAD_S, self.say)
        tau = kendall_tau([r["supernet_val_mAP"] for r in rows], [r["standalone_val_mAP"] for r in rows])
        self.say(f"stand-alone check: {len(rows)} candidates fine-tuned for {o.finetune_steps} steps; Kendall tau "
                 "between supernet and stand-alone validation mAP " + ("n/a (fewer than 3)" if tau is None else
                                                                       f"{tau:+.2f}"))
        return {"steps": o.finetune_steps, "candidates": rows, "kendall_tau": tau,
                "how": "each candidate's inherited weights (BNs recalibrated) trained alone with the supernet's "
                       "objective, BNs re-estimated, scored on the validation identities; Kendall's tau-b of the "
                       "supernet's scores against these"}

    def finish(self, cands: list[Candidate], table: LatencyTable, steps: int) -> dict:
        from reidc.compiler.compile import CompileOptions, compile_checkpoint
        from reidc.frontend.checkpoint import save_checkpoint
        o = self.opts
        mode_dir = self.out / o.mode
        make_dir(mode_dir)
        front = sorted(pareto_front(cands), key=lambda c: c.predicted_ms)
        step = max(1, len(front) // max(1, o.measure_front))
        measured: dict[str, float] = {}
        chosen_front = front[::step][:o.measure_front]
        for i, c in enumerate(chosen_front):
            if not self._may_measure(c.spec):
                self.say(f"time limit: {i} of {len(chosen_front)} Pareto candidates measured")
                break
            measured[arch_key(c.spec)] = self.measure(c.spec, "a Pareto candidate")
        pick = self.pick(cands, measured)
        k = arch_key(pick.spec)
        if k not in measured:
            measured[k] = self.measure(pick.spec, "the pick")
        # the table against every measured candidate it was not built from
        error = prediction_error(table, [(c.spec, measured[arch_key(c.spec)]) for c in cands
                                         if arch_key(c.spec) in measured and arch_key(c.spec) not in self.table_keys])
        ft = o.finetune_steps
        if ft:
            self.say(f"fine-tuning the pick stand-alone for {ft} steps")
            t = time.time()
            pick_model = finetune(self.net, pick.spec, self.data, self.cfg, ft)
            pick_val = score_model(pick_model, self.data)
            pick_check = {"key": k, "supernet_val_mAP": pick.score, "standalone_val_mAP": pick_val["score"],
                          "standalone_val_mAP_ci95": pick_val["ci95"], "seconds": round(time.time() - t, 1)}
        else:
            pick_model = extract(prepare_candidate(self.net, pick.spec, self.data, self.cfg), pick.spec)
        self.say("evaluating the pick on the test identities")
        test = score_model(pick_model, self.data, "test")
        inherited = evaluate_candidate(self.net, pick.spec, self.data, self.cfg, protocol="test") if ft else None
        chosen = mode_dir / "chosen"
        save_checkpoint(pick_model, chosen)
        self.say(f"compiling the pick for {o.target} and verifying it against PyTorch")
        art = mode_dir / f"chosen-{self.meter.preset.name}"
        manifest = compile_checkpoint(chosen, art, CompileOptions(target=o.target, progress=self.say,
                                                                  verify=not self.meter.preset.missing_on_host()))

        best = rank(cands, "accuracy")[0]
        ab = self.compare(pick, best, art) if o.latency_aware else None
        stats = lambda c: self.acc[arch_key(c.spec)]["identity_stats"]  # noqa: E731
        if ab is not None:
            ab["val_mAP_difference"] = compare(stats(pick), stats(best))
        self._say_noise(pick, best, front, stats)

        def row(c: Candidate) -> dict:
            key = arch_key(c.spec)
            return {"arch": _spec_json(c.spec), "val_score_mAP": c.score, "val_mAP_ci95": self.acc[key]["ci95"],
                    "val_vs_most_accurate": None if key == arch_key(best.spec) else compare(stats(c), stats(best)),
                    "val": c.metrics, "predicted_ms": c.predicted_ms, "measured_ms": measured.get(key),
                    "weight_bytes": self.memory(c.spec) if key in measured else None, "key": key}

        front_rows = [row(c) for c in front]
        checks = self._standalone(cands, pick, best, pick_check) if ft else None
        pick_row = {**row(pick), "test": test["settings"], "test_score_mAP": test["score"], "test_mAP_ci95": test["ci95"],
                    "weights": f"fine-tuned stand-alone for {ft} steps" if ft else "inherited from the supernet",
                    "test_inherited": inherited and {"settings": inherited["settings"], "score_mAP": inherited["score"],
                                                     "mAP_ci95": inherited["ci95"]},
                    "test_multi_shot": test.get("multi_shot"),
                    "checkpoint": str(chosen), "artifact": str(art),
                    "verification": manifest["verification"].get("max_rel_err"),
                    "library_bytes": manifest["weights"]["artifact_bytes"]}
        result = {
            "mode": o.mode, "dataset": self.data.name, "input_size": list(self.data.input_size),
            "target": self.meter.setup(), "scenario": self.scenario.describe(), "budget_ms": o.budget_ms,
            "margin": (o.margin if o.margin is not None else "indistinguishable from the most accurate (paired "
                       "bootstrap over validation identities)") if o.latency_aware and o.budget_ms is None else None,
            "supernet_steps": steps, "objective": self.cfg.objective,   # the supernet's training loss
            "candidates_evaluated": len(cands), "latency_measurements_new": self.meter.measured,
            "accuracy": "validation identities, mAP averaged over the protocol's settings (val_score_mAP); "
                        "the pick also on the test identities (test: single-shot galleries, test_multi_shot: "
                        "10-shot, where the dataset has them; the standard's draws). *_ci95: 95% bootstrap "
                        "interval over identities; val_vs_most_accurate: the paired difference to the most "
                        "accurate candidate, indistinguishable where its interval holds 0",
            "latency": "measured_ms: compiled by reidc and timed on the target; predicted_ms: the per-layer table",
            "pareto_front": front_rows, "pick": pick_row, "pick_vs_most_accurate": ab, "standalone": checks,
            "latency_table": {**table.to_json(), "measured": self.table_measured, "error": error},
            "time_limit_s": o.time_limit_s, "seconds": round(time.time() - self.t0, 1),
        }
        atomic_write_json(mode_dir / "pareto.json", result)
        atomic_write_json(self.out / "latency-table.json", result["latency_table"])
        from .plot import plot_pareto
        plot_pareto(result, [c for c in cands], mode_dir / "pareto.png")
        self.say(f"wrote {mode_dir}/pareto.json, pareto.png, chosen/ and {art.name}/")
        return result


@contextmanager
def _interrupts_stay_interrupts() -> Iterator[None]:
    """Ctrl-C stays a KeyboardInterrupt: an error raised while it unwinds a compile or a timing
    run (a compiler subprocess killed by the same SIGINT, an FFI error wrapping the interrupt)
    is the interrupt, not a traceback."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    hit = []

    def on_sigint(signum, frame):
        hit.append(signum)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    except Exception as e:
        if hit:
            raise KeyboardInterrupt from e
        raise
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)


def search(out: str | Path, opts: SearchOptions) -> dict:
    out = guard_search_dir(out, allow=[opts.latency_cache])
    created = not out.exists()
    make_dir(out)
    try:
        with _interrupts_stay_interrupts():
            return _Search(out, opts).run()
    except OSError as e:
        if e.filename:   # an unwritable or vanished path: one line naming it
            raise OutputError(f"{e.filename}: {e.strerror or e}") from None
        raise
    finally:
        if created and out.is_dir() and not any(out.iterdir()):   # refused or stopped before writing anything
            out.rmdir()
