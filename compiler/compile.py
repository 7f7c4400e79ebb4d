"""`reidc compile`: checkpoint -> IR -> passes -> Relax -> build -> verify -> artifact.

The artifact is written to a temporary sibling directory and renamed into place only after
verification passes; on any failure nothing is left behind.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from frontend.atomic import atomic_directory
from frontend.capture import capture_exported, capture_module
from frontend.checkpoint import load_checkpoint
from targets import get_target

from .errors import VerificationError
from .passes.pipeline import run_pipeline
from .reference import rel_err, seeded_inputs, torch_forward
from .runtime import LIB, MANIFEST, Compiled

TOLERANCE = 1e-4
REIDC_VERSION = "0.1.0"


@dataclass
class CompileOptions:
    target: str = "host"
    arch: str | None = None
    split_config: str | None = None
    dump_ir: str | None = None
    mixed_strategy: str | None = None   # None: per-layer choice; "affine" | "weights"
    verify: bool = True
    verify_batch: int = 3
    seed: int = 0
    progress: Callable[[str], None] = field(default=lambda msg: None)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_source(ckpt: str | Path, opts: CompileOptions):
    """(torch module, IR graph, modes, manifest facts) for a reidc checkpoint or a .pt2 program."""
    ckpt = Path(ckpt)
    if ckpt.suffix == ".pt2":
        import torch
        g = capture_exported(ckpt)
        ep = torch.export.load(str(ckpt))
        module = ep.module()
        example = next(n.meta["val"] for n in ep.graph.nodes if n.op == "placeholder"
                       and n.name in ep.graph_signature.user_inputs)
        # the program's guards may pin the batch size: verify at the batch it was exported with
        batch = example.shape[0] if isinstance(example.shape[0], int) else None
        facts = {"model": ckpt.stem, "family": "torch.export", "arch": None, "export_batch": batch}
        return module, g, ("main",), facts
    model = load_checkpoint(ckpt, arch=opts.arch, split_config=opts.split_config)
    spec = model.spec
    g = capture_module(model, (3,) + tuple(spec.input_size), spec.name)
    facts = {"model": spec.name, "family": spec.family, "arch": spec.to_json()}
    return model, g, ("visible", "infrared", "mixed"), facts


def compile_checkpoint(ckpt: str | Path, out: str | Path, opts: CompileOptions | None = None) -> dict:
    """Compile, verify and write an artifact directory; return its manifest."""
    from compiler.lower.build import build  # TVM is imported only once compiling starts
    from compiler.lower.to_relax import to_relax
    import tvm

    opts = opts or CompileOptions()
    say = opts.progress
    preset = get_target(opts.target)
    out = Path(out)
    t0 = time.perf_counter()
    say(f"loading {ckpt}")
    module, g, modes, facts = load_source(ckpt, opts)
    stats: Counter = Counter()
    graphs = {}
    for mode in modes:
        say(f"running passes for the {mode} entry")
        graphs[mode] = run_pipeline(g, mode, dump_dir=opts.dump_ir, mixed_strategy=opts.mixed_strategy, stats=stats)
    say(f"lowering to Relax and building for {preset.name} ({json.dumps(preset.tvm)})")
    ex = build(to_relax(graphs), preset)
    build_s = time.perf_counter() - t0

    with atomic_directory(out) as tmp:
        ex.export_library(str(tmp / LIB))
        manifest = {
            "reidc_version": REIDC_VERSION, "tvm_version": tvm.__version__,
            **facts, "input_shape": list(graphs[modes[0]][next(i for i, n in graphs[modes[0]].items()
                                                               if n.attrs.get("name") == "x")].shape[1:]),
            "input_dtype": "float32", "output": "BNNeck feature (N, F) float32" if facts["family"] == "cmnas" else "program output",
            "modes": list(modes),
            "entries": {m: ("(x, modality)" if m == "mixed" else "(x)") for m in modes},
            "target": {"preset": preset.name, "tvm": preset.tvm},
            "checkpoint": str(Path(ckpt).resolve()), "checkpoint_sha256": _digest(Path(ckpt)),
            "mixed_plan": graphs["mixed"].meta.get("mixed_plan", {}) if "mixed" in graphs else {},
            "pass_stats": {k: v for k, v in sorted(stats.items()) if ":skipped:" not in k},
            "build_seconds": round(build_s, 1),
        }
        manifest["verification"] = verify_artifact(tmp, module, modes, manifest, opts, preset, say)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    say(f"wrote {out}")
    return manifest


def verify_artifact(path: Path, module, modes, manifest, opts: CompileOptions, preset, say) -> dict:
    """Run the written library against PyTorch eager on seeded inputs for every mode."""
    if not opts.verify:
        return {"status": "skipped", "why": "--no-verify"}
    missing = preset.missing_on_host()
    if missing:
        raise VerificationError(
            f"target {preset.name} needs CPU features this machine lacks ({', '.join(missing)}), so the "
            "build cannot be verified here; pass --no-verify to write it unverified")
    (path / MANIFEST).write_text(json.dumps(manifest))
    compiled = Compiled(path)
    shape = tuple(manifest["input_shape"])
    result = {"status": "passed", "tolerance": TOLERANCE,
              "norm": "max over samples of ||y - y_torch||_2 / ||y_torch||_2",
              "reference": "PyTorch eager, same checkpoint", "seed": opts.seed, "batch": opts.verify_batch,
              "max_rel_err": {}}
    for mode in modes:
        say(f"verifying the {mode} entry against PyTorch")
        batch = manifest.get("export_batch") or opts.verify_batch
        x, m = seeded_inputs(shape, batch, mode, opts.seed)
        ref = torch_forward(module, x, mode, m)
        got = compiled.run(x, m if mode == "mixed" else mode)
        err = rel_err(got, ref)
        result["max_rel_err"][mode] = err
        if not err <= TOLERANCE:
            raise VerificationError(f"verification failed: the {mode} entry differs from PyTorch by {err:.3g} "
                                    f"(relative L2, tolerance {TOLERANCE:g}); no artifact written")
    return result
