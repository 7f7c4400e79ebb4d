"""Writing what reidc produces without ever destroying what it did not write.

One helper for every command that writes:
- `atomic_directory(out, kind)`: build a directory in a temporary sibling; on success swap it
  into place (the old one, if reidc wrote it, is removed only after the swap); on any error
  or Ctrl-C the temporary is removed and `out` is left exactly as it was.
- `guard_output_dir(out, kind, inputs)`: the rules that protect a user's files. `-o` may name
  a missing or empty folder, or a folder reidc itself wrote for this kind of output. It may not
  name a file, the current folder or one of its parents, a folder that holds (or is) one of the
  inputs, or a non-empty folder holding anything reidc does not recognise.
- `guard_output_file(path)`: an output file's folder exists and is writable, and it is no folder.
- `atomic_write_text/json/bytes(path, data)`: a file replaced by rename, mode 0644;
  `atomic_file(path)` the same for a file a tool writes itself (a compiler's `-o`).
- `cache_directory(dest)`: a cache entry built beside and renamed into place once; when
  another process published it first, theirs is kept.

One file mode: every file reidc writes ends up 0644 (0755 if it is a program), every folder
0755, whatever the umask or the library that wrote it (`atomic_directory` sets them before
the swap).

Each refusal is an `OutputError`: one line naming the path and the reason.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import UserError

FILE_MODE = 0o644
EXEC_MODE = DIR_MODE = 0o755

# What reidc writes, per kind of output directory: (files that must be there, files that may be).
# A folder holding only these is reidc's own and may be replaced.
KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "artifact": (frozenset({"manifest.json"}), frozenset({"manifest.json", "model.so", "kernels.cu"})),
    "checkpoint": (frozenset({"arch.json"}), frozenset({"arch.json", "model.safetensors"})),
    "supernet": (frozenset({"train.json"}),
                 frozenset({"supernet.safetensors", "optimizer.pt", "train.json", "gal.safetensors"})),
    "runner": (frozenset({"reidc_run"}), None),   # None: any file of the bundle's (libraries change by version)
}


class OutputError(UserError, ValueError):
    """An output path reidc refuses to write (it would destroy a user's files) or cannot write."""


def _is_relative_to(a: Path, b: Path) -> bool:
    try:
        a.relative_to(b)
        return True
    except ValueError:
        return False


def owned_by_reidc(path: Path, kind: str) -> bool:
    """True if `path` is a directory that holds only what reidc writes for `kind`."""
    must, may = KINDS[kind]
    try:
        names = {p.name for p in path.iterdir()}
    except OSError:
        return False
    if not must <= names:
        return False
    if may is not None and not names <= may:
        return False
    return all((path / n).is_file() and not (path / n).is_symlink() for n in names)


def _foreign(path: Path, kind: str) -> str:
    """The first entry of `path` that reidc did not write for `kind` (for the error message)."""
    must, may = KINDS[kind]
    names = sorted(p.name for p in path.iterdir())
    odd = [n for n in names if (may is not None and n not in may) or not (path / n).is_file()]
    if odd:
        return odd[0]
    return f"no {sorted(must - set(names))[0]}" if must - set(names) else names[0]


def guard_output_dir(out: str | Path, kind, inputs: Iterable[str | Path] = (), flag: str = "-o",
                     into: bool = False, who: str = "reidc") -> Path:
    """Check that `out` may be (re)written as a `kind` directory; return it resolved.

    `kind`: a name in KINDS, or a function naming the first entry of an existing folder that
    `who` did not write (None: all its own) for outputs that are folders of folders.
    `into`: the command writes into `out` (it must be writable) instead of replacing it whole.
    Raises OutputError naming the path and why not."""
    out = Path(out)
    full = Path(os.path.abspath(out))
    cwd = Path.cwd().resolve()
    real = full.resolve()
    if full.is_symlink():
        raise OutputError(f"{flag} {out}: is a symbolic link; name a real folder")
    if _is_relative_to(cwd, real):
        raise OutputError(f"{flag} {out}: is the current folder or one of its parents; name a new folder")
    for i in inputs:
        if i is None:
            continue
        ip = Path(i).resolve()
        if ip == real or _is_relative_to(ip, real):
            raise OutputError(f"{flag} {out}: holds the input {i}; name a new folder")
        if ip.is_dir() and _is_relative_to(real, ip):
            raise OutputError(f"{flag} {out}: is inside the input folder {i} (writing there changes the input); "
                              "name a folder outside it")
    if full.exists() or full.is_symlink():
        if not full.is_dir():
            raise OutputError(f"{flag} {out}: exists and is not a folder")
        try:
            empty = not any(full.iterdir())
        except PermissionError:
            raise OutputError(f"{flag} {out}: cannot list the folder (permission denied)") from None
        if not empty:
            try:
                odd = kind(full) if callable(kind) else None if owned_by_reidc(full, kind) else _foreign(full, kind)
            except PermissionError:
                raise OutputError(f"{flag} {out}: cannot list the folder (permission denied)") from None
            if odd:
                raise OutputError(f"{flag} {out}: the folder holds files {who} did not write (e.g. {odd!r}); "
                                  f"refusing to {'write into' if into else 'replace'} it: name a new or empty folder")
    parent = full if into and full.is_dir() else full.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{flag} {out}: {parent} is not a folder (it is a file)")
    why = why_not_writable(parent)
    if why:
        raise OutputError(f"{flag} {out}: cannot write in {parent} ({why})")
    return full


def guard_output_file(path: str | Path, flag: str = "-o") -> Path:
    """An output file's folder must exist and be writable, and the path must not be a folder:
    checked before the work that produces it."""
    path = Path(path)
    where = f"{flag} {path}" if flag else str(path)
    if path.is_dir():
        raise OutputError(f"{where}: is a folder; name a file")
    if not path.parent.is_dir():
        raise OutputError(f"{where}: the folder {path.parent} does not exist")
    why = why_not_writable(path.parent)
    if why:
        raise OutputError(f"{where}: cannot write in {path.parent} ({why})")
    return path


def why_not_writable(path: Path) -> str | None:
    """Why reidc cannot write `path` (a folder to create files in, or a file to rewrite), or None."""
    path = Path(path)
    if os.access(path, os.W_OK | (os.X_OK if path.is_dir() else 0)):
        return None
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP if hasattr(errno, "EOPNOTSUPP") else errno.EINVAL):
        return False
    raise OSError(e, os.strerror(e), str(b))


