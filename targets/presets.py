"""Target presets. A preset is data: the TVM target dict, the SIMD width reidc's schedules use,
the toolchain that links the library, how the code can be run from this machine, and the CPU
features a machine needs to run it (checked before local verification)."""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
from dataclasses import dataclass, field
from functools import lru_cache

from reidc.compiler.base.errors import UserError


class TargetError(UserError, ValueError):
    """A target the user named that does not exist or is not supported."""


class ToolchainError(UserError, RuntimeError):
    """A tool a target needs (cross compiler, qemu, TVM's aarch64 runtime) is missing or failed."""


# How an artifact is executed from this (x86-64) machine.
LOCAL, QEMU_AARCH64, CUDA = "local", "qemu-aarch64", "cuda"


@dataclass(frozen=True)
class TargetPreset:
    name: str
    description: str
    tvm: dict
    vector_bits: int          # SIMD register width the CPU schedules tile for (GPU: the host's)
    requires: tuple[str, ...] = ()   # /proc/cpuinfo flags needed to run the code here
    features: tuple[str, ...] = field(default_factory=tuple)  # what the preset enables, for `reidc targets`
    cross_compiler: str | None = None  # C++ driver that links the library (None: the host's g++)
    runs_via: str = LOCAL              # local | qemu-aarch64 | cuda
    vector_registers: int = 16         # architectural SIMD registers (AVX2 16, NEON and AVX-512 32)

    @property
    def vector_lanes(self) -> int:
        """float32 lanes per SIMD register."""
        return self.vector_bits // 32

    @property
    def kind(self) -> str:
        return self.tvm["kind"]

    @property
    def arch(self) -> str:
        """The CPU architecture the library's host code is for."""
        host = self.tvm.get("host", self.tvm) if self.kind == "cuda" else self.tvm
        return "aarch64" if str(host.get("mtriple", "")).startswith("aarch64") else "x86_64"

    @property
    def cuda_arch(self) -> str | None:
        return self.tvm.get("arch") if self.kind == "cuda" else None

    def tvm_target(self):
        import tvm  # targets/ is one of the layers allowed to import TVM
        return tvm.target.Target(self.tvm)

    def missing_on_host(self, cpu_features: tuple[str, ...] | None = None) -> list[str]:
        """What this machine lacks to run (and so verify) code built for the preset.
        `cpu_features`: the artifact's recorded CPU contract (default: derived from the target)."""
        machine = platform.machine()
        if self.runs_via == QEMU_AARCH64:
            if machine == "aarch64":
                return missing_cpu_features(self.cpu_features() if cpu_features is None else cpu_features, "aarch64")
            need = [t for t in ("qemu-aarch64", self.cross_compiler or "aarch64-linux-gnu-g++") if not shutil.which(t)]
            return [f"{t} (apt-get install qemu-user g++-aarch64-linux-gnu)" for t in need]
        if self.runs_via == CUDA:
            from .devices import cuda_device_count
            missing = [] if cuda_device_count() else ["an NVIDIA GPU"]
            if self.arch != ("aarch64" if machine == "aarch64" else "x86_64"):
                missing.append(f"an {self.arch} host CPU")
            return missing
        if machine not in ("x86_64", "AMD64"):
            return [f"an x86-64 CPU (this is {machine})"]
        return missing_cpu_features(self.cpu_features() if cpu_features is None else cpu_features, "x86_64")

    def llvm_target(self) -> dict:
        """The LLVM (CPU) part of the target: the target itself, or a CUDA target's host."""
        return self.tvm.get("host", {"kind": "llvm"}) if self.kind == "cuda" else self.tvm

    def cpu_features(self) -> tuple[str, ...]:
        """The instruction-set extensions (LLVM names) the generated CPU code may use: what a
        machine must have to run it. Recorded in the manifest; checked before anything runs."""
        return tuple(sorted(set(_llvm_isa_features(json.dumps(self.llvm_target(), sort_keys=True), self.arch))
                            | set(self.requires_llvm)))

    @property
    def requires_llvm(self) -> tuple[str, ...]:
        return tuple(_FLAG_TO_LLVM.get(f, f) for f in self.requires)

    def validate(self) -> None:
        """Refuse a CPU or feature name LLVM does not know (it would warn and build generic code)."""
        d = self.llvm_target()
        triple = str(d.get("mtriple") or ("aarch64-linux-gnu" if self.arch == "aarch64" else "x86_64-linux-gnu"))
        from tvm.target import codegen
        cpu = d.get("mcpu")
        if cpu and not codegen.llvm_is_valid_cpu(str(cpu), triple):
            import tvm
            known = [c for c in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple}))
                     if not c.startswith("generic")]
            raise TargetError(f"target {self.name}: mcpu {cpu!r} is not a CPU LLVM knows for {triple} "
                              f"(e.g. {', '.join(known[:6])}, ...)")
        for attr in d.get("mattr", []) or []:
            a = str(attr)
            if a[:1] not in "+-" or len(a) < 2:
                raise TargetError(f"target {self.name}: mattr {a!r}: expected +feature or -feature")
            probe = {"kind": "llvm", "mtriple": triple, "mattr": ["+" + a[1:]]}
            if a[1:] not in _quiet_llvm_features(json.dumps(probe, sort_keys=True)):
                raise TargetError(f"target {self.name}: mattr {a!r}: {a[1:]!r} is not a feature LLVM knows for {triple}")


