"""File I/O that never leaves half-written outputs: atomic writes of bytes, text, JSON and arrays, and
atomic replacement of whole folders."""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it onto `path` only if the block succeeds.

    The temp file lives in the same directory so the final rename is atomic on POSIX.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temp folder beside `path`; if the block succeeds, it replaces `path` (`replace_dir`).

    On an exception the temp folder is removed and `path` is left as it was (or absent, if it was).
    The temp folder gets the mode an ordinary mkdir would (mkdtemp's 0700 would hide the output).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent))
    try:
        tmp.chmod(0o777 & ~_umask())
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def temp_prefix(target: Path) -> str:
    """Temp names carry the writer's process id, so that a later writer can tell a dead one's leftovers."""
    return f".{target.name}.{os.getpid()}."


def remove_stale_temps(target: Path) -> None:
    """Delete what writers of `target` that no longer run left beside it (a process killed with -9 runs no
    cleanup): temp files and folders, and old folders set aside by replace_dir."""
    pattern = re.compile(rf"\.{re.escape(target.name)}\.(\d+)\.(.*\.tmp|old)$")
    for sibling in target.parent.iterdir():
        match = pattern.match(sibling.name)
        if match and not process_alive(int(match.group(1))):
            _remove(sibling)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        return True
    return True


def replace_dir(new: str | os.PathLike, target: str | os.PathLike) -> None:
    """Put the folder `new` in place of `target` (which need not exist); `new` must be in the same parent.

    The old `target` is renamed aside, `new` is renamed onto `target`, and only then is the old one
    deleted, so at no point is the old content gone before its replacement is complete. POSIX has no
    atomic swap of two folders (rename onto a non-empty folder fails), so between the two renames, for
    the time of one rename, `target` does not exist; a reader in that gap finds nothing, never a mix of
    old and new. If the second rename fails, the old folder is renamed back.
    """
    new, target = Path(new), Path(target)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.{os.getpid()}.old")
        _remove(old)  # left by a killed process that had the same id
        os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found; run the stage that produces it (dvc repro)")
    return json.loads(path.read_text(encoding="utf-8"))


def write_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """Raw little-endian dump (nanoGPT's .bin format), readable with np.memmap."""
    with atomic_path(path) as tmp:
        np.ascontiguousarray(array).tofile(tmp)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")


def lookup(mapping: dict, dotted: str) -> Any:
    """mapping['a']['b'] for 'a.b' (metrics files are nested), or None where a key is absent."""
    value: Any = mapping
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value
