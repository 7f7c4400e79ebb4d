"""An artifact where it runs: `reidc verify`, `run` and `inspect`; the aarch64 runner bundle and
the emulated ARM device (`reidc runner`, `reidc qemu-server`)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from .. import api as reidc
from ..api import INPUT_CONTRACT, UserError
from .common import _fail, _progress, out
from .toplevel import app


@app.command()
def verify(artifact: Path = typer.Argument(..., help="artifact directory from `reidc compile`"),
           checkpoint: Optional[Path] = typer.Option(None, help="the checkpoint (default: the path in the manifest)")):
    """Verify an artifact against PyTorch where it runs (e.g. a CUDA build made with --no-verify
    on a machine without a GPU); updates its manifest."""
    try:
        man = reidc.verify(artifact, checkpoint, progress=_progress)
    except UserError as e:
        _fail(e)
    errs = ", ".join(f"{m} {e:.1e}" for m, e in man["verification"]["max_rel_err"].items())
    out.print(f"{artifact}: verification passed (max rel. L2 error: {errs})")


@app.command()
def runner(output: Path = typer.Option(..., "-o", "--output", help="directory to write the aarch64 runner bundle to")):
    """Cross-compile reidc's C++ runner for aarch64, with TVM's aarch64 runtime libraries beside it:
    copy the directory and an artifact to a board and run `./reidc_run ARTIFACT/model.so ...`."""
    try:
        libs = reidc.runner_bundle(output, _progress)
    except UserError as e:
        _fail(e)
    out.print(f"wrote {output}: reidc_run + {', '.join(libs)} (aarch64; the runner finds the libraries beside it)")


@app.command("qemu-server")
def qemu_server(tracker: Optional[str] = typer.Option(None, help="HOST:PORT of the RPC tracker to register with"),
                key: str = typer.Option("qemu-aarch64", help="device key to register under"),
                setup_only: bool = typer.Option(False, help="only build the emulated aarch64 Python (cached)")):
    """Run TVM's RPC server on an aarch64 Python under qemu-user: an emulated ARM device for
    `reidc tune --rpc-tracker` (proves the path; its timings are not ARM speed)."""
    if not (setup_only or tracker):
        _fail(ValueError("--tracker HOST:PORT is required (or --setup-only)"))
    try:
        if setup_only:
            out.print(f"emulated aarch64 Python ready: {reidc.qemu_server(None, setup_only=True, progress=_progress)}")
            return
        code = reidc.qemu_server(tracker, key, _progress, announce=out.print)
    except UserError as e:
        _fail(e)
    except KeyboardInterrupt:
        return
    sys.exit(code)


@app.command()
def run(artifact: Path = typer.Argument(..., help="artifact directory from `reidc compile`"),
        input: Path = typer.Option(..., "--input", help=".npy images (N, C, H, W) (" + INPUT_CONTRACT + "), or a "
                                   "folder of image files, preprocessed as the manifest states"),
        modality: str = typer.Option("visible", help="visible | infrared | halves (first half visible, second "
                                                      "infrared: CM-NAS's mode 0) | a .npy int vector (0 visible, 1 infrared)"),
        normalize: str = typer.Option("none", help="none | l2: unit-length features, ready for cosine retrieval"),
        output: Path = typer.Option(..., "-o", "--output", help=".npy features to write")):
    """Run a compiled model on images (a .npy batch or a folder of image files)."""
    try:
        res = reidc.run_files(artifact, input, modality, output, _progress, normalize)
    except UserError as e:
        _fail(e)
    rows = f" (rows in file-name order: {res['files'][0]} ... {res['files'][-1]})" if res["files"] else ""
    out.print(f"wrote {output}: features {res['shape']}{rows}")


@app.command()
def inspect(artifact: Path = typer.Argument(..., help="artifact directory from `reidc compile`"),
            json_out: bool = typer.Option(False, "--json", help="print the summary as JSON")):
    """What an artifact is: model, entries, input contract, target, precision, verification, tuning."""
    try:
        info = reidc.inspect(artifact)
    except UserError as e:
        _fail(e)
    if json_out:
        print(json.dumps(info, indent=1))
        return
    t = Table("", "", title=str(artifact), show_header=False)
    for key, value in info.items():
        if key != "path":
            t.add_row(key, escape(value if isinstance(value, str) else json.dumps(value)))
    out.print(t)
