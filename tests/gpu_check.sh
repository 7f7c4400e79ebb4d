#!/usr/bin/env bash
# The GPU check: the `cuda` test tier (CUDA builds run on the GPU and compared with PyTorch on
# CUDA) and `reidc bench` of CUDA builds beside PyTorch on the same GPU. Run it from anywhere on
# a machine with an NVIDIA GPU, CUDA 12/13 and PyTorch with CUDA:
#
#     bash tests/gpu_check.sh [OUTDIR]          # default OUTDIR: build/gpu-check
#
# It uses the reidc and TVM installed in $PYTHON (default python3). Where TVM is not installed
# and cannot be (a GPU machine with no package index), REIDC_TVM_BUNDLE names a folder made on a
# machine that can, by `tests/gpu_bundle.sh`; it is unpacked into a temporary folder. Where
# reidc is not installed, this checkout is used. Logs, JUnit XML and bench JSON go to OUTDIR.
# REIDC_GPU_BENCH=0 skips the benchmark; REIDC_GPU_MODELS (default "cmnas-resnet50
# bire-resnet18"), REIDC_GPU_PRECISIONS (default "fp32 int8 bf16"; bf16 runs on tensor cores
# from sm_80), REIDC_GPU_BATCHES (default "1 16") and REIDC_GPU_RUNTIMES (the engines beside
# reidc and PyTorch eager, default torch_fp16; add torch_compile where its compiles, a minute
# or more per model and batch, fit) choose what it times.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUTDIR=$(mkdir -p "${1:-$ROOT/build/gpu-check}" && cd "${1:-$ROOT/build/gpu-check}" && pwd)
PY=${PYTHON:-python3}
TMP=$(mktemp -d /tmp/reidc-gpu.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
STEP_S=${REIDC_GPU_STEP_S:-900}   # the longest one compile or bench may take
FAILED=()
: > "$OUTDIR/summary.txt"
say() { echo "== $(date +%H:%M:%S) $*" | tee -a "$OUTDIR/summary.txt"; }

if ! "$PY" -c "import tvm" 2>/dev/null; then
    B=${REIDC_TVM_BUNDLE:-}
    if [ -z "$B" ] || [ ! -f "$B/site.tar.xz" ]; then
        echo "gpu_check: TVM is not installed for $PY; pip install apache-tvm==0.27.0.post1" \
             "apache-tvm-ffi==0.1.14.post1, or set REIDC_TVM_BUNDLE to a folder made by tests/gpu_bundle.sh" >&2
        exit 2
    fi
    say "unpacking TVM from $B"
    mkdir -p "$TMP/site"
    tar -xJf "$B/site.tar.xz" -C "$TMP/site" || exit 2
    xz -T0 -dc "$B/libtvm_compiler.so.xz" > "$TMP/site/tvm/lib/libtvm_compiler.so" || exit 2
    export PYTHONPATH="$TMP/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$PY" -c "import reidc" 2>/dev/null; then
    mkdir -p "$TMP/src" && ln -s "$ROOT" "$TMP/src/reidc"
    export PYTHONPATH="$TMP/src${PYTHONPATH:+:$PYTHONPATH}"
fi
# TVM's CUDA runtime (tvm/lib/libtvm_runtime_cuda.so) links libcudart: add where PyTorch's CUDA
# packages or the toolkit keep it when the loader does not know it.
need=$(ldd "$("$PY" -c 'import tvm, os; print(os.path.dirname(tvm.__file__))')/lib/libtvm_runtime_cuda.so" 2>/dev/null |
       awk '/not found/ && /cudart/ {print $1}')
if [ -n "$need" ]; then
    lib=$(find /usr/local /opt /usr/lib "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
          -name "$need" 2>/dev/null | head -1)
    [ -n "$lib" ] && export LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
command -v nvcc > /dev/null || export PATH="/usr/local/cuda/bin:$PATH"

{ nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nvcc --version | tail -1
  lscpu | grep -E "^Model name|^CPU\(s\)"; } 2>&1 | tee -a "$OUTDIR/summary.txt"
# TVM compiles a library's CUDA kernels when it loads them: NVRTC by default, else nvcc.
if ! "$PY" "$ROOT/tests/gpu_preflight.py" 2>&1 | tee -a "$OUTDIR/summary.txt"; then
    if [ -z "${TVM_CUDA_COMPILE_MODE:-}" ] && command -v nvcc > /dev/null; then
        say "retrying with TVM_CUDA_COMPILE_MODE=nvcc"
        export TVM_CUDA_COMPILE_MODE=nvcc
        "$PY" "$ROOT/tests/gpu_preflight.py" 2>&1 | tee -a "$OUTDIR/summary.txt" ||
            { say "FAILED: TVM cannot run kernels on the GPU here"; exit 1; }
    else
        say "FAILED: TVM cannot run kernels on the GPU here"; exit 1
    fi
fi

say "cuda tier: pytest -m cuda tests/test_cuda.py"
(cd "$ROOT" && timeout "${REIDC_GPU_TIER_S:-900}" "$PY" -m pytest -q -m cuda tests/test_cuda.py -p no:cacheprovider \
     -o addopts="" --junitxml="$OUTDIR/cuda-tier.xml" -rfEs 2>&1) | tee "$OUTDIR/cuda-tier.log" | tail -25
[ "${PIPESTATUS[0]}" = 0 ] || FAILED+=("cuda tier")

if [ "${REIDC_GPU_BENCH:-1}" != 0 ]; then
    ARCH=$("$PY" -c 'import torch; print("sm%d%d" % torch.cuda.get_device_capability())')
    "$PY" -c "from reidc.targets import PRESETS; import sys; sys.exit('$ARCH' not in PRESETS)" ||
        ARCH="{\"kind\": \"cuda\", \"arch\": \"sm_${ARCH#sm}\"}"
    R=("$PY" -m reidc.compiler.cli)
    batches=()
    for b in ${REIDC_GPU_BATCHES:-1 16}; do batches+=(--batch "$b"); done
    for m in ${REIDC_GPU_MODELS:-cmnas-resnet50 bire-resnet18}; do
        "${R[@]}" zoo export "$m" --split random:7 -o "$TMP/$m-ck" > /dev/null || { FAILED+=("$m export"); continue; }
        for prec in ${REIDC_GPU_PRECISIONS:-fp32 int8 bf16}; do
            art="$TMP/$m-$prec"
            say "compile $m --precision $prec --target $ARCH"
            if ! timeout "$STEP_S" "${R[@]}" compile "$TMP/$m-ck" --target "$ARCH" --modes visible --precision "$prec" \
                    -o "$art" > "$OUTDIR/compile-$m-$prec.log" 2>&1; then
                tail -3 "$OUTDIR/compile-$m-$prec.log"; FAILED+=("$m $prec compile"); continue
            fi
            grep -i -E "verif|cosine" "$OUTDIR/compile-$m-$prec.log" | tail -2
            say "bench $m $prec"
            timeout "$STEP_S" "${R[@]}" bench "$art" "${batches[@]}" --mode visible --repeat 5 \
                --runtimes "${REIDC_GPU_RUNTIMES:-torch_fp16}" --json "$OUTDIR/bench-$m-$prec.json" \
                2>"$OUTDIR/bench-$m-$prec.err" | tee "$OUTDIR/bench-$m-$prec.txt" || {
                tail -3 "$OUTDIR/bench-$m-$prec.err"; FAILED+=("$m $prec bench"); }
        done
    done
fi
if [ ${#FAILED[@]} -gt 0 ]; then say "FAILED: ${FAILED[*]}"; exit 1; fi
say "passed"
