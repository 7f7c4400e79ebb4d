"""Which accelerators this machine has."""
from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def cuda_device_count() -> int:
    """Number of CUDA GPUs TVM's runtime can see here (0 without a GPU or a driver)."""
    try:
        import tvm
        n = 0
        while n < 64 and tvm.cuda(n).exist:
            n += 1
        return n
    except Exception:  # a TVM runtime without CUDA support, or no driver
        return 0