# LLVM feature names of the instruction-set extensions that generated code can use, and how
# /proc/cpuinfo spells them where it differs after dropping '-', '.' and '_'.
_X86_ISA = ("sse", "ssse3", "avx", "amx", "fma", "f16c", "bmi", "popcnt", "lzcnt", "movbe", "gfni", "vaes",
            "vpclmulqdq", "aes", "pclmul", "sha", "adx", "xop", "cx16")
_X86_SKIP = ("evex512", "avx10")          # no cpuinfo flag of their own (implied by avx512f)
_A64_ISA = ("neon", "fp-armv8", "dotprod", "fullfp16", "i8mm", "sve", "sve2", "bf16")
_CPUINFO = {"x86_64": {"sse3": "pni", "bmi": "bmi1", "lzcnt": "abm", "pclmul": "pclmulqdq", "sha": "shani"},
            "aarch64": {"neon": "asimd", "fparmv8": "fp", "dotprod": "asimddp", "fullfp16": "asimdhp"}}
_FLAG_TO_LLVM = {"avx512_vpopcntdq": "avx512vpopcntdq", "avx512_vnni": "avx512vnni", "amx_tile": "amx-tile",
                 "amx_int8": "amx-int8", "amx_bf16": "amx-bf16", "avx512_bf16": "avx512bf16"}


def _norm(name: str) -> str:
    return name.lower().replace("-", "").replace(".", "").replace("_", "")


def _quiet_llvm_features(target_json: str) -> frozenset[str]:
    """LLVM's feature set for a target, with LLVM's warnings about unknown names silenced."""
    import tvm
    from tvm.target import codegen
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            return frozenset(str(f) for f in codegen.llvm_get_cpu_features(tvm.target.Target(json.loads(target_json))))
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@lru_cache(maxsize=64)
def _llvm_isa_features(target_json: str, arch: str) -> tuple[str, ...]:
    d = json.loads(target_json)
    if arch == "x86_64" and not d.get("mcpu") and not d.get("mattr"):
        d = {**d, "mcpu": "x86-64"}  # LLVM's default for a bare x86 target
    feats = _quiet_llvm_features(json.dumps(d, sort_keys=True))
    if arch == "aarch64":
        return tuple(sorted(f for f in feats if f in _A64_ISA))
    return tuple(sorted(f for f in feats if f.startswith(_X86_ISA) and not f.startswith(_X86_SKIP)))


def cpuinfo_names(features, arch: str) -> list[str]:
    """LLVM feature names as /proc/cpuinfo spells them (compared with '-', '.', '_' dropped):
    what the C++ runner checks on a board that has no Python."""
    table = _CPUINFO.get(arch, {})
    return [table.get(_norm(f), _norm(f)) for f in features]


def missing_cpu_features(required, arch: str) -> list[str]:
    """The required features (LLVM names) this machine's CPU lacks, by /proc/cpuinfo."""
    have = {_norm(f) for f in host_features()}
    if not have:  # no /proc/cpuinfo (not Linux): nothing to check against
        return []
    table = _CPUINFO.get(arch, {})
    return [f for f in required if table.get(_norm(f), _norm(f)) not in have]


@lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


_AVX2 = ("avx2", "fma", "f16c", "bmi2", "movbe")
_AVX512 = _AVX2 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
_A64 = {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}
_A64_CXX = "aarch64-linux-gnu-g++"


