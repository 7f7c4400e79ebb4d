"""The search space of a task: reidc's own schedule rules over a grid of their knobs (register
tile, cache blocking, popcount lanes, Harley-Seal or plain popcount reduction, the Winograd
GEMM's register tile of tiles x output blocks) unioned with MetaSchedule's generated space (multi-level
tiling etc., searched by evolution with the XGBoost cost model). The reidc-default schedule, the
one `reidc compile` uses without a database, is measured first, so a tuned kernel is never one
that measured slower than the default."""
from __future__ import annotations

import copy
import itertools

import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from reidc.compiler.lower.build import harley_seal, schedule_rules
from reidc.kernels.bconv_schedule import BConv2dNCHWc
from reidc.kernels.cpu_schedules import Conv2dNCHWc
from reidc.kernels.winograd_schedule import WinogradNCHWc
from reidc.targets import TargetPreset


def rule_variants(preset: TargetPreset) -> list:
    """reidc's CPU rules with alternative knob settings (the default settings come first)."""
    lanes = preset.vector_lanes
    regs = preset.vector_registers
    convs = [Conv2dNCHWc(vector_lanes=lanes, accumulators=a, acc_bytes=ab, weight_bytes=wb)
             for a, ab, wb in itertools.product(sorted({regs * 3 // 4, regs // 2, regs - 2}),
                                                (8192, 16384, 32768), (16384, 65536))]
    words = max(1, preset.vector_bits // 64)
    bconvs = [BConv2dNCHWc(reg_w=r, lanes=w) for r, w in itertools.product((4, 8, 12, 16), sorted({words, 2 * words}))]
    if harley_seal(preset):   # the adders' other pixel tiles (compile's default, 2, is measured first)
        bconvs += [BConv2dNCHWc(lanes=words, harley_seal=True, seal_w=s) for s in (1, 4)]
    defaults = schedule_rules(preset)
    int8 = defaults[1]   # the int8 / bf16 conv: the same instructions, other register tiles and row blocks
    qconvs = [with_knobs(int8, accumulators=a, acc_bytes=ab)
              for a, ab in itertools.product(sorted({regs * 3 // 4, regs // 2, regs - 2, regs // 4}),
                                             (8192, 16384, 32768, 65536))]
    # the Winograd GEMM's register tile (accumulators, output blocks per tile); its default comes
    # first among the rules that apply to a Winograd kernel. Many settings give the same tile
    # (register_tile), so a kernel has few distinct variants: CM-NAS ResNet-50 at batch 16 on a
    # Zen 4, two each, and none won its paired re-measure against the default there
    wino = next(r for r in defaults if isinstance(r, WinogradNCHWc))
    winos = [wino] + [with_knobs(wino, accumulators=a, max_oc_tile=t)
                      for a, t in itertools.product(sorted({regs * 3 // 4, regs // 2, regs - 2}), (1, 2, 4, 8))]
    return defaults[:2] + convs + bconvs + qconvs + winos


def with_knobs(rule, **knobs):
    """A copy of a schedule rule with some knobs changed (the rules are plain objects)."""
    out = copy.copy(rule)
    for k, v in knobs.items():
        if not hasattr(out, k):
            raise AttributeError(f"{type(rule).__name__} has no knob {k}")
        setattr(out, k, v)
    return out


def default_schedule(func: tvm.tirx.PrimFunc, preset: TargetPreset):
    """The schedule `reidc compile` gives this function without a database (first rule that applies)."""
    target = preset.tvm_target()
    for rule in schedule_rules(preset):
        sch = rule.apply(func, target, False)
        if sch is not None:
            return sch
    return None


def reidc_space(preset: TargetPreset) -> ms.space_generator.ScheduleFn:
    target = preset.tvm_target()
    variants = rule_variants(preset)

    def schedules(sch: tvm.s_tir.Schedule):
        return reidc_schedules(sch.mod["main"], target, variants)

    return ms.space_generator.ScheduleFn(schedules, sch_rules=[], postprocs=[], mutator_probs={})


def reidc_schedules(func: tvm.tirx.PrimFunc, target, variants: list) -> list:
    """The distinct schedules reidc's rule variants give a function, the default first."""
    out, seen = [], set()
    for rule in variants:
        try:
            s = rule.apply(func, target, False)
        except (RuntimeError, ValueError):  # a knob that does not fit this shape (TVM's ScheduleError is a RuntimeError)
            continue
        if s is not None and (h := tvm_ffi.structural_hash(s.mod)) not in seen:
            seen.add(h)
            out.append(s)
    return out


def search_space(preset: TargetPreset):
    return ms.space_generator.SpaceGeneratorUnion([reidc_space(preset), ms.space_generator.PostOrderApply()])
