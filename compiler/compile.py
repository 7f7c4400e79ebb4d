"""`reidc compile`: checkpoint -> IR -> passes -> Relax -> build -> verify -> artifact.

The artifact is written to a temporary sibling directory and renamed into place only after
verification passes; on any failure nothing is left behind.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from reidc.targets import ToolchainError, get_target, preset_from_manifest
from reidc.targets.presets import CUDA, LOCAL, cpuinfo_names

from .base.atomic import atomic_directory, atomic_write_json, guard_output_dir
from .base.digest import file_sha256
from .base.errors import ArtifactError, InputError, VerificationError
from .base.version import __version__
from .verify_reduced import verify_reduced
from .costs import macs, weight_bytes
from .ir import Op, RunMode
from .ir.opset.conv import WINOGRAD_TILES
from .prepare import CompileOptions, check_precision, checkpoint_digest, int8_weight_max, load_source, prepare  # noqa: F401 (callers import them here)
from .reference import count_flips, presign_values, rel_err, seeded_inputs, torch_forward
from .runtime import INPUT_CONTRACT, LIB, MANIFEST, Compiled, read_manifest

TOLERANCE = 1e-4


def compile_checkpoint(ckpt: str | Path, out: str | Path, opts: CompileOptions | None = None) -> dict:
    """Compile, verify and write an artifact directory; return its manifest."""
    opts = opts or CompileOptions()
    return _compile(ckpt, None, out, opts, [ckpt, opts.tuning_db, opts.arch, opts.split_config,
                                                          opts.fastreid_config])


def compile_module(module, out: str | Path, opts: CompileOptions | None = None,
                   input_shape: tuple[int, int, int] | None = None) -> dict:
    """compile_checkpoint for a torch.nn.Module in memory (frontend/inmemory.py: reidc's own
    networks, or any module of supported ops given its input_shape); no file is written but
    the artifact. Its manifest names no checkpoint; its digest is the module's state."""
    from reidc.frontend.inmemory import module_source
    opts = opts or CompileOptions()
    training = getattr(module, "training", False)
    try:
        return _compile(None, lambda: module_source(module, input_shape, say=opts.progress), out, opts, [opts.tuning_db])
    finally:
        if hasattr(module, "train"):
            module.train(training)   # compiling puts it in eval mode; give it back as it was


def _compile(ckpt, source, out, opts: CompileOptions, inputs) -> dict:
    if opts.precision == "auto":
        return _compile_auto(ckpt, source, out, opts, inputs)
    if opts.precision == "int8" and opts.int8_weight_bits is None:
        from reidc.compiler.lower.build import int8_flavour
        flavour = int8_flavour(get_target(opts.target))
        if flavour.paired_max:
            return _compile_int8_narrow_first(ckpt, source, out, opts, inputs, flavour)
    return _compile_one(ckpt, source, out, opts, inputs)


def _compile_int8_narrow_first(ckpt, source, out, opts: CompileOptions, inputs, flavour) -> dict:
    """int8 on a target whose fastest weights are narrower than the widest it takes exactly
    (AVX2: 6 bits pair vpmaddubsw, 7 bits are exact): build with the narrow weights; where that
    build misses a verification budget, build again with the wide ones, and say why in the
    manifest (precision.int8.weight_bits_why)."""
    guard_output_dir(Path(out), "artifact", inputs)   # refused before the module is exported
    cached = source() if source else None
    again = (lambda: cached) if cached else None
    try:
        return _compile_one(ckpt, again, out, opts, inputs)
    except VerificationError as e:
        narrow, wide = flavour.paired_max.bit_length() + 1, flavour.weight_max.bit_length() + 1
        why = f"{narrow}-bit weights missed verification ({e}); built with {wide}-bit weights"
        opts.progress(why)
        return _compile_one(ckpt, again, out, dataclasses.replace(opts, int8_weight_bits=wide), inputs, why)


