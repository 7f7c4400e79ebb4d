"""One binary layer, measured whole: `python -m reidc.compiler.layer_bench [--threads N]` prints
a table and, with --json, writes the figures.

The ResNet-18 layer 14x14x256 -> 256, 3x3, stride 1, batch 1 (`--channels`, `--size` change
it): reidc (bit-packing of the float input with its BN threshold, the popcount conv, the fused
scale), OpenVINO's BinaryConvolution of the same layer (when openvino is installed: the `bench`
extra) and PyTorch's float conv of the same shape. Each engine runs in a process of its own
(TVM fixes its thread count at the first parallel call), timed in turn as `reidc bench` does
(compiler/layer_engines.py holds the engines). reidc's and OpenVINO's outputs must be the exact
integer conv; the command fails if either is not.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys

from .base.atomic import atomic_write_json, guard_output_file
from .base.errors import EngineError
from .base.modes import RunMode
from .bench import LABELS

def measure(channels: int = 256, size: int = 14, threads: int = 1, repeat: int = 5, peers: bool = True,
            progress=lambda s: None) -> dict:
    """{"shape", "threads", "binary_macs", "engines": {name: {ms, ..., exact}}, "speedup": {name: x}}."""
    from .bench import start_workers, shutdown, time_rounds
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
        done = True
    finally:
        shutdown(workers, polite=done)
    macs = channels * channels * 9 * size * size
    rows = {}
    for n in names:
        r = res[n]
        rows[n] = {"label": LABELS[n], "ms": r["ms"], "min_ms": r["min_ms"], "max_ms": r["max_ms"],
                   "spread": r["spread"], "gmac_per_s": macs / r["ms"] * 1e-6}
        if n != "layer_torch":
            rows[n]["exact"] = exact(r["out"], d)
    base = rows["layer_reidc"]["ms"]
    return {"shape": f"{size}x{size}x{channels}->{channels} 3x3, batch 1", "threads": threads, "binary_macs": macs,
            "engines": rows, "speedup": {n: rows[n]["ms"] / base for n in names if n != "layer_reidc"}}


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
    if args.json:
        atomic_write_json(args.json, r, "--json")
    return 0 if all(row.get("exact", True) for row in r["engines"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
