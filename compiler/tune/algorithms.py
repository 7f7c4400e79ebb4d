"""`reidc tune`'s first step where reidc has a Winograd kernel (x86, fp32): which algorithm each
3x3 conv shape of the model runs fastest on the device, measured rather than guessed.

`reidc compile` picks direct, F(2x2, 3x3) or F(4x4, 3x3) per conv by a fixed policy
(passes/choose_winograd.py, `--winograd-tiles`): F(4x4) where its transformed weights fit the
caches. Which one wins depends on the batch and the machine (F(4x4)'s 4x bigger weights pay at
batch 16 on a 512-channel layer, not always at batch 1), so here each distinct shape
(`choose_winograd.signature`, the candidates its guards accept) is built as a one-conv model
three times, one per algorithm, each function scheduled by reidc's default rules, and timed
through the same builder and runner as the search (locally or on an RPC device), in
`rounds` paired rounds (at least one), alternating; the fastest minimum is chosen. The figures
go to the database's reidc_algorithms.json (per batch; a rerun measures only the shapes it
lacks, or where an algorithm failed), and
the tasks the search then tunes are those of the graph with the chosen algorithms, as
`reidc compile --tuning-db` builds it.
"""
from __future__ import annotations

from reidc.compiler.ir import Graph, Node, Op, RunMode, verify
from reidc.compiler.passes.choose_winograd import ALGORITHMS, candidates, signature

from . import measure
from .progress import ms_text


def shapes(graphs: dict[str, Graph]) -> dict[str, Node]:
    """One conv node per distinct signature among the graphs' Winograd candidates."""
    out: dict[str, Node] = {}
    for g in graphs.values():
        for n in candidates(g).values():
            out.setdefault(signature(n), n)
    return dict(sorted(out.items()))


def one_conv(n: Node, algorithm: str) -> Graph:
    """The model of one conv like `n` (its weights, bias and shape) taking `algorithm`."""
    g = Graph("tune_algorithm")
    g.add("x", Node(Op.INPUT, (), ("N", int(n.attrs["weight"].shape[1])) + tuple(n.shape[-2:]), attrs={"name": "x"}))
    attrs = {k: n.attrs[k] for k in ("weight", "stride", "padding", "bias") if k in n.attrs}
    if algorithm != "direct":
        attrs["algorithm"] = algorithm
    g.add("conv", Node(Op.CONV2D, ("x",), n.shape, attrs=attrs))
    g.outputs = ["conv"]
    return verify(g)


def conv_schedule(g: Graph, batch: int, preset):
    """reidc's default schedule of the one-conv model's conv function (what compile builds)."""
    from tvm.s_tir import meta_schedule as ms
    from reidc.compiler.lower.build import fused_module, lowering_options
    from reidc.compiler.lower.to_relax import to_relax
    from .space import default_schedule
    mod = fused_module(to_relax({RunMode.VISIBLE: g}, batch, **lowering_options(preset)), preset)
    tasks = [t for t in ms.relax_integration.extract_tasks(mod, preset.tvm_target()) if "conv2d" in t.task_name]
    if len(tasks) != 1:
        raise RuntimeError(f"expected one conv function in the one-conv model, found {[t.task_name for t in tasks]}")
    return default_schedule(tasks[0].dispatched[0]["main"], preset)


def measure_shape(n: Node, batch: int, preset, build, run, rounds: int) -> tuple[dict[str, float | None], str | None]:
    """Each algorithm's minimum over `rounds` paired rounds, at least one (None where it could
    not be scheduled, built or run), and the first error met."""
    schs, errs = {}, []
    for a in ALGORITHMS:
        try:
            sch = conv_schedule(one_conv(n, a), batch, preset)
        except (RuntimeError, ValueError) as e:   # TVM's errors are RuntimeErrors
            errs.append(f"{a}: {e}")
            continue
        if sch is None:
            errs.append(f"{a}: reidc's rules did not schedule it")
        else:
            schs[a] = sch
    times = dict.fromkeys(ALGORITHMS)
    if not schs:
        return times, errs[0]
    paired, err = measure.measure_paired(list(schs.values()), preset, build, run, max(1, rounds))
    if not err:
        times.update({a: min(t) for a, t in zip(schs, paired)})
        return times, errs[0] if errs else None
    # one failed to build or run: time each alone, so the others still count
    single = measure.measure_many(list(schs.values()), preset, build, run)
    times.update({a: secs for a, (secs, _) in zip(schs, single)})
    return times, (errs or [err])[0]


def choose(table: dict, graphs: dict[str, Graph], batch: int, preset, build, run, rounds: int,
           save, say=lambda msg: None, check=lambda: None) -> dict[str, str]:
    """Measure the shapes `table` (reidc_algorithms.json's, updated in place and handed to
    `save` after each shape) lacks at `batch`; {signature: fastest algorithm} for compile."""
    per = table.setdefault(str(batch), {})
    todo = shapes(graphs)
    for k, (sig, n) in enumerate(todo.items(), 1):
        if sig in per and all(per[sig].get(a) is not None for a in ALGORITHMS):
            continue   # (one with a failed algorithm is measured again)
        check()
        times, err = measure_shape(n, batch, preset, build, run, rounds)
        ok = {a: t for a, t in times.items() if t is not None}
        label = f"algorithms {k}/{len(todo)}: 3x3 conv {sig}, batch {batch}"
        if err:
            say(f"{label}: {err.strip().splitlines()[-1][:200]}")
        if not ok:
            say(f"{label}: nothing measured; compile keeps its policy for it")
            continue
        chosen = min(ok, key=ok.get)
        per[sig] = {**times, "chosen": chosen}
        save(table)
        say(f"{label}: " + ", ".join(f"{a} {ms_text(t, 'failed')}" for a, t in times.items()) + f" -> {chosen}")
    return {sig: e["chosen"] for sig, e in per.items() if sig in todo}