def _compile_one(ckpt, source, out, opts: CompileOptions, inputs, bits_why: str | None = None) -> dict:
    from reidc.compiler.lower.build import bf16_kernel, build, export, int8_flavour, int8_kernel, lowering_options  # TVM is imported only once compiling starts
    from reidc.compiler.lower.to_relax import bit_sites, to_relax
    import tvm

    say = opts.progress
    t0 = time.perf_counter()
    preset = get_target(opts.target)
    out = Path(out)
    guard_output_dir(out, "artifact", inputs)  # refuse before any work: nothing of the user's is at risk
    check_can_build(preset, opts.verify)
    check_precision(opts, preset, int8_flavour(preset))   # before any work
    tuning, batch = None, opts.batch
    if opts.tuning_db:   # before the passes: its measured algorithms choose the 3x3 convs' Winograd
        from .tunedb.database import open_for_compile
        tuning = open_for_compile(opts.tuning_db, preset, opts.batch, say)
        batch = tuning.batch
    module, graphs, modes, facts, stats = prepare(ckpt, opts, source() if source else None,
                                                  measured=tuning.measured if tuning else None)
    if opts.batch is not None and facts.get("export_batch") not in (None, opts.batch):
        raise InputError(f"--batch {opts.batch}: the program was exported for batch {facts['export_batch']}")
    if tuning:
        tuning.measured_applied = {s: a for g in graphs.values() for s, a in g.meta.get("measured_algorithms", {}).items()}
        if tuning.measured_applied:
            say(f"3x3 convs of {len(tuning.measured_applied)} shapes take the algorithm `reidc tune` timed fastest"
                + (f" (not --winograd-tiles {opts.winograd_tiles}'s)" if opts.winograd_tiles != "auto" else ""))
    kernel = {"bf16": bf16_kernel, "int8": int8_kernel}.get(opts.precision, lambda _: "")(preset)
    if kernel:
        say(f"{opts.precision} convs on {preset.name}: {kernel}")
    say(f"lowering to Relax and building for {preset.name} ({json.dumps(preset.tvm)})"
        + (f", batch {batch}" if batch else ""))
    relax_mod = to_relax(graphs, batch, **lowering_options(preset))
    if tuning:
        from reidc.compiler.lower.build import fused_module
        tuning.count_applicable(fused_module(relax_mod, preset), preset.tvm_target())
        kept = (f" ({tuning.kept_default} of them keep reidc's schedule: their best record lost the paired "
                "re-measure)") if tuning.kept_default else ""
        say(f"{tuning.tuned_functions} of {tuning.functions} kernels have tuning records{kept}; "
            "reidc's schedules do the rest")
    ex = build(relax_mod, preset, tuning.applied if tuning else None)
    build_s = time.perf_counter() - t0

    digest = facts.get("checkpoint_sha256") or checkpoint_digest(Path(ckpt))  # a .pt2's: of the bytes loaded
    with atomic_directory(out, "artifact", inputs) as tmp:
        export(ex, tmp / LIB, preset)
        manifest = {
            "reidc_version": __version__, "tvm_version": tvm.__version__,
            **facts, "input_shape": list(graphs[modes[0]][next(i for i, n in graphs[modes[0]].items()
                                                               if n.attrs.get("name") == "x")].shape[1:]),
            "input_dtype": "float32", "input_contract": facts.get("input_contract", INPUT_CONTRACT),
            "output": _output_of(facts),
            "modes": list(modes), "batch": batch,
            "tuning": tuning.summary() if tuning else None,
            "entries": {m: ("(x, modality)" if m == RunMode.MIXED else "(x)") for m in modes},
            "target": {"preset": preset.name, "tvm": preset.tvm, "arch": preset.arch,
                       "cpu_features": list(preset.cpu_features()),
                       "cpuinfo_flags": cpuinfo_names(preset.cpu_features(), preset.arch)},
            "checkpoint": str(Path(ckpt).resolve()) if ckpt is not None else None, "checkpoint_sha256": digest,
            "mixed_plan": graphs[RunMode.MIXED].meta.get("mixed_plan", {}) if RunMode.MIXED in graphs else {},
            "pass_stats": {k: v for k, v in sorted(stats.items()) if ":skipped:" not in k},
            "binary_layers": sum(1 for _, n in graphs[modes[0]].items() if n.op == Op.BCONV2D),
            "precision": layer_precision(graphs[modes[0]], opts.precision, bits_why, kernel),
            "bit_sites": {m: bit_sites(g) for m, g in graphs.items() if g.count(Op.BITPACK)},
            "build_seconds": round(build_s, 1),
            "per_sample": macs(graphs[modes[0]]),
            "weights": weight_bytes(graphs[modes[0]]),
        }
        atomic_write_json(tmp / MANIFEST, manifest, indent=None)  # the runtime reads it while verifying
        manifest["verification"] = verify_artifact(tmp, module, modes, manifest, opts, preset, say)
        manifest["weights"]["artifact_bytes"] = (tmp / LIB).stat().st_size
        manifest["files"] = {p.name: file_sha256(p) for p in sorted(tmp.iterdir()) if p.name != MANIFEST}
        manifest["total_seconds"] = round(time.perf_counter() - t0, 1)
        atomic_write_json(tmp / MANIFEST, manifest)
    say(f"wrote {out}")
    return manifest


