"""One binary layer, measured whole: `python -m reidc.compiler.layer_bench [--threads N]` prints
a table and, with --json, writes the figures.

The ResNet-18 layer 14x14x256 -> 256, 3x3, stride 1, batch 1 (`--channels`, `--size` change
it): reidc (bit-packing of the float input with its BN threshold, the popcount conv, the fused
scale), OpenVINO's BinaryConvolution of the same layer (when openvino is installed: the `bench`
extra) and PyTorch's float conv of the same shape. Each engine runs in a process of its own
(TVM fixes its thread count at the first parallel call), timed in turn as `reidc bench` does
(compiler/layer_engines.py holds the engines). reidc's and OpenVINO's outputs must be the exact
integer conv; the command fails if either is not.

Then the conv kernels alone, in as many alternating rounds (reidc's fused popcount-conv
function; OpenVINO's BinaryConvolution node, from its profiler): the whole layer also times
each engine's layout changes, bit-packing and per-call overhead. Each kernel's binary GMAC/s is
stated against the core's popcount peak as `reidc profile` states it: one vector-width of bits
a cycle (one 512-bit VPOPCNTQ) per thread, at the clock an FMA loop measures on these threads
(compiler/clock.py). A kernel that XORs, counts and adds each word issues three vector
instructions per word, so on a core that retires two 512-bit vector instructions a cycle (Zen 4)
it cannot pass two thirds of that peak.
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys

from .base.atomic import atomic_write_json, guard_output_file
from .base.errors import EngineError
from .base.modes import RunMode
from .bench_process import LABELS

def measure(channels: int = 256, size: int = 14, threads: int = 1, repeat: int = 5, peers: bool = True,
            progress=lambda s: None) -> dict:
    """{"shape", "threads", "binary_macs", "engines": {name: {ms, ..., exact}}, "speedup": {name: x}}."""
    from .bench import ROUND_S, time_rounds
    from .bench_process import shutdown, start_workers
    from .layer_engines import exact, layer
    spec = {"threads": threads, "layer": {"channels": channels, "out": channels, "size": size, "seed": 0}}
    names = ["layer_reidc"]
    if peers:
        names += ["layer_torch"] + (["layer_openvino"] if importlib.util.find_spec("openvino") else [])
    workers = start_workers({n: {**spec, "engine": n} for n in names}, progress)
    done = False
    try:
        d = layer(spec)
        res = time_rounds(workers, RunMode.VISIBLE.value, d["x"], None, repeat, say=progress)
        kernels = {n: [] for n in names if n != "layer_torch"}
        for r in range(repeat):
            progress(f"kernel round {r + 1}/{repeat}")
            for n in (list(kernels)[r % len(kernels):] + list(kernels)[:r % len(kernels)]):
                kernels[n].append(workers[n].ask(("kernel", ROUND_S), "timing the conv kernel alone"))
        done = True
    finally:
        shutdown(workers, polite=done)
    clock, per_cycle = _peak(threads, progress)
    macs = channels * channels * 9 * size * size
    rows = {}
    for n in names:
        r = res[n]
        rows[n] = {"label": LABELS[n], "ms": r["ms"], "min_ms": r["min_ms"], "max_ms": r["max_ms"],
                   "spread": r["spread"], "gmac_per_s": macs / r["ms"] * 1e-6}
        if n != "layer_torch":
            rows[n]["exact"] = exact(r["out"], d)
            k = statistics.median(kernels[n])
            rows[n]["kernel"] = {"ms": k, "min_ms": min(kernels[n]), "max_ms": max(kernels[n]),
                                 "gmac_per_s": macs / k * 1e-6}
            if clock:
                rows[n]["kernel"]["of_peak"] = macs / (k * 1e-3) / (clock * 1e9 * threads * per_cycle)
    base, kbase = rows["layer_reidc"]["ms"], rows["layer_reidc"]["kernel"]["ms"]
    return {"shape": f"{size}x{size}x{channels}->{channels} 3x3, batch 1", "threads": threads, "binary_macs": macs,
            "ghz": clock, "engines": rows,
            "speedup": {n: rows[n]["ms"] / base for n in names if n != "layer_reidc"},
            "kernel_speedup": {n: rows[n]["kernel"]["ms"] / kbase for n in kernels if n != "layer_reidc"}}


def _peak(threads: int, progress) -> tuple[float | None, float]:
    """(GHz, binary MACs per cycle and core) as `reidc profile` states the popcount peak: the
    clock an FMA loop measures on `threads` threads (or /proc/cpuinfo's where it cannot run)."""
    import os

    from ..targets import get_target
    from .profile import Peak, peak_clock
    from .runtime import usable_cpus
    # TVM's pool takes its size at its first parallel call; unset, half the logical CPUs
    os.environ.setdefault("TVM_NUM_THREADS", str(max(threads, usable_cpus())))
    preset = get_target("host")
    ghz, _, split = peak_clock(preset, threads, progress)
    return ghz, Peak.of(preset.cpu_features(), preset.vector_bits, split_512=split).binary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m reidc.compiler.layer_bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5, help="timed rounds per engine (about 0.2 s each)")
    ap.add_argument("--channels", type=int, default=256)
    ap.add_argument("--size", type=int, default=14)
    ap.add_argument("--no-peers", action="store_true", help="reidc alone (no PyTorch, no OpenVINO)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.channels % 64 or args.channels < 64 or args.size < 1 or args.threads < 1 or args.repeat < 1:
        print("layer_bench: --channels must be a multiple of 64; --size, --threads, --repeat at least 1", file=sys.stderr)
        return 2
    if args.json:
        guard_output_file(args.json, "--json")
    try:
        r = measure(args.channels, args.size, args.threads, args.repeat, not args.no_peers,
                    lambda s: print(f"layer_bench: {s}", file=sys.stderr))
    except EngineError as e:
        print(f"layer_bench: {e}", file=sys.stderr)
        return 1
    print(f"{r['shape']}, {r['threads']} thread(s), medians of {args.repeat} rounds, each engine in a process of its own")
    for n, row in r["engines"].items():
        ok = "" if "exact" not in row else ("  exact" if row["exact"] else "  NOT EXACT")
        x = f"  reidc {r['speedup'][n]:.2f}x faster" if n in r["speedup"] else ""
        print(f"  {row['label']:<28} {row['ms']:8.4f} ms  ({row['min_ms']:.4f}-{row['max_ms']:.4f})  "
              f"{row['gmac_per_s']:7.0f} GMAC/s{ok}{x}")
    peak = f" (of the popcount peak at {r['ghz']:.2f} GHz)" if r["ghz"] else ""
    print(f"the conv kernel alone{peak}:")
    for n, row in r["engines"].items():
        if "kernel" in row:
            k = row["kernel"]
            share = f"  {k['of_peak']:4.0%}" if "of_peak" in k else ""
            x = f"  reidc {r['kernel_speedup'][n]:.2f}x its speed" if n in r["kernel_speedup"] else ""
            print(f"  {row['label']:<28} {k['ms']:8.4f} ms  ({k['min_ms']:.4f}-{k['max_ms']:.4f})  "
                  f"{k['gmac_per_s']:7.0f} GMAC/s{share}{x}")
    if args.json:
        atomic_write_json(args.json, r, "--json")
    return 0 if all(row.get("exact", True) for row in r["engines"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
