"""`reidc search`: supernet training, evolutionary search scored by validation accuracy (and,
latency-aware, by latency on the target), measurement of the Pareto front, the chosen
checkpoint compiled and verified. Output directory:

    supernet/                    training state (shared by both modes; resumable)
    accuracy.json                validation scores per architecture (shared by both modes)
    latency-table.json           the table's measurements, the latency model and its held-out error
    <mode>/pareto.json           the Pareto front (validation accuracy vs latency, memory)
    <mode>/pareto.png            its plot
    <mode>/chosen/               the pick as a reidc checkpoint (`reidc compile` takes it)
    <mode>/chosen-<target>/      the pick compiled for the target, verified against PyTorch

<mode> is `latency-aware` or `accuracy-only`. `-o` may name a missing or empty folder or one
that holds only these (a rerun resumes): files.py. The time limit covers the whole run:
budget.py plans it. The final phase (front measured, pick, stand-alone check, pareto.json) is
finish.py; what predicts latency, predict.py.
"""
from __future__ import annotations

import random
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from reidc.compiler.base.atomic import OutputError, atomic_write_json
from reidc.compiler.datasets import load_dataset
from reidc.compiler.ir import MODEL_MODES
from reidc.frontend.arch import ArchSpec
from reidc.frontend.supernet import extract, random_arch

