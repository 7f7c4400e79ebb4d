"""What the runner's worker processes call (argument tensors, RPC sessions). Apart from
measure.py, whose build side imports reidc's schedules and TVM's compiler: a runner worker
restarted after a timeout or a crash starts in ~5 s instead of ~9 s (Zen 3)."""
from __future__ import annotations


def _fill(tensor) -> None:
    """Random floats and words; int32 inputs are index vectors (border classes, modality),
    so zeros, which index validly (random ones would read out of bounds and crash)."""
    import numpy as np
    rng = np.random.default_rng(0)
    shape, dtype = tuple(int(d) for d in tensor.shape), str(tensor.dtype)
    if dtype.startswith("float"):
        a = rng.standard_normal(shape).astype(dtype)
    elif dtype.startswith("uint"):
        a = rng.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True)
    else:
        a = np.zeros(shape, dtype)
    tensor.copyfrom(a)


def alloc_local(device, args_info, alloc_repeat):
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common
    return alloc_argument_common(_fill, device, args_info, alloc_repeat)


def alloc_rpc(session, device, args_info, alloc_repeat):
    return alloc_local(device, args_info, alloc_repeat)  # tensors on the remote device; the fill copies over


def create_session(rpc_config):
    """Fail at once when the tracker has no device for the key (TVM's request would wait for one
    forever), so a farm whose last device died ends the tuning with a message, not a hang."""
    if rpc_config.count_num_servers(allow_missing=True) == 0:
        raise RuntimeError(f"the tracker has no device with key {rpc_config.tracker_key!r}")
    return rpc_config.connect_server()
