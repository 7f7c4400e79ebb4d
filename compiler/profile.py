"""`reidc profile`: where an artifact's time goes, per kernel (TVM's fused functions).

One instrumented run of the entry records every kernel call with its arguments (the VM's own
instrument hook: no rebuild); each distinct call is then timed alone on those arguments
(best of rounds of about 50 ms), and the whole entry is timed uninstrumented. A conv kernel's
multiply-accumulates come from its weight and output shapes (the weights the kernel reads: a
strided bf16 conv's phase weights, a binary conv's packed words x their bits), so each row
states GMAC/s and the fraction of the unit's peak on this machine:
    peak = cores x frequency x MACs per cycle and core of the unit the kernel runs on
(fp32: 2 FMA ports x SIMD lanes; int8: VNNI 2 x 64, AMX-INT8 1024, AVX2 vpmaddubsw 32, or
42.7 with 6-bit weights, two vpmaddubsw per vpmaddwd (the image's stem, one 4-channel group,
takes one per vpmaddwd and shows below its peak); bf16:
AMX-BF16 512, AVX512-BF16 vdpbf16ps 2 x lanes x 2 (measured one 512-bit vdpbf16ps a cycle on a
Zen 4: the same port count as its FMA); binary: one 512-bit VPOPCNTQ (or the vector width) of bits per cycle; where the
core issues one 512-bit FMA a cycle (Zen 4, one-port Intel parts: compiler/clock.py measures it,
with `ghz` stated too) the 512-bit SIMD units (fp32, and bf16 and int8 on them) give one port's
worth). The
frequency is measured (compiler/clock.py: an FMA loop on every thread, built for the artifact's
target) unless stated (`ghz`); /proc/cpuinfo's "cpu MHz" (the base clock) only where the
measurement cannot run. Kernel times alone leave out what
a whole run adds (the VM's allocations and calls, caches cold from the previous kernel): the
report states that remainder. A Winograd conv's rate counts the direct conv's MACs (2.25x the
multiplies F(2x2, 3x3) does, 4x F(4x4)'s), so it compares with the direct kernels and can pass
100% of the peak.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .base.errors import InputError
from .kernel_timing import record_kernels, time_kernels
from .lower.kernel_macs import conv_macs as macs_of, kernel_kind, output_index
from .runtime import Compiled, tvm_threads


@dataclass(frozen=True)
class Peak:
    """MACs per cycle and core of each unit reidc's kernels use on a preset."""

    fp32: float
    int8: float
    bf16: float
    binary: float

    @classmethod
    def of(cls, features: tuple[str, ...], vector_bits: int, int8_weight_max: int = 127,
           split_512: bool = False) -> "Peak":
        """`split_512`: the core issues one 512-bit FMA (and vpdpbusd, vpmaddubsw) a cycle, not
        two (Zen 4, one-port Intel parts; compiler/clock.py measures it): those units give half."""
        lanes = vector_bits // 32
        ports = 1 if split_512 and vector_bits == 512 else 2
        fp32 = ports * lanes                              # FMA ports x lanes
        if "amx-int8" in features:
            int8 = 1024.0                                 # tdpbusd: 16 x 16 x 64 per 16 cycles
        elif "avx512vnni" in features:
            int8 = ports * 64.0                           # vpdpbusd, one per FMA port
        else:
            int8 = ports * lanes * 2.0                    # vpmaddubsw + vpmaddwd per 32 MACs, or widening SIMD
            if "avx2" in features and int8_weight_max <= 31:
                int8 *= 4 / 3                             # 2 vpmaddubsw + 1 vpmaddwd per 64 MACs
        if "amx-bf16" in features:
            bf16 = 512.0                                  # tdpbf16ps: 16 x 16 x 32 per 16 cycles
        elif "avx512bf16" in features:
            bf16 = fp32 * 2                               # vdpbf16ps: lanes x a pair, on the FMA ports
        else:
            bf16 = fp32                                   # float32 FMAs of the decoded values
        return cls(float(fp32), int8, bf16, float(vector_bits))


