"""tests/gpu_check.sh's first step: can TVM run a kernel on this machine's GPU? Prints what it
finds (PyTorch, the GPU, TVM) and builds, loads and runs one small CUDA kernel through TVM. TVM
compiles a library's CUDA source when it loads it, through tvm.support.nvcc's callback: NVRTC
(cuda-bindings) by default, nvcc with TVM_CUDA_COMPILE_MODE=nvcc. Exit status 0 when it ran."""
import os

import numpy as np
import torch
import tvm
from tvm import te

from reidc.targets.devices import cuda_device_count

arch = "sm_%d%d" % torch.cuda.get_device_capability()
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees {torch.cuda.get_device_name(0)} ({arch}); "
      f"TVM {tvm.__version__} sees {cuda_device_count()} GPU(s)")
assert cuda_device_count() > 0, "TVM's CUDA runtime sees no GPU (libtvm_runtime_cuda.so not loaded?)"
a = te.placeholder((1000,), name="a")
b = te.compute((1000,), lambda i: a[i] * 2.0 + 1.0, name="b")
sch = tvm.s_tir.schedule.Schedule(te.create_prim_func([a, b]))
(i,) = sch.get_loops(sch.get_sblock("b"))
bx, tx = sch.split(i, [None, 128])
sch.bind(bx, "blockIdx.x")
sch.bind(tx, "threadIdx.x")
f = tvm.compile(sch.mod, target={"kind": "cuda", "arch": arch})
dev = tvm.cuda(0)
x = np.arange(1000, dtype=np.float32)
y = tvm.runtime.tensor(np.zeros(1000, np.float32), dev)
f(tvm.runtime.tensor(x, dev), y)
assert np.array_equal(y.numpy(), x * 2 + 1), "the kernel's result is wrong"
print(f"a TVM CUDA kernel ran (compiled at load by {os.environ.get('TVM_CUDA_COMPILE_MODE', 'nvrtc')})")
