"""Everything before TVM, shared by compile and tune: the options, loading a checkpoint (or a
`.pt2`, fast-reid or torchreid file) into a module and its captured IR, reidc's passes per entry
and, for reduced precision, the int8 calibration and rewrite or the bf16 rewrite."""
from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from reidc.frontend.arch import preprocess_for
from reidc.frontend.capture import capture_module, capture_program
from reidc.frontend.checkpoint import load_checkpoint
from reidc.frontend.fastreid import config_beside, fastreid_source
from reidc.frontend.torchreid import torchreid_source
from reidc.frontend.pt2 import load_program, read_archive
from reidc.targets import get_target

from .base.atomic import atomic_write_text
from .base.digest import hash_file
from .base.errors import InputError
from .calibration import DEFAULT_IMAGES
from .ir import MODEL_MODES, Op, RunMode
from .passes.choose_winograd import choose_winograd, winograd_target
from .passes.pipeline import run_pipeline


@dataclass
class CompileOptions:
    target: str = "host"
    arch: str | None = None
    split_config: str | None = None
    dump_ir: str | None = None
    mixed_strategy: str | None = None   # None: per-layer choice; "affine" | "weights"
    verify: bool = True
    verify_batch: int = 3
    modes: tuple[str, ...] | None = None  # entries to build; default: every mode the model has
    batch: int | None = None      # fixed batch size (tuned kernels need one); None: any batch
    tuning_db: str | None = None  # a `reidc tune` database: its records replace default schedules
    weights: str = "model"        # a training checkpoint's weights: "model" or CM-NAS's "ema"
    fastreid_config: str | None = None  # fast-reid's config.yaml (default: the one beside a .pth, if any)
    torchreid_arch: str | None = None   # a torchreid checkpoint's architecture name (osnet_x1_0, resnet50, ...)
    feature: str | None = None    # "bnneck" (default) or "pool": the feature before the BNNeck BN
    input_size: tuple[int, int] | None = None  # (H, W) the network takes (default: the spec's)
    precision: str = "fp32"       # the real-valued layers: "fp32", "int8", "bf16" or "auto" (binary convs stay 1-bit)
    calibration: str = "synthetic"  # int8: "synthetic" or a folder of images
    calibration_images: int = DEFAULT_IMAGES
    retrieval: str | None = None   # reduced precision: also rank a dataset's test protocol (synthetic, sysu:PATH, ...)
    int8_weight_bits: int | None = None  # int8 weights' bits (None: the target's fastest, Int8Flavour.paired_max)
    seed: int = 0
    winograd: bool = True         # 3x3 convs as Winograd where the target runs it faster (fp32: F(4x4) or F(2x2); bf16 on AVX512-BF16: F(2x2))
    winograd_tiles: str = "auto"  # which take F(4x4): passes/choose_winograd.py TILES
    progress: Callable[[str], None] = field(default=lambda msg: None)


def check_precision(opts: CompileOptions, preset, flavour) -> None:
    """Refuse, before any work, a precision the target cannot build: int8 weight bits beyond its
    dot product's bound (`flavour`: lower.build.int8_flavour(preset)). bf16 builds for every
    target: AMX-BF16 tiles where it has them, AVX512-BF16 vdpbf16ps, tensor cores on CUDA sm_80+, else float32
    multiply-adds of the decoded bf16 values (lower.build.bf16_kernel says which)."""
    if opts.precision == "int8":
        int8_weight_max(opts, flavour)


def int8_weight_max(opts: CompileOptions, flavour) -> int:
    """The bound int8 weights are quantized to: --int8-weight-bits' (refused beyond what the
    target's dot product takes exactly, Int8Flavour.weight_max), else the target's fastest."""
    if opts.int8_weight_bits is None:
        return flavour.paired_max or flavour.weight_max
    weight_max = (1 << (opts.int8_weight_bits - 1)) - 1
    if weight_max > flavour.weight_max:
        raise InputError(f"--int8-weight-bits {opts.int8_weight_bits}: target {opts.target}'s int8 dot product "
                         f"is exact for weights of at most {flavour.weight_max.bit_length() + 1} bits")
    return weight_max


