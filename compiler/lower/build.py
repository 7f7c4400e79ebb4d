"""Build a Relax module for a target: TVM legalises and fuses, reidc's dlight rules schedule,
TVM lowers to a VM executable."""
from __future__ import annotations

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.s_tir import dlight as dl

from kernels.x86_schedules import BConv2dNCHWc, Bitpack, Conv2dNCHWc, CPUFallback
from targets import TargetPreset


def schedule_rules(preset: TargetPreset) -> list:
    return [Conv2dNCHWc(vector_lanes=preset.vector_lanes,
                        accumulators=12 if preset.vector_bits <= 256 else 24),
            BConv2dNCHWc(reg_w=12, lanes=max(1, preset.vector_bits // 64)), Bitpack(), CPUFallback()]


def relax_pipeline(preset: TargetPreset) -> tvm.transform.Pass:
    target = preset.tvm_target()

    @tvm.transform.module_pass(opt_level=0, name="reidc_relax_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            seq = tvm.transform.Sequential(
                cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
                + [dl.ApplyDefaultSchedule(*schedule_rules(preset))]
                + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return seq(mod)
    return _pipeline


def build(mod: tvm.IRModule, preset: TargetPreset):
    """Compile to a `tvm.relax` VM executable (call `.export_library(path)` to save it)."""
    return tvm.compile(mod, target=preset.tvm_target(), relax_pipeline=relax_pipeline(preset))
