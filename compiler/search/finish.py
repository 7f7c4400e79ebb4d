"""The search's final phase: the Pareto front measured on the target, the pick (by budget, by
validation noise, or the most accurate), fine-tuned stand-alone and tested, compiled and
verified, timed against the most accurate candidate, and pareto.json written. A mixin of the
run (search.py: `_Search`), whose state it reads: options, meter, budget, scores, supernet, data."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

from reidc.compiler.base.atomic import atomic_write_json
from reidc.compiler.datasets.uncertainty import compare
from reidc.frontend.arch import ArchSpec
from reidc.frontend.supernet import extract

from .accuracy import evaluate_candidate, prepare_candidate, score_model
from .budget import OVERHEAD_S, TimeLimitError
from .evolution import Candidate, pareto_front, rank
from .files import make_dir
from .latency import arch_key, interleaved_ms
from .predict import Predictor
from .standalone import check, finetune, kendall_tau


def _spec_json(spec: ArchSpec) -> dict:
    return {"split": "".join(map(str, spec.split)), "binary_stages": "".join("1" if b else "0" for b in spec.binary_stages),
            "split_bns": spec.split.count(0), "binary_stage_count": sum(spec.binary_stages)}



class Finish:
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

    def finish(self, cands: list[Candidate], pred: Predictor, steps: int) -> dict:
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
        # the prediction against every measured candidate it was not fitted on
        error = pred.error([(c.spec, measured[arch_key(c.spec)]) for c in cands
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
                    "weights": (f"fine-tuned stand-alone for {ft} steps" + (f" with GAL {self.cfg.gal}"
                                                                             if self.cfg.gal != "none" else "")
                                if ft else "inherited from the supernet"),
                    "test_inherited": inherited and {"settings": inherited["settings"], "score_mAP": inherited["score"],
                                                     "mAP_ci95": inherited["ci95"]},
                    "test_multi_shot": test.get("multi_shot"),
                    "checkpoint": str(chosen), "artifact": str(art),
                    "verification": manifest["verification"].get("max_rel_err"),
                    "library_bytes": manifest["weights"]["artifact_bytes"]}
        result = {
            "mode": o.mode, "method": o.method, "differentiable": getattr(self, "diff_record", None),
            "dataset": self.data.name, "input_size": list(self.data.input_size),
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
            "latency": f"measured_ms: compiled by reidc and timed on the target; predicted_ms: {pred.name}",
            "pareto_front": front_rows, "pick": pick_row, "pick_vs_most_accurate": ab, "standalone": checks,
            "latency_table": {**pred.table.to_json(), "measured": self.table_measured, "error": error},
            "latency_model": pred.to_json(),
            "time_limit_s": o.time_limit_s, "seconds": round(time.time() - self.t0, 1),
            "search_seconds": round(getattr(self, "search_seconds", 0.0), 1),   # evolution or differentiable alone
        }
        atomic_write_json(mode_dir / "pareto.json", result)
        atomic_write_json(self.out / "latency-table.json", {**result["latency_table"], "latency_model": pred.to_json()})
        from .plot import plot_pareto
        plot_pareto(result, [c for c in cands], mode_dir / "pareto.png")
        self.say(f"wrote {mode_dir}/pareto.json, pareto.png, chosen/ and {art.name}/")
        return result
