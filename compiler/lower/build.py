"""Build a Relax module for a target: TVM legalises and fuses, reidc's dlight rules schedule,
TVM lowers to a VM executable."""
from __future__ import annotations

import tvm
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.relax.backend.cuda import pipeline as cuda
from tvm.s_tir import dlight as dl

from reidc.compiler.lower.fuse_bitpack import fuse_bitpack_into_producer
from reidc.kernels.amx_config import hoist_tile_config
from reidc.kernels.stack_tiles import stack_register_tiles
from reidc.kernels.conv2d_bf16 import Bf16Conv
from reidc.kernels.conv2d_int8 import Int8Flavour
from reidc.kernels.cuda_wmma import wmma_arch
from reidc.kernels.bitpack_schedule import Bitpack
from reidc.kernels.bconv_schedule import BConv2dNCHWc
from reidc.kernels.cpu_schedules import Conv2dNCHWc, Conv2dNCHWcInt8
from reidc.kernels.fallback_schedule import CPUFallback
from reidc.kernels.fold_schedule import FoldColumns
from reidc.kernels.cuda_schedules import cuda_rules
from reidc.kernels.winograd_schedule import WinogradNCHWc
from reidc.targets import TargetPreset


def schedule_rules(preset: TargetPreset) -> list:
    """CPU rules tiled for the preset: 3/4 of the SIMD registers hold accumulators (AVX2: 12 of
    16; AVX-512 and NEON: 24 of 32), the rest the broadcast input and weight vectors. The
    binary conv's tile is 12 pixels x one vector of 64-bit popcount lanes, on AVX-512 two (16
    output channels: its int64 -> float epilogue then runs on 16 lanes, not 8; bire-resnet18's
    layer1 convs 0.205 -> 0.190 ms, layer2 0.135 -> 0.129 on a Xeon, 2 threads)."""
    binary_lanes = max(1, preset.vector_bits // 64) * (2 if preset.vector_bits == 512 else 1)
    return [Conv2dNCHWc(vector_lanes=preset.vector_lanes, accumulators=preset.vector_registers * 3 // 4),
            Conv2dNCHWcInt8(vnni="avx512vnni" in preset.cpu_features(), amx="amx-int8" in preset.cpu_features(),
                            sdot="dotprod" in preset.cpu_features(), avx2="avx2" in preset.cpu_features(),
                            accumulators=preset.vector_registers * 3 // 4, vector_bits=preset.vector_bits,
                            amx_bf16="amx-bf16" in preset.cpu_features(),
                            dpbf16="avx512bf16" in preset.cpu_features()),
            BConv2dNCHWc(reg_w=12, lanes=binary_lanes, harley_seal=harley_seal(preset)), Bitpack(), FoldColumns(),
            WinogradNCHWc(vector_lanes=preset.vector_lanes, accumulators=preset.vector_registers * 3 // 4), CPUFallback()]


def harley_seal(preset: TargetPreset) -> bool:
    """Whether the binary conv counts through Harley-Seal adders (kernels/harley_seal.py): x86
    with AVX2 but without AVX-512 VPOPCNTQ (its vector popcount is a vpshufb lookup)."""
    feats = preset.cpu_features()
    return preset.arch != "aarch64" and "avx2" in feats and "avx512vpopcntdq" not in feats


def bf16_conv(preset: TargetPreset) -> Bf16Conv:
    """The kernel bf16 convs take: AMX-BF16 tiles on x86 with AMX-BF16; vdpbf16ps on x86 with
    AVX512-BF16 but no AMX (Zen 4, `x86-avx512-bf16`: kernels/bf16_intrin.py); tensor cores
    (bf16 WMMA) on CUDA sm_80+; elsewhere float32 convs of the decoded bf16 values."""
    if preset.kind == "cuda":
        return Bf16Conv.WMMA if wmma_arch(preset.cuda_arch) else Bf16Conv.DECODED
    feats = preset.cpu_features()
    if "amx-bf16" in feats:
        return Bf16Conv.TILES
    return Bf16Conv.DOT if "avx512bf16" in feats else Bf16Conv.DECODED


def bf16_kernel(preset: TargetPreset) -> str:
    """What a bf16 conv runs on for the preset, as the manifest states it. Every product of two
    bf16 is exact in float32 and the sums are float32 on each (tensor cores' float32
    accumulation is not IEEE round-to-nearest at every add; vdpbf16ps flushes denormals), so the
    numbers differ in the order and rounding of the sums only, except in a bf16 Winograd conv
    (vdpbf16ps targets), which also rounds its transformed input and weights to bf16; only
    AMX-BF16, vdpbf16ps and tensor cores make bf16 faster than fp32."""
    kind = bf16_conv(preset)
    if kind is Bf16Conv.TILES:
        return ("AMX-BF16 tiles (tdpbf16ps), 64-channel rows; a strided conv reads its input split into the "
                "stride's phases")
    if kind is Bf16Conv.DOT:
        return ("AVX512-BF16 (vdpbf16ps: 16 float32 lanes += a broadcast input channel pair x 16 output channels' "
                "pairs), a register tile of pixels x 64 output channels; a strided conv reads its input split into "
                "the stride's phases; 3x3 stride-1 convs of 64 channels or more as Winograd F(2x2, 3x3) with the "
                "transformed input and weights rounded to bf16 (the layer rows' algorithm; --no-winograd keeps "
                "them direct); weights stored as bf16")
    if kind is Bf16Conv.WMMA:
        return ("tensor cores: bf16 WMMA 16x16x16 with float32 accumulation (TVM's dlight tensor-core matmul "
                "schedule, implicit GEMM); weights stored as bf16")
    unit = "CUDA cores" if preset.kind == "cuda" else "SIMD FMAs"
    return (f"float32 convs ({unit}) of the decoded bf16 values ({preset.name} has no bf16 dot product reidc "
            "uses): the numbers of an AMX-BF16 build at about fp32's speed with direct convs (fp32's Winograd 3x3 "
            "convs are faster); weights stored as float32")


def int8_kernel(preset: TargetPreset) -> str:
    """What an int8 conv runs on for the preset (`int8_flavour`), as the manifest states it."""
    flavour, feats = int8_flavour(preset), (preset.cpu_features() if preset.kind != "cuda" else ())
    if flavour.tensor_cores:
        return ("tensor cores: s8 x s8 WMMA 16x16x16 with int32 accumulation (implicit GEMM, K staged 64 deep in "
                "whole fragments); uint8 activations enter as q - 128")
    if preset.kind == "cuda":
        return "dp4a (u8 x s8, int32 accumulation) from shared-memory tiles"
    if flavour.row_tiles:
        return ("AMX-INT8 tiles (tdpbusd) for convs on 64-channel rows with one weight set, AVX-512 VNNI "
                "(vpdpbusd) for the rest")
    if "avx512vnni" in feats:
        return "AVX-512 VNNI (vpdpbusd, u8 x s8 -> int32)"
    if flavour.paired_max:
        return "AVX2 vpmaddubsw + vpmaddwd (u8 x s8 pair sums in int16, exact for the weight range)"
    if flavour.signed and flavour.order == "dot4":
        return "sdot (s8 x s8 -> int32); uint8 activations enter as q - 128"
    return "int32 SIMD lanes (the target has no int8 dot product)"


def lowering_options(preset: TargetPreset) -> dict:
    """How the reduced-precision and binary convs are written for the preset (`to_relax`'s keywords)."""
    return {"int8": int8_flavour(preset), "bf16": bf16_conv(preset), "binary_word": binary_word(preset)}


def binary_word(preset: TargetPreset) -> str:
    """The word binary convs XOR and count in: uint32 on x86 with AVX-512 VPOPCNTDQ (vpopcntd
    counts as many bits a vector as vpopcntq, and 16 channels of counts are one vector the float
    epilogue reads without narrowing: bire-resnet18's 3x3 binary convs 5-10% faster on a Zen 4),
    uint64 elsewhere (AVX2's Harley-Seal adders, NEON, CUDA)."""
    feats = preset.cpu_features() if preset.kind != "cuda" else ()
    return "uint32" if preset.arch != "aarch64" and "avx512vpopcntdq" in feats else "uint64"


def int8_flavour(preset: TargetPreset) -> Int8Flavour:
    """How int8 convs are written for the preset: aarch64's dot product (sdot) multiplies
    s8 x s8; x86's (vpdpbusd, AMX tdpbusd) u8 x s8; AVX2 without VNNI u8 x s8 too, through
    vpmaddubsw, whose saturating int16 pair sums are exact only for 7-bit weights (|w| <= 63),
    and which can add two of them in int16 before one vpmaddwd for 6-bit weights (|w| <= 31:
    what the int8 pass quantizes to unless asked for 7 bits; x86_intrin.AVX2_U8S8_8x8); x86
    without AVX2 widens to int32 in plain SIMD; CUDA: s8 x s8 WMMA on tensor cores from sm_72,
    dp4a (u8 x s8) before."""
    if preset.kind == "cuda":
        tc = wmma_arch(preset.cuda_arch, "int8")
        return Int8Flavour(signed=tc, tensor_cores=tc)
    feats = preset.cpu_features()
    if preset.arch == "aarch64":
        return Int8Flavour(signed=True, order="dot4" if "dotprod" in feats else "lanes")
    if "avx512vnni" in feats:
        return Int8Flavour(row_tiles="amx-int8" in feats, narrow_by_add=True)
    if "avx2" in feats:
        return Int8Flavour(order="dot4", weight_max=63, paired_max=31)
    return Int8Flavour(order="lanes")


def legalize_passes(preset: TargetPreset) -> list:
    """TVM's legalisation and fusion; on CPUs a binary conv's group also takes the bit-packing
    of its output (fuse_bitpack.py) before FuseTIR makes one function of each group."""
    passes = cpu.legalize_passes(preset.tvm_target())
    if preset.kind == "cuda":
        return passes
    if passes[-1].info.name != "FuseTIR":
        raise RuntimeError(f"TVM's CPU legalisation no longer ends with FuseTIR ({passes[-1].info.name})")
    return passes[:-1] + [fuse_bitpack_into_producer] + passes[-1:]


def fused_module(mod: tvm.IRModule, preset: TargetPreset) -> tvm.IRModule:
    """TVM's legalisation and fusion: the PrimFuncs that get scheduled (and that tuning tunes)."""
    target = preset.tvm_target()
    with target:
        return tvm.transform.Sequential(cpu.library_dispatch_passes(target) + legalize_passes(preset))(mod)


def relax_pipeline(preset: TargetPreset, database=None) -> tvm.transform.Pass:
    """Legalise and fuse; apply tuned schedules from `database` (a MetaSchedule Database) where
    it has a record for a function; reidc's rules schedule the rest."""
    target = preset.tvm_target()

    @tvm.transform.module_pass(opt_level=0, name="reidc_relax_pipeline")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if database is not None:
            with database:
                return _passes(mod)
        return _passes(mod)

    def _passes(mod):
        with target:  # the database pass reads the target when it is created
            tuned = [tvm.relax.transform.MetaScheduleApplyDatabase()] if database is not None else []
            if preset.kind == "cuda":
                # legalise and fuse (TVM's CUDA list minus its dlight pass), then reidc's GPU
                # rules ahead of dlight's own
                passes = (cuda.library_dispatch_passes(target) + cpu.legalize_passes(target) + tuned
                          + [dl.ApplyDefaultSchedule(*cuda_rules(), dl.gpu.Matmul(), dl.gpu.GEMV(),
                                                     dl.gpu.Reduction(), dl.gpu.GeneralReduction(),
                                                     dl.gpu.Fallback())]
                          + cuda.dataflow_lower_passes(target) + cuda.finalize_passes(target))
            else:
                passes = (cpu.library_dispatch_passes(target) + legalize_passes(preset) + tuned
                          + [dl.ApplyDefaultSchedule(*schedule_rules(preset))]
                          + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)
    return _pipeline


def restrict_single_buffer_functions(mod: tvm.IRModule) -> tvm.IRModule:
    """Give `tirx.noalias` to the PrimFuncs that lack it and have at most one buffer (one buffer
    cannot alias another: Relax's `shape_func`, which writes the VM's shape heap).

    TVM 0.27's LLVM codegen declares every function of a module first, in name order, and
    `DeclareFunctionInternal` sets the codegen's `is_restricted_` there; adding a function's body
    finds it declared and keeps the flag of the *last* function in name order. In a network built
    for any batch that is `shape_func`, which has no `tirx.noalias`, so every kernel was compiled
    as if its buffers could alias: no `noalias` parameters, one generic TBAA tag, compute scopes
    inlined. LLVM then stored an int8 conv's accumulators after every `vpdpbusd` or `vpmaddubsw`
    (ResNet-50 int8 layer3 3x3 conv on VNNI: 0.25 ms in the network, 0.12 ms built alone, on a
    Xeon; the whole network on AVX2, a Zen 3 at 1 thread: 84.1 -> 62.4 ms, bit-identical)."""
    funcs = {}
    for gv, f in mod.functions.items():
        restricted = f.attrs is not None and bool(f.attrs.get("tirx.noalias", False))
        buffers = [p for p in f.params if isinstance(p.ty, (tvm.tirx.BufferType, tvm.ir.PointerType))] \
            if isinstance(f, tvm.tirx.PrimFunc) else []
        if isinstance(f, tvm.tirx.PrimFunc) and not restricted and len(buffers) <= 1:
            f = f.with_attr("tirx.noalias", True)
        funcs[gv] = f
    return tvm.IRModule(funcs, attrs=mod.attrs)


def _cpu_tir_pipeline(**kwargs):
    """TVM's TIR lowering (every single-buffer function restricted first: see
    `restrict_single_buffer_functions`), then AMX tile configurations hoisted to the top of each
    parallel task (kernels/amx_config.py) and small "local" register tiles kept on the stack
    (kernels/stack_tiles.py)."""
    lower, finalize_host, finalize_device = tvm.tirx.compilation_pipeline.get_tir_pipeline("default", **kwargs)

    def pipeline(mod: tvm.IRModule) -> tvm.IRModule:
        mod = lower(restrict_single_buffer_functions(mod))
        funcs = {gv: stack_register_tiles(hoist_tile_config(f)) if isinstance(f, tvm.tirx.PrimFunc) else f
                 for gv, f in mod.functions.items()}
        return tvm.IRModule(funcs, attrs=mod.attrs)
    return pipeline, finalize_host, finalize_device


CPU_TIR_PIPELINE = "reidc_cpu"
tvm.tirx.compilation_pipeline.register_tir_pipeline(CPU_TIR_PIPELINE, _cpu_tir_pipeline)


def tir_pipeline_for(target: tvm.target.Target) -> str:
    """TVM's default TIR pipeline for CUDA, reidc's (`reidc_cpu`) for CPUs."""
    return "default" if target.kind.name == "cuda" else CPU_TIR_PIPELINE


def build(mod: tvm.IRModule, preset: TargetPreset, database=None):
    """Compile to a `tvm.relax` VM executable (call `.export_library(path)` to save it)."""
    target = preset.tvm_target()
    return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(preset, database),
                       tir_pipeline=tir_pipeline_for(target))


def device_source(ex) -> str | None:
    """The generated CUDA C of a built executable (None for CPU builds)."""
    stack = [ex.mod]
    while stack:
        m = stack.pop()
        if m.kind == "cuda":
            return m.inspect_source("")
        stack.extend(m.imports)
    return None


# TVM's LLVM codegen emits DWARF for every kernel; nothing reads it from a deployed library
# (symbols stay, for perf and gdb backtraces) and it was a sixth of bire-resnet18's artifact:
# the linker drops it
LINK_OPTIONS = ["-Wl,--strip-debug"]


def export(ex, path, preset: TargetPreset) -> None:
    """Write the library, without debug sections (and, for CUDA, the generated kernels' source
    beside it as kernels.cu, for nvcc checks and profiling); cross targets link with their
    toolchain."""
    if preset.kind == "cuda":
        (path.parent / "kernels.cu").write_text(device_source(ex))
    if preset.cross_compiler:
        from tvm.support.cc import cross_compiler
        ex.export_library(str(path), fcompile=cross_compiler(preset.cross_compiler), options=LINK_OPTIONS)
    else:
        ex.export_library(str(path), options=LINK_OPTIONS)
