"""reidc's version: one definition, read by the CLI (`reidc --version`) and written into manifests."""
import functools

__version__ = "0.1.0"


def codegen_digest() -> str:
    """A digest of the sources that decide what code a compile generates (kernels/, targets/,
    compiler/lower/, compiler/passes/, compiler/ir/): measurements cached by it (the search's
    latency table) are not reused after the kernels change within one version."""
    return _codegen_digest()


@functools.cache
def _codegen_digest() -> str:
    import hashlib
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]   # the package: compiler/base/version.py -> reidc/
    h = hashlib.sha256()
    for part in ("kernels", "targets", "compiler/lower", "compiler/passes", "compiler/ir"):
        for f in sorted((root / part).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]