def _mkdirs(path: Path, flag: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{flag} {path}: a parent of the output is a file") from None
    except PermissionError:
        raise OutputError(f"{flag} {path}: cannot create the folder (permission denied)") from None
    except OSError as e:
        raise OutputError(f"{flag} {path}: cannot create the folder ({e.strerror})") from None


@contextmanager
def atomic_directory(out: str | Path, kind: str = "artifact", inputs: Iterable[str | Path] = (),
                     flag: str = "-o") -> Iterator[Path]:
    """Yield a fresh temporary directory beside `out`. On normal exit it takes `out`'s place
    (the previous `out`, which `guard_output_dir` has checked is reidc's own, is removed after
    the swap); on any error or Ctrl-C it is removed and `out` is untouched."""
    out = guard_output_dir(out, kind, inputs, flag)
    _mkdirs(out.parent, flag)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise OutputError(f"{flag} {out}: cannot write in {out.parent} ({e.strerror})") from None
    try:
        yield tmp
        _set_modes(tmp)
        guard_output_dir(out, kind, inputs, flag)  # nothing foreign appeared meanwhile
        if out.exists():
            if _exchange(tmp, out):
                shutil.rmtree(tmp)          # tmp now holds the previous output (reidc's own)
                return
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "d")
            os.replace(tmp, out)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _set_modes(root: Path) -> None:
    """The one file mode: folders and programs 0755, other files 0644 (links are left alone)."""
    os.chmod(root, DIR_MODE)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(folder, name)
            st = os.lstat(p)
            if not os.path.islink(p):
                os.chmod(p, DIR_MODE if name in dirs or st.st_mode & 0o111 else FILE_MODE)


@contextmanager
def cache_directory(dest: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside `dest` to build a cache entry in. On normal
    exit it is renamed to `dest`, unless another process published `dest` meanwhile (then
    theirs is kept and this one dropped); on any error or Ctrl-C it is removed."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        yield tmp
        _set_modes(tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():   # not another process's entry: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path, flag: str = "", mode: int = FILE_MODE) -> Iterator[Path]:
    """Yield a temporary path beside `path` for a tool to write; on normal exit it replaces
    `path` (with `mode`: EXEC_MODE for a program); on any error it is removed and `path` is
    left as it was. An existing folder at `path` is refused."""
    path = guard_output_file(path, flag)
    where = f"{flag} {path}" if flag else str(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.partial-")
    except OSError as e:
        raise OutputError(f"{where}: cannot write in {path.parent} ({e.strerror})") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes, flag: str = "") -> Path:
    """Write `path` through a temporary sibling and a rename (mode 0644); an existing folder at
    `path` is refused, and on failure the old file is left as it was."""
    with atomic_file(path, flag) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, flag: str = "") -> Path:
    return atomic_write_bytes(path, text.encode(), flag)


def atomic_write_json(path: str | Path, obj, flag: str = "", indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n", flag)
