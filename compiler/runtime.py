"""Load an artifact directory and run it (validating inputs against its manifest)."""
from __future__ import annotations

import io
import json
import os
import struct
import warnings
from pathlib import Path

import numpy as np

from .base.atomic import atomic_write_bytes, guard_output_file
from .base.digest import file_sha256
from .base.errors import ArtifactError, InputError
from .base.modes import CODES, Modality, RunMode

LIB, MANIFEST = "model.so", "manifest.json"
HALVES = "halves"   # a run's modality: CM-NAS's mode 0, torch.cat((x_visible, x_infrared))
_CODES = " or ".join(f"{c} ({m})" for m, c in CODES.items())
# What a run takes: written into every manifest and shown by `reidc run --help`.
INPUT_CONTRACT = ("float32 images (N, C, H, W), finite values, normalised as the network was trained "
                  "(reidc applies no scaling)")


def read_manifest(path: str | Path) -> dict:
    """The artifact's manifest, checked for the fields every command relies on (one-line
    ArtifactError naming the file and the field otherwise)."""
    p = Path(path)
    if not p.is_dir():
        raise ArtifactError(f"{p}: no such artifact directory")
    if not (p / MANIFEST).is_file() or not (p / LIB).is_file():
        raise ArtifactError(f"{p}: not a reidc artifact (needs {LIB} and {MANIFEST})")
    try:
        man = json.loads((p / MANIFEST).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{p / MANIFEST}: corrupt manifest: {e}") from None
    where = p / MANIFEST
    if not isinstance(man, dict):
        raise ArtifactError(f"{where}: corrupt manifest: not a JSON object")
    modes = man.get("modes")
    if not isinstance(modes, list) or not modes:
        raise ArtifactError(f"{where}: corrupt manifest: 'modes' must list the entries (found {modes!r})")
    for m in modes:
        try:
            RunMode.parse(m, what="entry")
        except ValueError as e:
            raise ArtifactError(f"{where}: corrupt manifest: 'modes': {e}") from None
    shape = man.get("input_shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)):
        raise ArtifactError(f"{where}: corrupt manifest: 'input_shape' must be [C, H, W] (found {shape!r})")
    tgt = man.get("target")
    if not isinstance(tgt, dict) or not isinstance(tgt.get("tvm"), dict):
        raise ArtifactError(f"{where}: corrupt manifest: no 'target' entry with a TVM target")
    batch = man.get("batch")
    if batch is not None and not (isinstance(batch, int) and batch > 0):
        raise ArtifactError(f"{where}: corrupt manifest: 'batch' must be a positive integer or null")
    return man


def check_integrity(path: Path, manifest: dict) -> None:
    """The library and the files beside it are byte for byte what was compiled (the manifest's
    sha256 digests), and the library is a whole ELF file for the artifact's CPU; a changed,
    truncated or foreign file is refused before it is loaded (loading one crashes the process)."""
    files = manifest.get("files")
    if files is not None:
        if not isinstance(files, dict):
            raise ArtifactError(f"{path / MANIFEST}: corrupt manifest: 'files' must map names to sha256 digests")
        for name, want in files.items():
            f = path / name
            if "/" in name or name.startswith(".") or not f.is_file():
                raise ArtifactError(f"{path}: {name} is missing (the manifest lists it)")
            if file_sha256(f) != want:
                raise ArtifactError(f"{f}: differs from what was compiled (sha256 mismatch): the file was changed "
                                    "or damaged; recompile")
    _check_elf(path / LIB, manifest)


_ELF_MACHINE = {62: "x86_64", 183: "aarch64"}


def _check_elf(lib: Path, manifest: dict) -> None:
    """A cheap structural check of a shared library: ELF64 little-endian, the artifact's CPU
    architecture, and every section header inside the file (a truncated file would fault)."""
    size = lib.stat().st_size
    with open(lib, "rb") as f:
        head = f.read(64)
    if len(head) < 64 or head[:4] != b"\x7fELF":
        raise ArtifactError(f"{lib}: not a shared library (invalid ELF header)")
    if head[4] != 2 or head[5] != 1:
        raise ArtifactError(f"{lib}: not a 64-bit little-endian ELF library")
    machine = _ELF_MACHINE.get(struct.unpack_from("<H", head, 18)[0], "another CPU")
    want = "aarch64" if str(manifest["target"]["tvm"].get("host", manifest["target"]["tvm"]).get("mtriple", "")
                             ).startswith("aarch64") else "x86_64"
    if machine != want:
        raise ArtifactError(f"{lib}: the library is built for {machine}, the manifest says {want}")
    shoff, = struct.unpack_from("<Q", head, 40)
    shentsize, shnum = struct.unpack_from("<HH", head, 58)
    if shoff + shentsize * shnum > size:
        raise ArtifactError(f"{lib}: truncated ({size} bytes; its section table ends at byte "
                            f"{shoff + shentsize * shnum}); recompile")


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tvm_threads() -> int:
    """The threads TVM's CPU kernels run with here, set in TVM_NUM_THREADS for TVM's pool (called
    before the pool starts): the user's TVM_NUM_THREADS, else OMP_NUM_THREADS (which TVM reads
    next), else every CPU this process may use; a value that is not a positive whole number is
    replaced. TVM's pool reads the variable once, at the first parallel kernel, and a worker
    process (MetaSchedule's LocalRunner) inherits it; left unset, TVM takes half the logical CPUs
    (1 thread on a 2-core VM, measured 1.8x slower), so a kernel tuned or timed there would be
    judged at one thread and run at two."""
    for name in ("TVM_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            os.environ["TVM_NUM_THREADS"] = value
            return int(value)
    os.environ["TVM_NUM_THREADS"] = str(usable_cpus())
    return usable_cpus()


class Compiled:
    """A compiled model: `run(x, "visible" | "infrared" | modality_vector)` -> features.

    Runs wherever the artifact's target can run from here: in this process (x86, CUDA), or
    under qemu for an aarch64 build (see targets/executors.py)."""

    def __init__(self, path: str | Path, progress=lambda msg: None, rpc: tuple[str, str] | None = None):
        """`rpc`: (tracker HOST:PORT, device key) to run on a remote device instead."""
        tvm_threads()
        import tvm
        from reidc.targets import TargetError, preset_from_manifest
        from reidc.targets.executors import executor_for
        from reidc.targets.amx import request_amx, uses_amx
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if self.manifest.get("tvm_version") != tvm.__version__:
            raise ArtifactError(f"{self.path}: built with TVM {self.manifest.get('tvm_version')}, "
                                f"this is TVM {tvm.__version__}")
        try:
            self.preset = preset_from_manifest(self.manifest["target"])
        except (KeyError, TargetError) as e:
            raise ArtifactError(f"{self.path / MANIFEST}: bad target entry: {e}") from None
        if rpc:
            from reidc.targets.executors import RPCExecutor
            self.executor = RPCExecutor(self.path / LIB, *rpc, device="cuda" if self.preset.kind == "cuda" else "cpu")
        else:
            required = self.manifest["target"].get("cpu_features")
            missing = self.preset.missing_on_host(None if required is None else tuple(required))
            if missing:
                raise ArtifactError(f"{self.path} is built for {self.preset.name}; running it here needs "
                                    f"{', '.join(missing)}, which this machine lacks: recompile for this machine "
                                    "(--target host) or run it where those are")
            check_integrity(self.path, self.manifest)
            if uses_amx(required or self.preset.cpu_features()) and self.preset.kind != "cuda" and not request_amx():
                raise ArtifactError(f"{self.path} uses AMX tiles and Linux refused this process the tile state "
                                    "(arch_prctl ARCH_REQ_XCOMP_PERM needs Linux 5.16+): recompile with "
                                    "--target x86-avx512-vnni")
            try:
                self.executor = executor_for(self.preset, self.path / LIB, progress)
            except (RuntimeError, ValueError, OSError) as e:  # what TVM's loader raises (tvm_ffi has no TVMError)
                raise ArtifactError(f"{self.path / LIB}: TVM cannot load the library: "
                                    f"{str(e).strip().splitlines()[-1][:300]}") from None
        self.input_shape = tuple(self.manifest["input_shape"])
        self.modes = tuple(RunMode(m) for m in self.manifest["modes"])

    def check(self, x: np.ndarray, modality) -> tuple[np.ndarray, RunMode, np.ndarray | None]:
        x = np.asarray(x)
        if x.dtype.kind not in "fiu" or x.dtype.itemsize > 8:
            raise InputError(f"input has dtype {x.dtype}; this artifact takes {INPUT_CONTRACT}")
        if x.dtype.kind in "iu":
            warnings.warn(f"input has integer dtype {x.dtype}; it is converted to float32 as is (no scaling): "
                          "this artifact takes " + INPUT_CONTRACT, stacklevel=3)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise InputError(f"input has shape {tuple(x.shape)}; this artifact takes (N, "
                             f"{', '.join(map(str, self.input_shape))}) float32 images")
        if x.shape[0] < 1:
            raise InputError("input batch is empty")
        fixed = self.manifest.get("batch")
        if fixed and x.shape[0] != fixed:
            raise InputError(f"input batch is {x.shape[0]}; this artifact was built for batch {fixed} "
                             "(compile without --batch for any batch size)")
        exported = self.manifest.get("export_batch")
        if exported and x.shape[0] != exported:
            raise InputError(f"input batch is {x.shape[0]}; this program was exported for batch {exported} only")
        x = np.ascontiguousarray(x, dtype=np.float32)
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if bad.any():
            raise InputError(f"input sample {int(np.argmax(bad))} (and {int(bad.sum()) - 1} more) holds NaN or Inf "
                             "(or a value beyond float32's range); this artifact takes " + INPUT_CONTRACT)
        if RunMode.MAIN in self.modes:
            return x, RunMode.MAIN, None
        if isinstance(modality, str):
            if modality == HALVES:
                if len(x) % 2:
                    raise InputError(f"modality halves: the batch of {len(x)} does not split into two equal halves")
                modality = np.repeat(np.array([Modality.VISIBLE.code, Modality.INFRARED.code], np.int32), len(x) // 2)
            else:
                try:
                    return x, RunMode.parse(modality, (RunMode.VISIBLE, RunMode.INFRARED), "modality"), None
                except ValueError as e:
                    raise InputError(f"{e}, {HALVES} or a per-sample vector") from None
        m = np.asarray(modality)
        if m.dtype.kind not in "biuf":
            raise InputError(f"modality vector has dtype {m.dtype}; expected integers {_CODES}")
        if m.shape != (x.shape[0],) or not np.isin(m, tuple(CODES.values())).all():
            raise InputError(f"modality vector must hold {x.shape[0]} values of {_CODES}; got shape {m.shape}")
        return x, RunMode.MIXED, np.ascontiguousarray(m, dtype=np.int32)

    def args(self, x, modality) -> tuple[str, list[np.ndarray]]:
        """(the entry's name, its arguments) for a run on `x` with `modality`."""
        x, mode, m = self.check(x, modality)
        if mode not in self.modes:
            raise InputError(f"{self.path} has no {mode} entry (built with --modes {','.join(self.modes)}); "
                             f"recompile with --modes including {mode}")
        return mode.value, [x] if m is None else [x, m]

    def run(self, x: np.ndarray, modality=Modality.VISIBLE) -> np.ndarray:
        mode, a = self.args(x, modality)
        return self.executor.call(mode, a)[0]

    def run_bits(self, x: np.ndarray, modality=Modality.VISIBLE) -> list[np.ndarray]:
        """[features, packed bits of every bitpack layer...] from the `<mode>_bits` entry."""
        mode, a = self.args(x, modality)
        return self.executor.call(f"{mode}_bits", a)

    def time_ms(self, x, modality, number: int = 5, repeat: int = 3) -> float:
        mode, a = self.args(x, modality)
        return self.executor.time_ms(mode, a, number=number, repeat=repeat)


def run_files(artifact: str | Path, images: str | Path, modality: str, out: str | Path,
              progress=lambda msg: None, normalize: str | None = None) -> dict:
    """`reidc run`: the features of `images` (a .npy batch, or a folder of image files read and
    preprocessed as the manifest states, in file-name order) written as .npy to `out` (checked
    before any work). `modality`: visible, infrared, halves, or a .npy file of per-sample codes.
    normalize="l2": unit-length features, ready for cosine retrieval. Returns {"shape", "files"}."""
    if normalize not in (None, "none", "l2"):
        raise InputError(f"--normalize {normalize!r}: expected none or l2")
    guard_output_file(out)
    comp = Compiled(artifact, progress)
    files = None
    m = _load_npy(modality) if str(modality).endswith(".npy") else modality
    if Path(images).is_dir():
        feats, files = _run_folder(comp, Path(images), m, progress)
    else:
        feats = comp.run(_load_npy(images), m)
    if normalize == "l2":
        feats = feats / np.maximum(np.linalg.norm(feats.reshape(len(feats), -1), axis=1), 1e-12).reshape(
            (-1,) + (1,) * (feats.ndim - 1)).astype(feats.dtype)
    buf = io.BytesIO()
    np.save(buf, feats)
    atomic_write_bytes(out, buf.getvalue(), flag="-o")
    return {"shape": tuple(feats.shape), "files": files}


def _run_folder(comp: "Compiled", folder: Path, modality, progress, chunk: int = 32):
    """The features of a folder's images, read and run `chunk` at a time (the artifact's fixed
    batch if it has one: the last chunk is padded with its last image, and the padding's rows
    dropped), in file-name order. A per-sample modality vector is split alongside."""
    from .imagefolder import image_files, read_images
    files = image_files(folder)
    if isinstance(modality, str) and modality == HALVES:   # halves of the whole folder, not of each chunk
        if len(files) % 2:
            raise InputError(f"modality halves: the {len(files)} images in {folder} do not split into two equal halves")
        modality = np.repeat(np.array([Modality.VISIBLE.code, Modality.INFRARED.code], np.int32), len(files) // 2)
    if not isinstance(modality, str) and len(modality) != len(files):
        raise InputError(f"modality vector has {len(modality)} values for {len(files)} images in {folder}")
    fixed = comp.manifest.get("batch") or comp.manifest.get("export_batch")
    step = fixed or chunk
    out = []
    for i in range(0, len(files), step):
        part = files[i:i + step]
        x = read_images(part + [part[-1]] * (step - len(part) if fixed else 0), comp.manifest.get("preprocess"))
        m = modality if isinstance(modality, str) else np.resize(modality[i:i + step], len(x))
        out.append(comp.run(x, m)[:len(part)])
        progress(f"ran {min(i + step, len(files))} of {len(files)} images from {folder}")
    return np.concatenate(out), [f.name for f in files]


def _load_npy(path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read as .npy: {e}") from None