from .accuracy import evaluate_candidate, prepare_candidate
from .budget import ANCHORS, DEFAULT_MEASURE_S, Budget, Costs, Work
from .differentiable import DiffConfig, LinearCost, differentiable_search
from .evolution import Candidate, evolve
from .files import guard_search_dir, make_dir, read_accuracy
from .finish import Finish
from .latency import LatencyMeter, Scenario, arch_key
from .latency_table import LatencyTable, table_archs
from .losses import DEFAULT_OBJECTIVE, check_objective
from .predict import Predictor, holdout_archs
from .train import TrainConfig, load_supernet, probe_step_seconds, read_record, seconds_per_step, train_supernet
from .train_parallel import check_procs, train_parallel


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
    latency_holdout: int = 4          # random candidates measured to test the latency model on
    train_procs: int = 1              # supernet training processes (train_parallel.py)
    seed: int = 0
    rpc: tuple[str, str] | None = None
    latency_cache: Path | None = None
    objective: str = DEFAULT_OBJECTIVE    # the supernet's training loss: "cmnas" | "reidc" (losses.py)
    standalone_steps: int | None = None   # the pick's stand-alone fine-tuning; None: a quarter of train_steps
    standalone_check: int = 4             # candidates fine-tuned stand-alone (the pick included) for Kendall tau
    method: str = "evolution"             # "evolution" | "differentiable" (CM-NAS's: differentiable.py)
    arch_steps: int = 150                 # --method differentiable: its alternating steps
    latency_weight: float = 0.5           # --method differentiable, latency-aware: lambda of E[ms] / all-real ms
    memory_weight: float = 0.0            # --method differentiable: mu of E[weight bytes] / all-real bytes
    gal: str = "none"                     # BiRe-ID's KR-GAL / FR-GAL in supernet training and fine-tunes (gal.py)
    progress: Callable[[str], None] = field(default=lambda s: None)

    @property
    def finetune_steps(self) -> int:
        return max(1, self.train_steps // 4) if self.standalone_steps is None else self.standalone_steps

    @property
    def mode(self) -> str:
        """The results' folder: the objective, prefixed with the method unless it is evolution."""
        mode = "latency-aware" if self.latency_aware else "accuracy-only"
        return mode if self.method == "evolution" else f"{self.method}-{mode}"


METHODS = ("evolution", "differentiable")


def _evaluations(o: SearchOptions) -> int:
    """Evaluations of a full search: the evolution's initial population, then the children per
    generation; the differentiable search's anchors and argmax snapshots."""
    if o.method == "differentiable":
        return ANCHORS + DiffConfig.snapshots + 1
    return o.population + o.generations * max(0, o.population - max(2, o.population // 2))


class _Search(Finish):
    def __init__(self, out: Path, opts: SearchOptions):
        self.t0 = time.time()
        self.out, self.opts, self.say = out, opts, opts.progress
        # inputs first, cheapest first: a bad file is reported before minutes of work
        check_objective(opts.objective)
        if opts.method not in METHODS:
            raise ValueError(f"--method {opts.method!r}: expected one of {', '.join(METHODS)}")
        if opts.arch_steps < 1 or opts.latency_weight < 0 or opts.memory_weight < 0:
            raise ValueError(f"--arch-steps {opts.arch_steps}, --latency-weight {opts.latency_weight}, --memory-weight "
                             f"{opts.memory_weight}: expected at least 1 step and weights of 0 or more")
        if opts.standalone_steps is not None and opts.standalone_steps < 0:
            raise ValueError(f"--standalone-steps {opts.standalone_steps}: expected 0 (none) or more")
        check_procs(opts.train_procs, TrainConfig(gal=opts.gal))
        if opts.latency_holdout < 0:
            raise ValueError(f"--latency-holdout {opts.latency_holdout}: expected 0 (none) or more")
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
        self.cfg = TrainConfig(steps=opts.train_steps, seed=opts.seed, objective=opts.objective, gal=opts.gal)
        self.template = random_arch(random.Random(0), self.data.input_size, self.data.train.num_ids)
        self.state = load_supernet(out / "supernet", self.data, self.cfg)
        self.net, self.steps = self.state[0], self.state[2]
        self.weight_bytes: dict[str, int] = {}   # arch key -> deployed weight bytes
        self.took = {"measure": [], "evaluate": [], "predict": []}  # seconds of this run's measurements, evaluations, predictions
        self.archs = table_archs(self.template, self.scenario, opts.latency_table)
        self.holdout = holdout_archs(opts.latency_holdout, opts.seed, self.data.input_size, self.data.train.num_ids,
                                     {arch_key(s) for s in self.archs.values()})
        evaluated = [r["seconds"] for r in self.acc.values() if "seconds" in r]
        val, test = len(self.data.val.pool.images), len(self.data.test.pool.images)
        costs = Costs(measure=self.meter.seconds_per_measurement(), step=seconds_per_step(record),
                      evaluate=sorted(evaluated)[len(evaluated) // 2] if evaluated else None,
                      test_ratio=max(1.0, test / max(1, val)))
        work = Work(table=sum(not self.meter.cached(s) for s in list(self.archs.values()) + self.holdout),
                    table_all=opts.latency_table == "all", steps_done=self.steps, steps=self.cfg.steps,
                    evaluations=self._evaluations_left(), front=opts.measure_front, compare=opts.latency_aware,
                    standalone_steps=opts.finetune_steps,
                    standalone_more=opts.finetune_steps * max(0, opts.standalone_check - 1))
        if opts.method == "differentiable":
            n_bn = len(self.template.split)
            work.arch_steps = opts.arch_steps
            work.predictions = LinearCost.terms(n_bn) * (1 + bool(opts.memory_weight)) if opts.latency_aware else 0
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

    def build_predictor(self) -> Predictor:
        """Measure the table's candidates and the held-out ones; fit on the first, test on the rest."""
        archs, b = self.archs, self.budget
        jobs = [(name, spec, f"latency-table entry {name}") for name, spec in archs.items()] + [
            (f"held-out{i + 1}", spec, f"held-out candidate {i + 1}") for i, spec in enumerate(self.holdout)]
        measured = {}
        devices = self.meter.devices()
        if devices > 1:         # several RPC devices: compiled here one by one, timed on them at once
            fresh = [not self.meter.cached(s) for _, s, _ in jobs]
            self.say(f"measuring {sum(fresh)} latency-table and held-out candidates on {devices} RPC devices "
                     f"({self.meter.rpc[1]}) at once")
            recs = self.meter.measure_many([(spec, lambda spec=spec: self.model(spec)) for _, spec, _ in jobs])
            for (name, _, _), rec, new in zip(jobs, recs, fresh):
                measured[name] = rec["ms"]
                if new:
                    self._took("measure", rec["seconds"])
            b.work.table = 0
            b.check()
        else:
            for i, (name, spec, why) in enumerate(jobs):
                new = not self.meter.cached(spec)
                measured[name] = self.measure(spec, f"{why} ({i + 1}/{len(jobs)})")
                if new:
                    b.work.table -= 1
                    b.check()       # the first measurement tells what the table costs
        table = LatencyTable.build(self.template, self.scenario, {k: measured[k] for k in archs})
        self.table_keys = {arch_key(s) for s in archs.values()}
        self.table_measured = {k: measured[k] for k in archs}
        pred = Predictor(table, {k: self.meter.cached(s) for k, s in archs.items()}, self.scenario,
                         self.meter.preset, lambda spec: extract(self.net, spec))
        if self.holdout:
            h = pred.evaluate_held_out([(s, measured[f"held-out{i + 1}"]) for i, s in enumerate(self.holdout)])
            self.say(f"latency: {pred.name} predicts {h['candidates']} held-out random candidates with mean error "
                     f"{100 * h['mean_abs_rel_err']:.1f}%, {100 * h['within_10pct']:.0f}% within +-10%")
        if b.costs.measure is None:  # all cached without timings: a guess for the final phase
            b.costs.measure = DEFAULT_MEASURE_S
        return pred

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
        pred = self.build_predictor()
        table = pred.table
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
        if o.train_procs > 1 and b.work.steps_left:
            self.net, self.steps = train_parallel(self.data, self.cfg, self.out / "supernet", o.train_procs,
                                                  deadline=deadline, progress=self.say)
        else:
            self.net, self.steps = train_supernet(self.data, self.cfg, self.out / "supernet", deadline=deadline,
                                                  progress=self.say, state=self.state)
        b.work.steps = b.work.steps_done = self.steps   # training is over for this run
        b.work.evaluations = self._evaluations_left()
        b.check()

        def evaluate(spec):
            a = self.accuracy(spec)
            t = time.time()
            ms = pred.predict(spec)
            if time.time() - t > 0.05:    # not one predicted before
                self._took("predict", time.time() - t)
            return Candidate(spec, a["score"], ms, a["settings"])

        base = self.archs["binary0000"]     # every table has the all-real network
        anchors = [base, ArchSpec(**{**base.__dict__, "binary_stages": (True,) * 4})]
        t_search = time.time()        # the search proper, apart from training and the final phase
        if o.method == "differentiable":
            cands = self.differentiable(pred, anchors, evaluate)
            self.search_seconds = time.time() - t_search
            return self.finish(cands, pred, self.steps)
        rng = random.Random(o.seed)
        initial = anchors + [random_arch(rng, self.data.input_size, self.data.train.num_ids)
                             for _ in range(o.population - 2)]
        objective = "latency" if o.latency_aware else "accuracy"
        self.say(f"evolution ({o.mode}): population {o.population}, {o.generations} generations"
                 + (f", budget {o.budget_ms} ms" if o.budget_ms else ""))
        cands = evolve(initial, evaluate, objective, o.budget_ms if o.latency_aware else None, o.population,
                       o.generations, o.seed, deadline=b.evolve_deadline(), progress=self.say, minimum=ANCHORS)
        self.search_seconds = time.time() - t_search
        return self.finish(cands, pred, self.steps)

    # -- CM-NAS's method ------------------------------------------------------------------------
    def differentiable(self, pred: Predictor, anchors: list[ArchSpec], evaluate) -> list[Candidate]:
        """Search by gradient (differentiable.py); the candidates: the anchors, the argmax along
        the way and the final argmax, which is the pick."""
        o, b = self.opts, self.budget
        lat = mem = None
        t = time.time()
        if o.latency_aware:
            lat = LinearCost.build(self.template, pred.predict, self.say)
            if o.memory_weight:
                mem = LinearCost.build(self.template, self.memory, self.say, "weight memory")
            b.work.predictions = 0
            self._took("predict", (time.time() - t) / LinearCost.terms(len(self.template.split)) / (1 + bool(mem)))
        terms_s = time.time() - t
        dc = DiffConfig(steps=o.arch_steps, latency_weight=o.latency_weight if o.latency_aware else 0.0,
                        budget_ms=o.budget_ms, memory_weight=o.memory_weight if o.latency_aware else 0.0)
        b.costs.arch_step = b.costs.arch_step or 4 * (b.costs.step or 0.0)   # both paths, forward and backward twice
        deadline = b.evolve_deadline() - _evaluations(o) * ((b.costs.evaluate or 0) + (b.costs.predict or 0))
        self.say(f"differentiable search ({o.mode}): {dc.steps} steps, architecture lr {dc.arch_lr}"
                 + (f", latency weight {dc.latency_weight}" if dc.latency_weight else "")
                 + (f" above --budget-ms {o.budget_ms}" if dc.latency_weight and o.budget_ms else "")
                 + (f", memory weight {dc.memory_weight}" if dc.memory_weight else ""))
        res = differentiable_search(self.net, self.data, self.cfg, self.template, dc, lat, mem, deadline, self.say)
        if res.steps:
            b.costs.arch_step = res.seconds / res.steps
        b.work.arch_steps = 0
        specs = {arch_key(s): s for s in anchors + [s for _, s in res.trajectory] + [res.arch]}
        t = time.time()
        cands = [evaluate(s) for s in specs.values()]
        self.diff_pick = arch_key(res.arch)
        ms = next(c.predicted_ms for c in cands if arch_key(c.spec) == self.diff_pick)
        if o.latency_aware and o.budget_ms is not None and ms > o.budget_ms:
            self.say(f"warning: the argmax is predicted at {ms:.2f} ms, above --budget-ms {o.budget_ms}: it is the "
                     "pick all the same (CM-NAS's rule); a larger --latency-weight or more --arch-steps moves it")
        self.diff_record = {**res.to_json(arch_key), "config": asdict(dc),
                            "expected_ms_of_pick": lat.of(res.arch) if lat else None, "predicted_ms_of_pick": ms,
                            "latency_terms": lat.to_json() if lat else None,
                            "seconds_terms": round(terms_s, 1), "seconds_evaluations": round(time.time() - t, 1)}
        return cands

    def pick(self, cands: list[Candidate], measured: dict[str, float]) -> Candidate:
        if self.opts.method == "differentiable":   # CM-NAS: the argmax of the architecture weights
            return next(c for c in cands if arch_key(c.spec) == self.diff_pick)
        return super().pick(cands, measured)


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