def checkpoint_digest(path: Path, data: bytes | None = None) -> str:
    """sha256 over the checkpoint's files (name, then bytes). `data`: a single file's bytes,
    already read (digested as they are, not read again)."""
    h = hashlib.sha256()
    if data is not None:
        h.update(path.name.encode())
        h.update(data)
        return h.hexdigest()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for p in files:
        h.update(p.name.encode())
        hash_file(h, p)
    return h.hexdigest()


def load_source(ckpt: str | Path, opts: CompileOptions):
    """(torch module, IR graph, modes, manifest facts) for a reidc checkpoint or a .pt2 program."""
    ckpt = Path(ckpt)
    if ckpt.suffix == ".pt2":
        data = read_archive(ckpt)  # read once: checked, loaded and digested from these bytes
        ep = load_program(ckpt, data)  # refused, nothing unpickled, unless it holds only plain tensors
        g = capture_program(ep, ckpt.stem)
        module = ep.module()
        example = next(n.meta["val"] for n in ep.graph.nodes if n.op == "placeholder"
                       and n.name in ep.graph_signature.user_inputs)
        # the program's guards may pin the batch size: verify at the batch it was exported with
        batch = example.shape[0] if isinstance(example.shape[0], int) else None
        facts = {"model": ckpt.stem, "family": "torch.export", "arch": None, "export_batch": batch,
                 "checkpoint_sha256": checkpoint_digest(ckpt, data)}
        return module, g, (RunMode.MAIN,), facts
    if opts.torchreid_arch:
        return torchreid_source(ckpt, opts.torchreid_arch, opts.input_size)
    config = opts.fastreid_config or (None if opts.arch or opts.split_config else config_beside(ckpt))
    if config is not None:
        return fastreid_source(ckpt, config, opts.weights, opts.input_size)
    model = load_checkpoint(ckpt, arch=opts.arch, split_config=opts.split_config, weights=opts.weights,
                            feature=opts.feature, input_size=opts.input_size)
    spec = model.spec
    g = capture_module(model, (3,) + tuple(spec.input_size), spec.name)
    facts = {"model": spec.name, "family": spec.family, "arch": spec.to_json(), "weights_entry": opts.weights,
             "preprocess": preprocess_for(spec.input_size)}
    return model, g, MODEL_MODES, facts


def prepare(ckpt, opts: CompileOptions, source=None, measured: dict | None = None):
    """(torch module, {mode: optimised IR graph}, modes, manifest facts, pass stats): everything
    before TVM, shared by compile and tune. `source`: what `load_source` gives, already loaded
    (an in-memory module's, frontend/inmemory.py); else the checkpoint `ckpt` is loaded.
    `measured`: a tuning database's fastest algorithm per 3x3 conv shape (choose_winograd)."""
    if source is None:
        opts.progress(f"loading {ckpt}")
        source = load_source(ckpt, opts)
    module, g, modes, facts = source
    if opts.modes:
        wanted = {RunMode.parse(m, modes, "modes") for m in opts.modes}  # the entries this model has
        modes = tuple(m for m in modes if m in wanted)
    if opts.batch is not None and opts.batch < 1:
        raise InputError(f"--batch {opts.batch}: must be at least 1")
    stats: Counter = Counter()
    graphs = {}
    for mode in modes:
        opts.progress(f"running passes for the {mode} entry")
        graphs[mode] = run_pipeline(g, mode, dump_dir=opts.dump_ir, mixed_strategy=opts.mixed_strategy, stats=stats,
                                    share_weights=len(modes) > 1)   # entries share their convs' weights
        if opts.precision == "int8":
            graphs[mode] = _quantize(graphs[mode], RunMode.parse(mode), facts, opts, stats)
        elif opts.precision == "bf16":
            graphs[mode] = _to_bf16(graphs[mode], RunMode.parse(mode), opts, stats)
    return module, winograd_step(graphs, opts, stats, measured), modes, facts, stats


