"""Atomic outputs: a file or a folder is replaced only when its new content is complete; a failure
leaves the old one as it was and no temp file or folder behind."""
import json
import os

import numpy as np
import pytest

from tinygpt.core import io


def siblings(path):
    """Everything in the folder of `path` other than `path` itself (temp files, folders moved aside)."""
    return sorted(p.name for p in path.parent.iterdir() if p != path)


def test_write_json_text_and_array_replace_the_file(tmp_path):
    path = tmp_path / "out" / "a.json"
    io.write_json(path, {"x": np.float32(0.5), "n": np.int64(3), "p": tmp_path})
    io.write_json(path, {"x": np.float32(0.25)})
    assert json.loads(path.read_text()) == {"x": 0.25}
    io.write_array(tmp_path / "out" / "a.bin", np.arange(4, dtype=np.uint16))
    assert np.fromfile(tmp_path / "out" / "a.bin", dtype=np.uint16).tolist() == [0, 1, 2, 3]
    assert siblings(path) == ["a.bin"]


def test_atomic_path_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "a.txt"
    io.write_text(path, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and siblings(path) == []


def test_read_json_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        io.read_json(tmp_path / "missing.json")


def test_atomic_dir_replaces_the_whole_folder(tmp_path):
    target = tmp_path / "out"
    (target / "stale").mkdir(parents=True)
    (target / "old.txt").write_text("old")
    with io.atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp != target and list(tmp.iterdir()) == []
        (tmp / "new.txt").write_text("new")
        (tmp / "sub").mkdir()
        assert (target / "old.txt").read_text() == "old"  # untouched until the block succeeds
    assert sorted(p.name for p in target.iterdir()) == ["new.txt", "sub"]
    assert siblings(target) == []  # no temp folder, no old folder left aside
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # as mkdir would make it, not mkdtemp's 0700


def test_atomic_dir_creates_a_missing_target(tmp_path):
    target = tmp_path / "a" / "b"
    with io.atomic_dir(target) as tmp:
        (tmp / "f").write_text("x")
    assert (target / "f").read_text() == "x" and siblings(target) == []


def test_atomic_dir_keeps_the_old_folder_on_error(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert [p.name for p in target.iterdir()] == ["old.txt"] and (target / "old.txt").read_text() == "old"
    assert siblings(target) == []


def test_atomic_dir_on_error_leaves_no_target_where_there_was_none(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with io.atomic_dir(target):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_replace_dir_puts_the_old_folder_back_when_the_swap_fails(tmp_path, monkeypatch):
    target, new = tmp_path / "out", tmp_path / ".out.new"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new.mkdir()
    real_replace, calls = os.replace, []

    def failing_second_rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the rename of `new` onto `target`
            raise OSError("disk gone")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_second_rename)
    with pytest.raises(OSError, match="disk gone"):
        io.replace_dir(new, target)
    assert (target / "old.txt").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == [".out.new", "out"]


def test_a_killed_writers_leftovers_go_with_the_next_write(tmp_path):
    """kill -9 runs no cleanup: the next write of the same output removes what a dead process left."""
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid, live_pid = int(dead.stdout), os.getpid()
    target = tmp_path / "model"
    stale = [tmp_path / f".model.{dead_pid}.x1.tmp", tmp_path / f".model.{dead_pid}.old"]
    stale[0].mkdir()
    (stale[0] / "half.safetensors").write_bytes(b"half")
    stale[1].mkdir()
    kept = [tmp_path / f".model.{live_pid}.x2.tmp", tmp_path / f".other.{dead_pid}.x3.tmp"]
    for path in kept:
        path.write_text("in use, or not ours")
    with io.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("w")
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept) and (target / "weights").read_text() == "w"
    with io.atomic_path(tmp_path / "other") as tmp:
        tmp.write_text("o")
    assert not kept[1].exists()
