"""Linux gives a process the AMX tile state only on request: `arch_prctl(ARCH_REQ_XCOMP_PERM,
XFEATURE_XTILEDATA)` (Linux 5.16+). Without it the first AMX instruction kills the process with
SIGILL. reidc asks before it runs a library in this process; a program that loads a reidc
library with plain TVM must ask too (the README shows how)."""
from __future__ import annotations

import ctypes
import platform
from functools import lru_cache

from .presets import host_features

SYS_ARCH_PRCTL = 158          # x86-64
ARCH_REQ_XCOMP_PERM = 0x1023
XFEATURE_XTILEDATA = 18


@lru_cache(maxsize=1)
def request_amx() -> bool:
    """Ask Linux for the AMX tile state for this process; True when granted (once per process)."""
    if platform.system() != "Linux" or platform.machine() != "x86_64" or "amx_tile" not in host_features():
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.syscall(SYS_ARCH_PRCTL, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0


def uses_amx(cpu_features) -> bool:
    return any(str(f).startswith("amx") for f in cpu_features or ())