def winograd_step(graphs: dict, opts: CompileOptions, stats: Counter, measured: dict | None = None) -> dict:
    """prepare's last step on each entry's graph (`_winograd`): also what `reidc tune` runs on
    the graphs it prepared without it, once it has measured the convs' algorithms."""
    return {mode: _winograd(g, RunMode.parse(mode), opts, stats, measured) for mode, g in graphs.items()}


def _winograd(g, mode: RunMode, opts: CompileOptions, stats: Counter, measured: dict | None = None):
    """The target-dependent last step: the fp32 3x3 convs that reidc's Winograd kernel runs
    faster, and on AVX512-BF16 the bf16 ones (the IR dump gets `choose_winograd`, after any
    precision step); g itself where the target takes none or `opts.winograd` is off."""
    from .ir import dump, verify
    if not (opts.winograd and winograd_target(get_target(opts.target))):
        return g
    bf16 = False
    if opts.precision == "bf16":   # vdpbf16ps: its bf16 3x3 convs take F(2x2) too
        from .lower.build import bf16_conv
        from reidc.kernels.conv2d_bf16 import Bf16Conv
        bf16 = bf16_conv(get_target(opts.target)) is Bf16Conv.DOT
    w = verify(choose_winograd(g, stats, opts.winograd_tiles, bf16, measured))   # the rewrite's copy keeps g's meta
    if measured:   # which of the database's measured shapes this graph has: the manifest records those
        from .passes.choose_winograd import candidates, signature
        have = {signature(n) for n in candidates(g).values()}
        w.meta = {**w.meta, "measured_algorithms": {s: a for s, a in measured.items() if s in have}}
    if opts.dump_ir is not None:
        atomic_write_text(Path(opts.dump_ir) / f"{mode}.99z-choose_winograd.ir", dump(w))
    return w


def _to_bf16(g, mode: RunMode, opts: CompileOptions, stats: Counter):
    """Rewrite the optimised graph's convs to bf16 (the IR dump gets one more step, `convert_bf16`)."""
    from .ir import dump, verify
    from .passes.convert_bf16 import convert_bf16
    b, kept = convert_bf16(g, stats)
    b = verify(b)
    b.meta = {**g.meta, "bf16": dict(kept)}
    if opts.dump_ir is not None:
        atomic_write_text(Path(opts.dump_ir) / f"{mode}.99-convert_bf16.ir", dump(b))
    return b


def _quantize(g, mode: RunMode, facts: dict, opts: CompileOptions, stats: Counter):
    """Calibrate the optimised graph on images and rewrite its convs to int8 (the IR dump gets
    one more step, `quantize_int8`)."""
    from .calibration import calibrate, calibration_batch
    from .ir import dump, verify
    from .passes.quantize_int8 import calibration_sites, quantize_int8
    from reidc.compiler.lower.build import int8_flavour
    shape = next(n.shape for _, n in g.items() if n.op == Op.INPUT and n.attrs.get("name") == "x")[1:]
    x, m = calibration_batch(opts.calibration, mode, shape, facts.get("preprocess"), opts.calibration_images, opts.seed)
    ranges = calibrate(g, calibration_sites(g), x, m, opts.progress, opts.seed)
    weight_max = int8_weight_max(opts, int8_flavour(get_target(opts.target)))
    q, kept = quantize_int8(g, ranges, stats, weight_max=weight_max)
    q = verify(q)
    q.meta = {**g.meta, "int8": {**kept, "calibration": {"source": opts.calibration, "images": len(x)},
                                 "weight_max": weight_max}}
    if opts.dump_ir is not None:
        atomic_write_text(Path(opts.dump_ir) / f"{mode}.99-quantize_int8.ir", dump(q))
    return q
