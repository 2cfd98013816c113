"""The check_params stage: every section of params.yaml is validated on every `dvc repro`, also when
every other stage is cached, and a valid edit reruns only the check and the stages that read the key."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from support import copy_finished, dvc, set_params

BAD_EDITS = [  # (section, key, value, what the error must say)
    ("data", "bogus_key", 1, "unknown key 'data.bogus_key'"),
    ("train", "learning_rte", 0.01, "unknown key 'train.learning_rte'"),
    ("train", "max_steps", "many", "train.max_steps must be an integer"),
    ("rlhf", "cliprange", -0.2, "rlhf.cliprange"),
    ("model", "dropout", 1.5, "model.dropout"),
]


@pytest.fixture
def data_project(finished_project, tmp_path):
    """A copy of the finished tiny pipeline: its data stages (and the rest) have run."""
    return copy_finished(finished_project, tmp_path / "project")


@pytest.mark.slow
def test_a_bad_key_fails_repro_while_every_other_stage_is_cached(data_project):
    project = data_project
    valid = (project / "params.yaml").read_text()
    for section, key, value, message in BAD_EDITS:
        set_params(project, **{section: {key: value}})
        out = dvc(project, "repro", "split", check=False)
        assert out.returncode != 0, f"{section}.{key}: {value!r} passed\n{out.stdout}"
        assert message in out.stderr, out.stderr
        assert "failed to reproduce 'check_params'" in out.stderr and "Traceback" not in out.stderr
        assert not (project / "data/params/checked.txt").exists()  # no stale "valid" marker left behind
        (project / "params.yaml").write_text(valid)

    # Valid again: the check passes (restored from DVC's run-cache: this file was checked before), the
    # marker is back, and nothing downstream reruns.
    out = dvc(project, "repro", "split")
    assert (project / "data/params/checked.txt").exists()
    assert not any(f"Running stage '{s}'" in out.stdout for s in ("download", "tokenize", "split"))


@pytest.mark.slow
def test_a_valid_edit_reruns_the_check_and_only_the_stages_that_read_the_key(data_project):
    project = data_project
    set_params(project, train={"seed": 7})  # read by pretrain only
    out = dvc(project, "repro", "split")
    assert "Running stage 'check_params'" in out.stdout
    assert not any(f"Running stage '{s}'" in out.stdout for s in ("download", "tokenize", "split"))
    set_params(project, split={"val_fraction": 0.2})
    out = dvc(project, "repro", "split")
    assert "Running stage 'split'" in out.stdout and "Running stage 'tokenize'" not in out.stdout
    assert "up to date" in dvc(project, "status", "check_params", "download", "tokenize", "split").stdout


def test_the_check_never_imports_torch(repo_root, tmp_path, mlflow_uri):
    (tmp_path / "params.yaml").write_text((repo_root / "params.yaml").read_text())
    script = ("import sys; from stages import check_params; check_params.main(); "
              "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    env = dict(os.environ, PYTHONPATH=str(repo_root))
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("no torch")
    assert (tmp_path / "data/params/checked.txt").read_text().startswith("params.yaml passed validation")