_LAYER_PRECISION = {Op.BCONV2D: "1-bit", Op.CONV2D_INT8: "int8", Op.CONV2D_BF16: "bf16", Op.CONV2D: "fp32",
                    Op.GROUP_CONV2D: "fp32", Op.DENSE: "fp32"}


def auto_candidates(preset) -> tuple[str, ...]:
    """What --precision auto builds for the preset: int8 and fp32, and bf16 where a bf16 unit
    runs it (AMX-BF16 tiles, AVX512-BF16, tensor cores from sm_80); elsewhere bf16 is fp32's
    speed at best."""
    from reidc.compiler.lower.build import bf16_conv
    from reidc.kernels.conv2d_bf16 import Bf16Conv
    return ("int8", "bf16", "fp32") if bf16_conv(preset) is not Bf16Conv.DECODED else ("int8", "fp32")


def untimed_choice(preset, built) -> tuple[str, str]:
    """(precision, why) for --precision auto where the builds cannot be timed here: int8 if the
    target has a 4-way int8 dot product (VNNI, AMX, sdot, AVX2's vpmaddubsw pairs; on every CUDA
    GPU dp4a or int8 tensor cores: dp4a alone ran CM-NAS ResNet-50 3.7x / 4.2x faster than fp32 at
    batch 1 / 16 on an H200) and int8 was built, else bf16 where built, else fp32."""
    from reidc.compiler.lower.build import int8_flavour
    dot = preset.kind == "cuda" or int8_flavour(preset).order == "dot4"
    chosen = "int8" if "int8" in built and dot else "bf16" if "bf16" in built else "fp32"
    return chosen, (f"not timed (the build does not run here); {preset.name} "
                    + ("has a 4-way int8 dot product (VNNI, AMX, sdot, dp4a or int8 tensor cores)" if dot else
                       "has no 4-way int8 dot product (int8 measured slower than fp32 on AVX2 and plain SIMD)"))


def _compile_auto(ckpt, source, out, opts: CompileOptions, inputs) -> dict:
    """--precision auto: build fp32, int8 and, where a bf16 unit runs it, bf16 (each verified:
    the reduced ones within their budgets), time them here at batch 1 (or the fixed batch) and
    keep the fastest; where the build cannot run here, `untimed_choice`. The manifest's
    precision.auto says what was measured and why."""
    from .runtime import Compiled
    preset = get_target(opts.target)
    out = Path(out)
    guard_output_dir(out, "artifact", inputs)
    check_can_build(preset, opts.verify)
    cached = source() if source else None
    with tempfile.TemporaryDirectory(prefix="reidc-auto-") as d:
        built, failed = {}, {}
        for p in auto_candidates(preset):
            opts.progress(f"--precision auto: building {p}")
            try:
                built[p] = _compile(ckpt, (lambda: cached) if cached else None, Path(d) / p,
                                    dataclasses.replace(opts, precision=p), inputs)
            except VerificationError as e:
                if p == "fp32":
                    raise
                failed[p] = str(e)
        ms = {}
        # timed where the build runs natively: this CPU, or a CUDA GPU here (not under qemu)
        runs_here = opts.verify and preset.runs_via in (LOCAL, CUDA) and not preset.missing_on_host()
        if runs_here:
            for p, man in built.items():
                x, m = seeded_inputs(tuple(man["input_shape"]), man.get("batch") or 1, man["modes"][0], opts.seed)
                ms[p] = round(Compiled(Path(d) / p).time_ms(x, m if m is not None else man["modes"][0]), 3)
            chosen = min(ms, key=ms.get)
            why = "faster here: " + ", ".join(f"{p} {t} ms" for p, t in ms.items())
        else:
            chosen, why = untimed_choice(preset, built)
        for p in failed:
            why = f"{p} failed verification ({failed[p]}); " + why
        man = built[chosen]
        man["precision"]["auto"] = {"chose": chosen, "why": why, "ms": ms, "failed": failed}
        with atomic_directory(out, "artifact", inputs) as tmp:
            for f in (Path(d) / chosen).iterdir():
                shutil.copy2(f, tmp / f.name)
            atomic_write_json(tmp / MANIFEST, man)
    opts.progress(f"--precision auto chose {chosen}: {why}")
    return man


