"""The smaller commands as functions: the model zoo, the target presets, running an artifact on
files, the aarch64 runner bundle, the emulated ARM RPC device, the demo."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .needs import needs_compiler


def zoo_models() -> dict[str, dict[str, Any]]:
    """The zoo's networks: name -> {"family": "cmnas" | "bire", "depth"}."""
    from reidc.frontend.zoo import ZOO
    return {name: {"family": family, "depth": depth} for name, (family, depth) in ZOO.items()}


def zoo_model(name: str, split: str = "all-split", seed: int = 0, input_size: tuple[int, int] = (256, 128)):
    """Zoo network `name` as a torch.nn.Module in memory (seeded weights and non-trivial BN
    statistics), ready for `reidc.compile`; `split` as in `export_zoo`."""
    from reidc.frontend.zoo import zoo_model as build
    try:
        return build(name, split, seed=seed, input_size=tuple(input_size))
    except KeyError as e:
        from reidc.compiler.base.errors import ArchError
        raise ArchError(e.args[0]) from None


def export_zoo(name: str, output: str | Path, *, split: str = "all-split", split_config: str | Path | None = None,
               seed: int = 0, input_size: tuple[int, int] = (256, 128)) -> dict[str, Any]:
    """Write zoo network `name` (seeded weights and non-trivial BN statistics, no downloads) as
    a reidc checkpoint folder; `split`: all-split | all-shared | random:SEED | 20 0/1 digits,
    or a CM-NAS config.cfg as `split_config`. Returns {"path", "model", "bns", "split_bns"}."""
    from reidc.frontend.zoo import export_zoo as export
    try:
        spec = export(name, output, split, split_config, seed, tuple(input_size)).spec
    except KeyError as e:   # an unknown zoo name: its message names the choices
        from reidc.compiler.base.errors import ArchError
        raise ArchError(e.args[0]) from None
    return {"path": str(output), "model": spec.name, "bns": len(spec.split),
            "split_bns": sum(1 - s for s in spec.split)}


def train_zoo(name: str, output: str | Path, *, dataset: str = "synthetic", split: str = "all-split",
              steps: int = 300, input_size: tuple[int, int] = (128, 64), seed: int = 0,
              progress: Callable[[str], None] | None = None, objective: str = "cmnas",
              gal: str | None = None) -> dict[str, Any]:
    """Train zoo network `name` (from its seeded weights, the whole network) on `dataset`
    (synthetic[:IDS] | sysu:PATH | regdb:PATH[#TRIAL]) for `steps` P x K batches with CM-NAS's
    objective, on the CPU, and write it as a reidc checkpoint folder with `train.json`, so that
    compiles can be judged by retrieval accuracy. `seed`: data, weights and batches. Returns
    the record: "path", "model", "loss" (trace), "test" ({"before", "after"}: per setting
    rank1, rank5, rank10, mAP, mINP of the untrained and the trained network), "seconds".
    `objective`: "cmnas" (CM-NAS's released objective) or "reidc" (reidc's earlier variant).
    `gal`: BiRe-ID's training for binarized networks, "kr", "fr" or "kr,fr" (KR-GAL: a
    discriminator per binarized conv against its reconstruction alpha o sign(w); FR-GAL: earlier
    stages refined by the last one's features), None for neither."""
    with needs_compiler("training"):
        from reidc.compiler.search.zoo_train import train_zoo as train
    return train(name, output, dataset, split, steps, tuple(input_size), seed, progress or (lambda msg: None),
                 objective=objective, gal=gal)


def target_presets() -> list[dict[str, Any]]:
    """Every target preset (host first): name, description, TVM target, features it enables,
    how a build for it runs from this machine, and what this machine lacks to run it."""
    from reidc.targets import PRESETS, get_target
    how = {"local": "in process", "qemu-aarch64": "under qemu", "cuda": "on the GPU"}
    return [{"name": p.name, "description": p.description, "tvm": p.tvm, "features": list(p.features),
             "runs": how[p.runs_via], "missing_here": list(p.missing_on_host())}
            for p in [get_target("host"), *PRESETS.values()]]


def run_files(artifact: str | Path, images: str | Path, modality: str, output: str | Path,
              progress: Callable[[str], None] | None = None, normalize: str | None = None) -> dict[str, Any]:
    """Features of `images` (a .npy (N, C, H, W) batch, or a folder of image files, read and
    preprocessed as the manifest states, in file-name order) written as .npy to `output`;
    modality: visible | infrared | halves | a .npy vector of codes; normalize="l2" for unit
    features. Returns {"shape", "files"} (files: the image names in row order, or None)."""
    from reidc.compiler.runtime import run_files as run
    return run(artifact, images, modality, output, progress or (lambda msg: None), normalize)


def runner_bundle(output: str | Path, progress: Callable[[str], None] | None = None) -> list[str]:
    """The aarch64 C++ runner (`reidc_run`) and TVM's aarch64 runtime in folder `output`, to
    copy onto a board without Python. Returns the libraries' names."""
    from reidc.targets.arm_runtime import write_runner_bundle
    return write_runner_bundle(output, progress or (lambda msg: None))


def qemu_server(tracker: str | None, key: str = "qemu-aarch64", progress: Callable[[str], None] | None = None,
                announce: Callable[[str], None] | None = None, setup_only: bool = False):
    """An emulated aarch64 device (TVM's RPC server on an arm64 Python under qemu-user),
    registered with the tracker HOST:PORT under `key`, until it exits; its exit status.
    setup_only: only build the emulated Python (cached) and return its path."""
    from reidc.targets.arm_python import serve, server_command
    if setup_only:
        return server_command(progress or (lambda msg: None))[0][0]
    return serve(tracker, key, progress or (lambda msg: None), announce or (lambda msg: None))


def demo(model: str = "cmnas-resnet50", workdir: str | Path = "demo",
         progress: Callable[[str], None] | None = None) -> tuple[dict, dict]:
    """The main job on the embedded default: export zoo `model`, compile it for this machine,
    verify, and time it against PyTorch eager. (manifest, benchmark row)."""
    from reidc.compiler.demo import demo as run
    return run(model, workdir, progress or (lambda msg: None))
