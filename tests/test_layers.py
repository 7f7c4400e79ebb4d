"""The layers of the README's architecture import downward only, with no cycle, and the runtime
loads no torch and no frontend. The contracts live in pyproject.toml ([tool.importlinter]);
`lint-imports` checks them (imports inside functions count too)."""
import json
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("reidc.compiler", "reidc.frontend", "reidc.kernels", "reidc.targets")


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_import_contracts_hold():
    """lint-imports, as a developer runs it; its report is the failure message."""
    exe = Path(sys.executable).with_name("lint-imports")
    if not exe.exists():
        pytest.fail("import-linter is not installed: pip install -e '.[dev]'")
    r = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.fail(r.stdout[r.stdout.find("Contracts"):][-6000:] + r.stderr[-2000:], pytrace=False)


def test_every_module_sits_in_a_layer():
    """A new top-level module or package must be placed in the layers contract (otherwise
    import-linter would not check what it imports)."""
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}
    modules = []
    for pkg in PACKAGES:
        if pkg in named:
            continue
        for p in sorted((ROOT / pkg.removeprefix("reidc.")).iterdir()):
            if p.name.startswith(("_", ".")) or not (p.suffix == ".py" or (p / "__init__.py").exists()):
                continue
            modules.append(f"{pkg}.{p.stem}")
    assert [m for m in modules if m not in named] == []


def test_the_runtime_imports_neither_torch_nor_the_frontend():
    """A fresh interpreter loads compiler.runtime and everything `Compiled` imports (it fails
    on a missing artifact only after its imports). `torch` is blocked: tvm_ffi imports it
    whenever it is installed (no switch turns that off), so the finder records who asks for
    it, and only reidc's own modules asking count."""
    code = textwrap.dedent("""
        import importlib.abc, json, sys

        asked = []

        def watched(name):
            return name.split(".")[0] == "torch" or name.startswith("reidc.frontend")

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if not watched(name):
                    return None
                f = sys._getframe(1)
                while f and (f.f_code.co_filename.startswith("<frozen") or "importlib" in f.f_code.co_filename):
                    f = f.f_back
                asked.append((name, f.f_globals.get("__name__", "?") if f else "?"))
                if name.split(".")[0] == "torch":
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked)")
                return None

        sys.meta_path.insert(0, Block())
        from reidc.compiler.base.errors import ArtifactError
        from reidc.compiler.runtime import Compiled
        try:
            Compiled("/nonexistent-artifact")
        except ArtifactError:
            pass
        print(json.dumps({"asked": asked, "tvm": "tvm" in sys.modules,
                          "loaded": sorted(m for m in sys.modules if watched(m))}))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["tvm"], "Compiled did not reach its TVM imports"
    by_reidc = [(name, who) for name, who in out["asked"] if who.split(".")[0] == "reidc"]
    assert by_reidc == [] and out["loaded"] == [], out