def layer_precision(g, precision: str = "fp32", bits_why: str | None = None, kernel: str = "") -> dict:
    """Each conv and dense layer's arithmetic, as the manifest and `reidc inspect` state it; at
    int8 or bf16, a layer that stays fp32 says why; `kernel`: what an int8 or bf16 conv runs on
    (lower.build.int8_kernel, bf16_kernel)."""
    kept = (g.meta.get(precision) or {}).get("fp32_convs", {})
    layers = []
    for nid, n in g.items():
        if n.op in _LAYER_PRECISION:
            row = {"layer": n.source or nid, "op": str(n.op), "precision": _LAYER_PRECISION[n.op]}
            m = WINOGRAD_TILES.get(n.attr("algorithm"))
            if m:   # compiler/passes/choose_winograd.py
                row["algorithm"] = f"winograd F({m}x{m}, 3x3)"
            if precision != "fp32" and n.op in (Op.CONV2D, Op.GROUP_CONV2D):
                row["why"] = kept.get(n.source or nid, "not quantized")
            elif precision != "fp32" and n.op == Op.DENSE:
                row["why"] = "dense layers stay fp32 (a fraction of a percent of the MACs)"
            layers.append(row)
    out = {"real_valued": precision, "binary": "1-bit (xnor-popcount)", "layers": layers}
    if precision == "int8":
        meta = g.meta.get("int8") or {}
        top = meta.get("weight_max", 127)
        out["int8"] = {
            "weights": f"symmetric int8 per output channel (max |w| -> {top}"
                       + (f"; {top.bit_length() + 1}-bit weights)" if top < 127 else ")"),
            "weight_max": top,
            **({"weight_bits_why": bits_why} if bits_why else {}),
            "activations": "uint8; zero point 0 where calibration saw no negative value, else 128; step from the "
                           "clipping threshold of x (of |x| where signed) with the least mean squared quantization "
                           "error over the calibration values, per tensor, per modality in a mixed entry; a tensor "
                           "a residual add reads too: its peak (no clipping)",
            "calibration": meta.get("calibration"),
            "requantisation": "fused into the producing conv's epilogue (uint8 between int8 layers); a residual add "
                              "reads the uint8 copy back (dequantize), so block outputs are stored once, in uint8",
            **({"kernel": kernel} if kernel else {})}
    if precision == "bf16":
        out["bf16"] = {
            "weights": "rounded to bf16 (nearest even); a split BN's two folded sets share one, with a per-modality "
                       "per-channel output scale",
            "activations": "rounded to bf16 (nearest even) where a bf16 conv reads them; products exact, sums float32"
                           + ("; a Winograd conv (the layer rows' algorithm) also rounds its transformed input and "
                              "weights to bf16" if any(r.get("algorithm") and r["precision"] == "bf16" for r in layers)
                              else ""),
            "kernel": kernel}
    return out


def _output_of(facts: dict) -> str:
    if facts["family"] == "torch.export":
        return "program output"
    if (facts.get("arch") or {}).get("feature") == "pool":
        return "pooled feature before the BNNeck BN (N, F) float32"
    return "BNNeck feature (N, F) float32"


