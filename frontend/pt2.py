"""Loading an untrusted `.pt2` (torch.export) archive without running code from it.

`torch.export.load` unpickles with `weights_only=False` in several places: weights and tensor
constants whose config says `use_pickle`, custom (torchbind) and opaque objects among the
constants, the legacy `data/weights/<model>.pt` file, and the sample inputs when a
weights-only load of them fails (it then retries with full pickle). It also loads AOTInductor
libraries packaged beside the program. So the archive is read first, as a zip of JSON and raw
bytes, and refused, with nothing unpickled, unless every entry is one that loads without pickle:
the program JSON, raw tensor payloads, configs that say `use_pickle: false`, and sample inputs
that a weights-only load accepts. Only then does `torch.export.load` see it: the same bytes,
read from the file once (a file swapped between the check and the load is never loaded).
"""
from __future__ import annotations

import io
import json
import logging
import posixpath
import zipfile
import zlib
from pathlib import Path

from reidc.compiler.base.errors import CaptureError

# Entries (below the archive's root folder) that load without pickle.
_PLAIN = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id")
_TENSOR_PREFIX = {"data/weights/": "weight_", "data/constants/": "tensor_"}


def _refuse(path: Path, why: str) -> CaptureError:
    return CaptureError(f"{path}: refused to load: {why} (it would unpickle objects other than tensors, which can "
                        "run code; re-export the program with plain tensors)")


def check_archive(path: str | Path, data: bytes | None = None) -> None:
    """Raise CaptureError unless loading the archive unpickles nothing beyond plain tensors.
    `data`: the archive's bytes, already read from `path` (named in messages)."""
    path = Path(path)
    try:
        z = zipfile.ZipFile(path if data is None else io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise CaptureError(f"{path}: not a torch.export archive ({e})") from None
    try:
        with z:
            _check_members(path, z)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:  # damaged compressed data, bad CRC
        raise CaptureError(f"{path}: corrupt torch.export archive ({e})") from None


def _check_members(path: Path, z: zipfile.ZipFile) -> None:
    import torch
    names = [i.filename for i in z.infolist() if not i.is_dir()]
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or not all("/" in n for n in names):
        raise CaptureError(f"{path}: not a torch.export archive (entries under {len(roots)} top folders)")
    root = roots.pop() + "/"
    configs, payloads = {}, {}
    for full in names:
        name = full[len(root):]
        if posixpath.normpath(name) != name or name.startswith(("/", "..")):
            raise _refuse(path, f"entry {full!r} has an unsafe path")
        if name in _PLAIN or (name.startswith("models/") and name.endswith(".json") and name.count("/") == 1):
            continue
        if name.startswith("extra/"):  # read as text by torch
            continue
        if name.startswith("data/sample_inputs/") and name.endswith(".pt"):
            try:
                torch.load(io.BytesIO(z.read(full)), map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001  (anything a weights-only load rejects)
                raise _refuse(path, f"its sample inputs {name} are not plain tensors "
                                    f"({str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__})"
                              ) from None
            continue
        folder = next((d for d in _TENSOR_PREFIX if name.startswith(d) and name.count("/") == 2), None)
        if folder and name.endswith("_config.json"):
            configs[name] = folder
            continue
        if folder and posixpath.basename(name).startswith(_TENSOR_PREFIX[folder]):
            payloads[name] = folder
            continue
        if folder and name.endswith(".pt"):
            raise _refuse(path, f"{name} is a legacy pickled weights file")
        raise _refuse(path, f"it holds {name!r}, which is not a program, a tensor payload or a config "
                            "(e.g. AOTInductor libraries or pickled objects)")
    for name, folder in configs.items():
        try:
            cfg = json.loads(z.read(root + name))["config"]
            items = list(cfg.items())
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CaptureError(f"{path}: corrupt {name} ({e})") from None
        for fqn, meta in items:
            if not isinstance(meta, dict):
                raise CaptureError(f"{path}: corrupt {name} (entry {fqn!r})")
            if meta.get("use_pickle", True):
                raise _refuse(path, f"{fqn!r} in {name} is stored as a pickle")
            p = str(meta.get("path_name", ""))
            if not p.startswith(_TENSOR_PREFIX[folder]) or "/" in p:
                raise _refuse(path, f"{fqn!r} in {name} is a {p.split('_')[0] or 'non-tensor'} object, not a tensor")


def read_archive(path: str | Path) -> bytes:
    """The archive's bytes (CaptureError if there is no such file)."""
    path = Path(path)
    if not path.is_file():
        raise CaptureError(f"{path}: no such file")
    return path.read_bytes()


def load_program(path: str | Path, data: bytes | None = None):
    """The checked archive's ExportedProgram (CaptureError naming the problem otherwise).
    `data`: the archive's bytes, if already read. The check and the load see the same bytes,
    read from the file once."""
    import torch
    path = Path(path)
    if data is None:
        data = read_archive(path)
    check_archive(path, data)
    quiet = logging.getLogger("torch.export")  # it logs a whole traceback before raising
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return torch.export.load(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001  (corrupt JSON, version mismatch, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CaptureError(f"{path}: cannot load the torch.export program: {first[:300]}") from None
    finally:
        quiet.setLevel(level)
