"""`reidc.compile`: a checkpoint on disk or a module in memory -> a verified Artifact."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from reidc.compiler.base.errors import InputError

from .artifact import Artifact
from .needs import needs_compiler

PRECISIONS = ("fp32", "int8", "bf16", "auto")
WINOGRAD_TILE_POLICIES = ("auto", "4", "2")   # compiler/passes/choose_winograd.py TILES
CHECKPOINT_ONLY = ("arch", "split_config", "fastreid_config", "torchreid_arch", "weights", "feature")


def _check(model, precision, modes, mixed_strategy, options: dict) -> tuple[str, ...] | None:
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r}: this reidc compiles real-valued layers in "
                         f"{' or '.join(PRECISIONS)} (binary convs stay 1-bit)")
    if options.get("retrieval") and precision == "fp32":
        raise InputError("retrieval: the retrieval check judges reduced precision against fp32; pass precision='int8' or 'bf16'")
    bits = options.get("int8_weight_bits")
    if bits is not None and (precision not in ("int8", "auto") or not 2 <= bits <= 8):
        raise InputError(f"int8_weight_bits={bits}: int8 weights take 2 to 8 bits, with precision='int8' or 'auto'")
    if options.get("calibration_images", 1) < 1:
        raise InputError(f"calibration_images={options['calibration_images']}: must be at least 1")
    if str(options.get("winograd_tiles", "auto")) not in WINOGRAD_TILE_POLICIES:
        raise InputError(f"winograd_tiles={options['winograd_tiles']!r}: expected one of {', '.join(WINOGRAD_TILE_POLICIES)} "
                         "(auto: F(4x4, 3x3) where its weights stay in the caches, else F(2x2); 4: F(4x4) wherever "
                         "faster; 2: F(2x2) only)")
    if mixed_strategy not in (None, "affine", "weights"):
        raise InputError(f"mixed_strategy={mixed_strategy!r}: expected None (per layer), 'affine' or 'weights'")
    if isinstance(modes, str):
        modes = [m.strip() for m in modes.split(",")]
    if options.get("retrieval") and modes and "mixed" not in modes and not {"visible", "infrared"} <= set(modes):
        raise InputError("retrieval ranks infrared queries against a visible gallery: it needs the visible and "
                         f"infrared entries, or mixed (modes={','.join(modes)})")
    if not isinstance(model, (str, os.PathLike)):
        given = [k for k in CHECKPOINT_ONLY if options.get(k) not in (None, "model")]
        if given:
            raise InputError(f"{', '.join(given)}: only for a checkpoint on disk, not a module in memory")
    return tuple(modes) if modes else None


def compile(model: str | os.PathLike | Any, target: str = "host", *, output: str | Path | None = None,
            precision: str = "fp32", modes: Sequence[str] | str | None = None,
            input_shape: tuple[int, int, int] | None = None, tuning_db: str | Path | None = None,
            batch: int | None = None, verify: bool = True, arch: str | Path | None = None,
            split_config: str | Path | None = None, fastreid_config: str | Path | None = None,
            torchreid_arch: str | None = None, weights: str = "model", feature: str | None = None, mixed_strategy: str | None = None, dump_ir: str | Path | None = None, seed: int = 0,
            calibration: str | Path = "synthetic", calibration_images: int = 16, retrieval: str | None = None,
            int8_weight_bits: int | None = None, winograd: bool = True, winograd_tiles: str | int = "auto",
            progress: Callable[[str], None] | None = None) -> Artifact:
    """Compile `model` for `target` (a preset name such as "host", "x86-avx512", "rpi5",
    "sm86" (see `reidc.target_presets()`), or a TVM target JSON) and verify it against PyTorch
    on seeded inputs.

    model: a checkpoint (a reidc checkpoint folder, a .safetensors or weights-only .pt with
      `arch=`, CM-NAS's model.pth + `split_config=`, fast-reid's model_final.pth + its
      config.yaml as `fastreid_config=` (found beside the .pth by default), torchreid's
      model.pth.tar-N or model-zoo file + `torchreid_arch=` ("osnet_x1_0", "resnet50", ...), a
      .pt2 program), or a torch.nn.Module in
      memory: one of reidc's networks (`reidc.zoo_model`, frontend.models, frontend.bire), or
      any module of supported ops with `input_shape=(C, H, W)` (exported with torch.export; no
      file written). The module is put in eval mode, as verification needs.
    output: the artifact folder (a new one, or an artifact reidc wrote: replaced atomically).
      None: a temporary folder that lives as long as the returned Artifact (`.save()` it).
    precision: "fp32", "int8", "bf16" or "auto" (fp32, int8 and, where a bf16 unit runs it, bf16
      built and verified, the fastest here kept; the manifest's precision.auto says why), the real-valued layers (binary convs stay
      1-bit). bf16: weights and activations rounded to bf16, float32 sums, on AMX-BF16 tiles
      (x86-amx targets), AVX512-BF16 vdpbf16ps (x86-avx512-bf16: Zen 4; its 3x3 convs as
      Winograd F(2x2) with the transformed values rounded to bf16 too), CUDA tensor cores (sm_80
      and later); elsewhere float32 convs of the bf16 values, no faster than fp32, verified
      by feature cosine as int8 is; no calibration. int8:
      post-training quantization calibrated on `calibration` ("synthetic": rendered persons of
      both modalities, or a folder of images, with visible/ and infrared/ subfolders for a
      cross-modality model) using `calibration_images` images per entry; verified by feature
      cosine to PyTorch fp32 (budget 0.99) instead of the fp32 tolerance; with `retrieval`
      ("synthetic", "sysu:PATH", "regdb:PATH") also by the dataset's test-protocol rank-1 and
      mAP, which may not fall more than 0.5 points below PyTorch fp32's (for a trained network:
      `reidc.train_zoo`). int8_weight_bits: the int8 weights' bits, symmetric per output channel
      (None: what the target runs fastest, 8, but 6 on AVX2 without VNNI, where 6-bit weights
      let two vpmaddubsw share one vpmaddwd (R50 int8 1.13x faster on a Zen 3, feature cosine
      0.9990 -> 0.9979 on a trained network), built again with 7 where the 6-bit build misses a
      verification budget (the manifest's precision.int8.weight_bits_why says so); 7 is the most
      AVX2's vpmaddubsw takes exactly).
    modes: entries to build (visible, infrared, mixed); default all the model has.
    input_shape: (C, H, W); for a checkpoint, its H x W replaces the spec's input size.
    tuning_db: a `reidc.tune` database (its tuned kernels, and per 3x3 conv shape the Winograd
      algorithm it timed fastest, which replaces `winograd_tiles`' guess there); batch: a fixed
      batch (tuned kernels need one).
    winograd: fp32 stride-1 3x3 convs of 64 channels or more as Winograd F(4x4, 3x3) (where its
      bigger transformed weights pay: passes/choose_winograd.py) or F(2x2, 3x3) on x86 (F(2x2)
      1.5-1.9x the direct conv per layer, F(4x4) another 1.4-1.7x; relative error 2-5e-6 per
      layer; the transformed weights are 4x (F(4x4)) or 16/9 the size of the 3x3 weights); at bf16 on
      AVX512-BF16 (x86-avx512-bf16) the bf16 3x3 convs as F(2x2) too, their transformed input and
      weights rounded to bf16 (0.4% relative L2 per layer); False keeps every conv direct.
    winograd_tiles: which convs take F(4x4): "auto" those whose transformed weights stay in the
      caches (C x O <= 256 x 256), F(2x2) beyond; "4" (or 4) wherever F(4x4) was measured
      faster, for the most speed (CM-NAS ResNet-50: library 221 MB, against auto's 158 and 127
      with "2"); "2" F(2x2) only.
    verify=False writes the build unverified (e.g. for a target this machine cannot run).
    Other keywords are `reidc compile`'s options of the same names (arch, split_config, weights,
    feature: checkpoints only)."""
    modes = _check(model, precision, modes, mixed_strategy,
                   {"arch": arch, "split_config": split_config, "fastreid_config": fastreid_config,
                    "torchreid_arch": torchreid_arch,
                    "weights": weights, "feature": feature,
                    "calibration_images": calibration_images, "retrieval": retrieval,
                    "int8_weight_bits": int8_weight_bits, "winograd_tiles": winograd_tiles})
    with needs_compiler("compiling"):
        from reidc.compiler.compile import CompileOptions, compile_checkpoint, compile_module
    opts = CompileOptions(target=target, arch=None if arch is None else str(arch),
                          split_config=None if split_config is None else str(split_config),
                          fastreid_config=None if fastreid_config is None else str(fastreid_config),
                          torchreid_arch=torchreid_arch,
                          dump_ir=None if dump_ir is None else str(dump_ir), mixed_strategy=mixed_strategy,
                          verify=verify, modes=modes, batch=batch,
                          tuning_db=None if tuning_db is None else str(tuning_db), weights=weights,
                          feature=feature, input_size=None, seed=seed, progress=progress or (lambda msg: None),
                          precision=precision, calibration=str(calibration), calibration_images=calibration_images,
                          retrieval=retrieval, int8_weight_bits=int8_weight_bits, winograd=winograd,
                          winograd_tiles=str(winograd_tiles))
    owned = None
    if output is None:
        owned = tempfile.mkdtemp(prefix="reidc-")
        output = Path(owned) / "artifact"
    try:
        with needs_compiler("compiling"):
            if isinstance(model, (str, os.PathLike)):
                if input_shape is not None:
                    if str(model).endswith(".pt2"):
                        raise InputError("input_shape: a .pt2 program's input shape is the one it was exported with")
                    opts.input_size = tuple(input_shape)[-2:]
                compile_checkpoint(model, output, opts)
                source = None
            else:
                compile_module(model, output, opts, input_shape=input_shape)
                source = model
        return Artifact(output, progress=progress, _owned_tmp=owned, _source_module=source)
    except BaseException:
        if owned:
            shutil.rmtree(owned, ignore_errors=True)
        raise