def check_can_build(preset, verify: bool) -> None:
    """Everything a build for `preset` needs that can be checked before the work starts: the
    CPU and features LLVM must know, the cross compiler, and (to verify) a way to run it here."""
    preset.validate()
    if preset.cross_compiler and not shutil.which(preset.cross_compiler):
        raise ToolchainError(f"target {preset.name} links with {preset.cross_compiler}, which is not installed "
                             "(apt-get install g++-aarch64-linux-gnu)")
    missing = preset.missing_on_host() if verify else []
    if missing:
        raise VerificationError(
            f"target {preset.name}: running the build here needs {', '.join(missing)}, so it cannot be "
            "verified on this machine; pass --no-verify to write it unverified (and verify it where it runs "
            "with `reidc verify`)")


def artifact_source(manifest: dict, path: Path, checkpoint: str | Path | None = None):
    """The PyTorch module an artifact was compiled from (its checkpoint, checked by digest)."""
    ck = Path(checkpoint or manifest["checkpoint"])
    if not ck.exists():
        raise ArtifactError(f"checkpoint {ck} is not here; pass --checkpoint")
    if checkpoint_digest(ck) != manifest["checkpoint_sha256"]:
        raise ArtifactError(f"{ck} is not the checkpoint {path} was compiled from (sha256 differs)")
    arch = manifest.get("arch") or {}
    opts = CompileOptions(weights=manifest.get("weights_entry", "model"), feature=arch.get("feature"),
                          input_size=tuple(arch["input_size"]) if "input_size" in arch else None)
    with tempfile.TemporaryDirectory() as d:
        if manifest.get("family") == "torchreid":
            opts.torchreid_arch = arch["torchreid_arch"]
        elif manifest.get("family") == "fast-reid":  # the network its config described, as reidc read it
            opts.fastreid_config = str(Path(d) / "fastreid-spec.json")
            Path(opts.fastreid_config).write_text(json.dumps(manifest["arch"]))
            opts.input_size = None
        elif manifest.get("arch") and not ck.is_dir():  # a bare weights file: the spec it was built with
            opts.arch = Path(d) / "arch.json"
            opts.arch.write_text(json.dumps(manifest["arch"]))
        return load_source(ck, opts)[0]


def reverify(artifact: str | Path, checkpoint: str | Path | None = None, progress=lambda msg: None,
             module=None) -> dict:
    """Verify an existing artifact where it can run (e.g. a CUDA build made on a machine without
    a GPU, now on one with a GPU); its manifest's "verification" is replaced atomically.
    `module`: the in-memory module it was compiled from (checked by its state digest)."""
    path = Path(artifact)
    manifest = read_manifest(path)
    opts = CompileOptions(progress=progress)
    if module is not None and checkpoint is None:
        from reidc.frontend.inmemory import state_digest
        if state_digest(module) != manifest["checkpoint_sha256"]:
            raise ArtifactError(f"{path} was not compiled from this module (its state's sha256 differs)")
        module = module.eval()
    elif manifest.get("checkpoint") is None and checkpoint is None:
        raise ArtifactError(f"{path} was compiled from a module in memory: pass module= (that nn.Module), or "
                            "verify it from the Artifact reidc.compile returned")
    else:
        module = artifact_source(manifest, path, checkpoint)
    manifest["verification"] = verify_artifact(path, module, tuple(manifest["modes"]), manifest, opts,
                                               preset_from_manifest(manifest["target"]), progress)
    atomic_write_json(path / MANIFEST, manifest)
    return manifest