def _arm(name, description, mcpu, mattr, features):
    tvm = {**_A64, **({"mcpu": mcpu} if mcpu else {}), "mattr": list(mattr)}
    return TargetPreset(name=name, description=description, tvm=tvm, vector_bits=128, features=features,
                        cross_compiler=_A64_CXX, runs_via=QEMU_AARCH64, vector_registers=32)


def _cuda(sm, description, host_arm=False):
    host = {**_A64, "mcpu": "cortex-a78ae", "mattr": ["+neon"]} if host_arm else {"kind": "llvm", "mcpu": "x86-64"}
    return TargetPreset(name=f"sm{sm}", description=description,
                        tvm={"kind": "cuda", "arch": f"sm_{sm}", "host": host},
                        vector_bits=128, vector_registers=32 if host_arm else 16,
                        features=(f"sm_{sm}", "__popcll", "shared-memory conv tiles", "dlight GPU rules")
                        + (("aarch64 host",) if host_arm else ()),
                        cross_compiler=_A64_CXX if host_arm else None, runs_via=CUDA)


def _x86(name, description, tvm, requires=(), features=()):
    """An x86 preset: SIMD width and registers from the widest vector extension it enables."""
    bits = 512 if "avx512f" in requires else 256 if "avx2" in requires else 128
    return TargetPreset(name=name, description=description, tvm=tvm, vector_bits=bits, requires=requires,
                        features=features, vector_registers=32 if bits == 512 else 16)


PRESETS: dict[str, TargetPreset] = {p.name: p for p in (
    _x86("x86-64", "any x86-64 CPU (SSE2 only)", {"kind": "llvm", "mcpu": "x86-64"}, features=("sse2",)),
    _x86("x86-avx2", "x86-64-v3: Haswell / Zen and newer", {"kind": "llvm", "mcpu": "x86-64-v3"},
         requires=_AVX2, features=("avx2", "fma", "popcnt")),
    _x86("x86-avx512", "x86-64-v4: Skylake-SP / Zen 4 and newer, +VPOPCNTDQ",
         {"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vpopcntdq"]},
         requires=_AVX512 + ("avx512_vpopcntdq",), features=("avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq")),
    _x86("x86-avx512-vnni", "x86-64-v4 + VPOPCNTDQ + VNNI (int8 vpdpbusd): Ice Lake / Sapphire Rapids / Zen 4",
         {"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vpopcntdq", "+avx512vnni"]},
         requires=_AVX512 + ("avx512_vpopcntdq", "avx512_vnni"),
         features=("avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq", "avx512vnni")),
    _x86("x86-avx512-bf16", "x86-64-v4 + VPOPCNTDQ + VNNI + AVX512-BF16 (bf16 vdpbf16ps): Zen 4 and newer",
         {"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vpopcntdq", "+avx512vnni", "+avx512bf16"]},
         requires=_AVX512 + ("avx512_vpopcntdq", "avx512_vnni", "avx512_bf16"),
         features=("avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq", "avx512vnni", "avx512bf16")),
    _x86("x86-amx", "x86-64-v4 + VPOPCNTDQ + VNNI + AMX-INT8/BF16 (tiles: tdpbusd, tdpbf16ps): Sapphire Rapids "
                    "and newer Xeons",
         # -prefer-256-bit: LLVM splits x86-64-v4's wide vector loops into 256-bit halves by
         # default; at full width the int8 convs' epilogues make R50 int8 7% faster here
         {"kind": "llvm", "mcpu": "x86-64-v4",
          "mattr": ["+avx512vpopcntdq", "+avx512vnni", "+amx-tile", "+amx-int8", "+amx-bf16", "-prefer-256-bit"]},
         requires=_AVX512 + ("avx512_vpopcntdq", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"),
         features=("avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq", "avx512vnni", "amx-tile", "amx-int8",
                   "amx-bf16")),
    _arm("aarch64", "any 64-bit ARM CPU with NEON (ARMv8-A)", None, ("+neon",), ("neon", "cnt popcount")),
    _arm("rpi4", "Raspberry Pi 4 (Cortex-A72)", "cortex-a72", ("+neon",), ("neon", "cnt popcount", "cortex-a72")),
    _arm("rpi5", "Raspberry Pi 5 (Cortex-A76)", "cortex-a76", ("+neon", "+dotprod"),
         ("neon", "dotprod", "fp16", "cnt popcount", "cortex-a76")),
    _arm("orin-cpu", "Jetson Orin CPU (Cortex-A78AE)", "cortex-a78ae", ("+neon", "+dotprod"),
         ("neon", "dotprod", "fp16", "cnt popcount", "cortex-a78ae")),
    _cuda(75, "NVIDIA T4 (Turing)"),
    _cuda(86, "NVIDIA A10 / RTX 30 (Ampere)"),
    _cuda(87, "Jetson Orin GPU (Ampere), aarch64 host", host_arm=True),
    _cuda(89, "NVIDIA L4 / RTX 40 (Ada)"),
    _cuda(90, "NVIDIA H100 (Hopper)"),
)}


