import os
import subprocess

import numpy as np
import pytest
import torch

os.environ.setdefault("TVM_NUM_THREADS", "2")
torch.set_num_threads(2)

SMALL = (64, 32)  # input size for fast tests (multiples of 32)


@pytest.fixture(scope="session")
def small_r18():
    from reidc.frontend.zoo import zoo_model
    return {s: zoo_model("cmnas-resnet18", s, seed=1, input_size=SMALL) for s in ("all-split", "all-shared", "random:7")}


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def readonly(tmp_path):
    """A read-only file system (tmpfs mounted ro): what root cannot write either."""
    d = tmp_path / "ro"
    d.mkdir()
    if os.geteuid() == 0:
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True)
        if r.returncode == 0:
            yield d
            subprocess.run(["umount", str(d)])
            return
    os.chmod(d, 0o555)  # not root: permissions do it
    yield d
    os.chmod(d, 0o755)


@pytest.fixture(scope="module", autouse=True)
def _release_memory():
    """After each test module: collect cycles (TVM executables and the modules they hold) and hand
    freed heap back to the OS, which glibc otherwise keeps: the suite runs in one process that
    reached 18.6 GB of a 23 GB machine (test_bconv2d..test_op_specs alone: 1.19 -> 1.01 GB)."""
    yield
    import ctypes
    import gc
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc
        pass