def verify_artifact(path: Path, module, modes, manifest, opts: CompileOptions, preset, say) -> dict:
    """Run the written library against PyTorch eager on seeded inputs for every mode.

    Binarized networks: the `<mode>_bits` entry returns every packed activation, compared bit
    by bit with the signs PyTorch computes. A sample with no flipped bit must match to the
    tolerance. A sample with flips is reported (count, error); the first layer where it flips
    may only flip values within ROUNDING_MARGIN of 0 (float rounding before a threshold), or
    verification fails. Two flip-free samples per mode are required."""
    if not opts.verify:
        return {"status": "skipped", "why": "--no-verify"}
    missing = preset.missing_on_host(tuple(manifest["target"].get("cpu_features", ())) or None)
    if missing:
        raise VerificationError(
            f"target {preset.name}: running the build here needs {', '.join(missing)}, so it cannot be "
            "verified on this machine; pass --no-verify to write it unverified (and verify it where it runs "
            "with `reidc verify`)")
    compiled = Compiled(path, say)
    if preset.runs_via != "local":
        say(f"running the {preset.name} build with {compiled.executor.description}")
    if (manifest.get("precision") or {}).get("real_valued", "fp32") != "fp32":
        return verify_reduced(compiled, module, modes, manifest, opts.seed, opts.retrieval, say)
    shape = tuple(manifest["input_shape"])
    sites = manifest.get("bit_sites", {})
    n = 8 if sites else opts.verify_batch
    step = manifest.get("batch") or manifest.get("export_batch")  # a fixed-batch build runs in steps
    batch = -(-n // step) * step if step else n
    result = {"status": "passed", "tolerance": TOLERANCE,
              "norm": "max over samples of ||y - y_torch||_2 / ||y_torch||_2",
              "reference": "PyTorch eager, same checkpoint", "seed": opts.seed, "batch": batch,
              "max_rel_err": {}}
    for mode in modes:
        say(f"verifying the {mode} entry against PyTorch")
        x, m = seeded_inputs(shape, batch, mode, opts.seed, manifest.get("input_range"))
        errs, flips = compare_with_torch(compiled, module, mode, x, m, sites.get(mode), step)
        clean = list(range(len(x))) if flips is None else [i for i, f in enumerate(flips) if f["flipped_bits"] == 0]
        if flips is not None:
            result.setdefault("sign_flips", {})[mode] = [
                {"sample": i, **f, "rel_err": errs[i]} for i, f in enumerate(flips) if f["flipped_bits"]]
            if len(clean) < 2:
                raise VerificationError(
                    f"verification inconclusive: only {len(clean)} of {len(x)} samples of the {mode} entry ran "
                    "without a rounding sign flip; no artifact written")
        err = max(errs[i] for i in clean)
        result["max_rel_err"][mode] = err
        if not err <= TOLERANCE:
            raise VerificationError(f"verification failed: the {mode} entry differs from PyTorch by {err:.3g} "
                                    f"(relative L2, tolerance {TOLERANCE:g}); no artifact written")
    return result


def compare_with_torch(compiled, module, mode: str, x: np.ndarray, m: np.ndarray | None, sites=None,
                       step: int | None = None) -> tuple[list[float], list[dict] | None]:
    """Run one entry on (x, m) and PyTorch eager on the same: per-sample relative errors and,
    for a binarized entry (`sites`: its bit sites), per-sample sign-flip accounting. A flip that
    is more than float rounding raises VerificationError. `step`: a fixed-batch build's batch."""
    chunks = [slice(i, i + (step or len(x))) for i in range(0, len(x), step or len(x))]
    ref = np.concatenate([torch_forward(module, x[c], mode, None if m is None else m[c]) for c in chunks])
    outs = [(compiled.run_bits if sites else compiled.run)(x[c], m[c] if mode == RunMode.MIXED else mode)
            for c in chunks]
    if sites:  # one run gives the features and every packed activation
        got, *bits = (np.concatenate(parts) for parts in zip(*outs))
    else:
        got = np.concatenate(outs)
    errs = [rel_err(got[i:i + 1], ref[i:i + 1]) for i in range(len(x))]
    if not sites:
        return errs, None
    pre = [presign_values(module, x[c], mode, None if m is None else m[c]) for c in chunks]
    flips = count_flips(bits, sites, {k: np.concatenate([p[k] for p in pre]) for k in pre[0]})
    bad = [f for f in flips if not f["rounding_only"]]
    if bad:
        raise VerificationError(
            f"verification failed: the {mode} entry flips signs at {bad[0]['first_site']} where PyTorch's "
            f"pre-sign value is {bad[0]['first_site_max_abs_presign']:.3g} from 0 (more than rounding); "
            "no artifact written")
    return errs, flips