def cpu_ghz() -> float | None:
    """The clock /proc/cpuinfo states (its first "cpu MHz"), None where it has none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":", 1)[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


def peak_clock(preset, cores: int, progress, stated: float | None = None) -> tuple[float | None, str, bool]:
    """(GHz, how it was found, whether 512-bit FMAs issue one a cycle): `stated`, else measured on
    `cores` threads, else /proc/cpuinfo's base clock. The FMA ports do not depend on the clock:
    on a 512-bit preset they are measured with a stated clock too."""
    if stated and preset.vector_bits != 512:
        return stated, "stated", False
    from .clock import measured_clock
    progress(f"measuring the clock: an FMA loop on {cores} thread(s)")
    try:
        c = measured_clock(preset, cores)
    except Exception as e:  # noqa: BLE001 - no compiler for the loop here: the stated or base clock, said so
        progress(f"could not time the FMA loop ({type(e).__name__}: {e}); using "
                 + ("the stated clock, two 512-bit FMA ports assumed" if stated else "/proc/cpuinfo's clock"))
        return (stated, "stated", False) if stated else (cpu_ghz(), "/proc/cpuinfo cpu MHz (base clock)", False)
    ghz, how = (stated, "stated") if stated else (round(c.ghz, 2), f"measured: fp32 FMA loop on {cores} threads")
    return ghz, how + ("; one 512-bit FMA a cycle here, not two" if c.split_512 else ""), c.split_512


def conv_macs(name: str, args: list) -> int | None:
    """Multiply-accumulates of one call of a conv kernel on these arrays (None for other kernels)."""
    if kernel_kind(name) is None or len(args) < 3:
        return None
    weight, out = args[1], args[output_index(name)]
    return macs_of(name, tuple(int(v) for v in weight.shape), str(weight.dtype), tuple(int(v) for v in out.shape))


def profile(artifact: str | Path, batch: int = 1, mode: str | None = None, seed: int = 0, ghz: float | None = None,
            progress=lambda msg: None) -> dict:
    """Per kernel: calls per run, ms per call alone, total, share of the run, GMAC/s and the
    fraction of the unit's peak (see the module docstring); plus the whole run's time."""
    comp = Compiled(artifact, progress)
    vm = getattr(comp.executor, "vm", None)
    if vm is None or comp.preset.kind == "cuda":
        raise InputError(f"{artifact} is built for {comp.preset.name}: reidc profile times CPU builds that run in "
                         "this process (x86 here; an aarch64 build on the board itself)")
    if batch < 1:
        raise InputError(f"--batch {batch}: must be at least 1")
    man = comp.manifest
    batch = man.get("batch") or man.get("export_batch") or batch
    if mode is None:   # the visible entry of a cross-modality build, else the only one (fast-reid, torchreid)
        mode = "visible" if "visible" in man["modes"] else man["modes"][0]
    if mode not in man["modes"]:
        raise InputError(f"{artifact} has no {mode} entry (it has {', '.join(man['modes'])}): pass --mode")
    rng = np.random.default_rng(seed)
    lo, hi = man.get("input_range") or (None, None)
    shape = (batch,) + tuple(man["input_shape"])
    x = (rng.standard_normal(shape) if lo is None else rng.uniform(lo, hi, shape)).astype(np.float32)
    which = (np.arange(batch) % 2).astype(np.int32) if mode == "mixed" else mode   # mixed: alternating
    entry, arrays = comp.args(x, which)
    calls, builtin_calls = record_kernels(comp, entry, arrays)
    progress(f"timing {len(calls)} kernels alone")
    alone = time_kernels(calls)
    once = comp.time_ms(x, which, number=1, repeat=1)
    whole = comp.time_ms(x, which, number=max(1, int(200 / max(once, 1e-3))), repeat=3)   # ~0.2 s a round
    feats = tuple(man["target"].get("cpu_features") or comp.preset.cpu_features())
    wmax = int(((man.get("precision") or {}).get("int8") or {}).get("weight_max", 127))
    cores = tvm_threads()   # as Compiled set them
    ghz, source, split = peak_clock(comp.preset, cores, progress, ghz)
    peak = Peak.of(feats, comp.preset.vector_bits, wmax, split_512=split)
    rows = []
    for key, (func, args, n) in calls.items():
        name = key[0]
        ms = alone[key] * 1e3
        row = {"kernel": name, "calls": n, "ms_per_call": round(ms, 4), "ms": round(ms * n, 4),
               "args": [list(s) for s, _ in key[1]]}
        macs, kind = conv_macs(name, args), kernel_kind(name)
        if macs:
            gmacs = macs / (ms * 1e-3) / 1e9
            row.update(unit=kind, macs_per_call=int(macs), gmac_per_s=round(gmacs, 1))
            if "winograd" in name:   # the direct conv's MACs (kernel_macs.py): 2.25x (F(2x2)) or 4x (F(4x4)) what it multiplies
                row["effective"] = "winograd: rate in the direct conv's MACs"
            if ghz:
                row["peak_fraction"] = round(gmacs / (getattr(peak, kind) * cores * ghz), 3)
        rows.append(row)
    total = sum(r["ms"] for r in rows)
    for r in rows:
        r["share"] = round(r["ms"] / whole, 4) if whole else None
    rows.sort(key=lambda r: -r["ms"])
    return {"artifact": str(artifact), "model": man.get("model"), "target": comp.preset.name, "entry": entry,
            "batch": batch, "threads": cores, "ghz": ghz, "ghz_source": source if ghz else None,
            "peak_macs_per_cycle_per_core": peak.__dict__, "whole_run_ms": round(whole, 3),
            "kernels_alone_ms": round(total, 3), "remainder_ms": round(whole - total, 3),
            "vm_builtin_calls": builtin_calls, "kernels": rows}
