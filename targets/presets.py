"""Target presets. A preset is data: the TVM target dict, the SIMD width reidc's schedules use,
and the CPU features a machine needs to run the code (checked before local verification)."""
from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from functools import lru_cache


class TargetError(ValueError):
    pass


@dataclass(frozen=True)
class TargetPreset:
    name: str
    description: str
    tvm: dict
    vector_bits: int          # SIMD register width the schedules tile for
    requires: tuple[str, ...] = ()   # /proc/cpuinfo flags needed to run the code here
    features: tuple[str, ...] = field(default_factory=tuple)  # what the preset enables, for `reidc targets`

    @property
    def vector_lanes(self) -> int:
        """float32 lanes per SIMD register."""
        return self.vector_bits // 32

    def tvm_target(self):
        import tvm  # targets/ is one of the layers allowed to import TVM
        return tvm.target.Target(self.tvm)

    def missing_on_host(self) -> list[str]:
        if platform.machine() not in ("x86_64", "AMD64") and self.tvm.get("kind") == "llvm":
            return [f"an x86-64 CPU (this is {platform.machine()})"]
        have = host_features()
        return [f for f in self.requires if f not in have]


@lru_cache(maxsize=1)
def host_features() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


_AVX2 = ("avx2", "fma", "f16c", "bmi2", "movbe")
_AVX512 = _AVX2 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")

PRESETS: dict[str, TargetPreset] = {p.name: p for p in (
    TargetPreset("x86-64", "any x86-64 CPU (SSE2 only)", {"kind": "llvm", "mcpu": "x86-64"}, 128,
                 (), ("sse2",)),
    TargetPreset("x86-avx2", "x86-64-v3: Haswell / Zen and newer", {"kind": "llvm", "mcpu": "x86-64-v3"}, 256,
                 _AVX2, ("avx2", "fma", "popcnt")),
    TargetPreset("x86-avx512", "x86-64-v4: Skylake-SP / Zen 4 and newer, +VPOPCNTDQ",
                 {"kind": "llvm", "mcpu": "x86-64-v4", "mattr": ["+avx512vpopcntdq"]}, 512,
                 _AVX512 + ("avx512_vpopcntdq",), ("avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq")),
)}


def _host_preset() -> TargetPreset:
    have = host_features()
    base = next((PRESETS[n] for n in ("x86-avx512", "x86-avx2") if all(f in have for f in PRESETS[n].requires)),
                PRESETS["x86-64"])
    cores = os.cpu_count() or 1
    return TargetPreset("host", f"this machine: {base.name} ({cores} cores)", {**base.tvm, "num-cores": cores},
                        base.vector_bits, base.requires, base.features)


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
        if d.get("kind") != "llvm":
            raise TargetError(f"target kind {d.get('kind')!r} is not supported yet (x86 llvm only)")
        bits = 512 if "v4" in str(d.get("mcpu", "")) or "avx512" in str(d.get("mattr", "")) else 256
        return TargetPreset("custom", "user-supplied TVM target", d, bits)
    raise TargetError(f"unknown target {name_or_json!r}; known: host, {', '.join(PRESETS)} (or a TVM target JSON)")