def _host_preset() -> TargetPreset:
    have = host_features()
    base = next((PRESETS[n] for n in ("x86-amx", "x86-avx512-bf16", "x86-avx512-vnni", "x86-avx512", "x86-avx2") if all(f in have for f in PRESETS[n].requires)),
                PRESETS["x86-64"])
    cores = os.cpu_count() or 1
    return dataclasses.replace(base, name="host", description=f"this machine: {base.name} ({cores} cores)",
                               tvm={**base.tvm, "num-cores": cores})


def _from_dict(d: dict) -> TargetPreset:
    """A user's TVM target dict for hardware the presets miss: llvm (x86 or aarch64) or cuda."""
    custom = {"name": "custom", "description": "user-supplied TVM target", "tvm": d}
    kind = d.get("kind")
    if kind == "cuda":
        if not str(d.get("arch", "")).startswith("sm_"):
            raise TargetError('a cuda target needs "arch": "sm_XY"')
        host = d.get("host", {"kind": "llvm"})
        arm = str(host.get("mtriple", "")).startswith("aarch64")
        return TargetPreset(**custom, vector_bits=128, features=(d["arch"],), cross_compiler=_A64_CXX if arm else None,
                            runs_via=CUDA, vector_registers=32 if arm else 16)
    if kind != "llvm":
        raise TargetError(f"target kind {kind!r} is not supported (llvm for x86-64 / aarch64, or cuda)")
    triple = str(d.get("mtriple", ""))
    if triple.startswith("aarch64"):
        return TargetPreset(**custom, vector_bits=128, cross_compiler=_A64_CXX, runs_via=QEMU_AARCH64,
                            vector_registers=32)
    if triple and not triple.startswith("x86_64"):
        raise TargetError(f"target triple {triple!r} is not supported (x86_64-* or aarch64-*)")
    bits = 512 if "v4" in str(d.get("mcpu", "")) or "avx512" in str(d.get("mattr", "")) else 256
    return TargetPreset(**custom, vector_bits=bits, vector_registers=32 if bits == 512 else 16)


def get_target(name_or_json: str) -> TargetPreset:
    """A preset name, `host`, or a TVM target dict as JSON (for hardware the presets miss)."""
    if name_or_json == "host":
        return _host_preset()
    if name_or_json in PRESETS:
        return PRESETS[name_or_json]
    if name_or_json.lstrip().startswith("{"):
        try:
            d = json.loads(name_or_json)
        except json.JSONDecodeError as e:
            raise TargetError(f"target JSON does not parse: {e}") from None
        if not isinstance(d, dict):
            raise TargetError("target JSON must be an object such as {\"kind\": \"llvm\", \"mcpu\": \"x86-64-v3\"}")
        return _from_dict(d)
    raise TargetError(f"unknown target {name_or_json!r}; known: host, {', '.join(PRESETS)} (or a TVM target JSON)")


def preset_from_manifest(entry: dict) -> TargetPreset:
    """The preset an artifact was built for, from its manifest's "target" entry."""
    name, d = entry.get("preset"), entry.get("tvm", {})
    if not isinstance(d, dict):
        raise TargetError(f"the target's TVM entry is {type(d).__name__}, not an object")
    if name in PRESETS and PRESETS[name].tvm == d:
        return PRESETS[name]
    p = _from_dict(d)  # host: what the build machine resolved to, not this machine
    if name == "host":
        base = next((b for b in PRESETS.values() if b.tvm == {k: v for k, v in d.items() if k != "num-cores"}), None)
        if base is not None:
            p = dataclasses.replace(base, tvm=d)
        return dataclasses.replace(p, name="host", description="the machine it was built on")
    return p
