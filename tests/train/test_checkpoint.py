"""The checkpoint key covers the stage's code: through the real pretrain stage in a copy of the project,
an interrupted run resumes while the code is unchanged, and an edit to any module the stage imports
starts training from scratch instead of resuming what older code wrote."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from support import dvc, set_params

from tinygpt.core.compute import ComputeParams
from tinygpt.model.config import GPTConfig
from tinygpt.train.config import TrainParams
from tinygpt.train.checkpoint import key_material, run_key


def test_the_key_changes_with_the_code_version(tmp_path):
    tokens = tmp_path / "train.bin"
    tokens.write_bytes(b"\0\1" * 8)
    config, p = GPTConfig(), TrainParams()
    assert run_key(key_material(config, p, [tokens], "code-a")) == run_key(key_material(config, p, [tokens], "code-a"))
    assert run_key(key_material(config, p, [tokens], "code-a")) != run_key(key_material(config, p, [tokens], "code-b"))


def test_the_key_changes_with_the_device_and_precision(tmp_path):
    """The precision decides the weights: a checkpoint written at another device or precision is never resumed."""
    tokens = tmp_path / "train.bin"
    tokens.write_bytes(b"\0\1" * 8)
    config, p = GPTConfig(), TrainParams()
    auto = key_material(config, p, [tokens])
    assert auto["compute"] == {"device": "auto", "precision": "auto"}
    keys = {run_key(key_material(config, p, [tokens], compute=ComputeParams(device, precision)))
            for device in ("cpu", "cuda") for precision in ("fp32", "bf16")}
    assert len(keys) == 4 and run_key(auto) not in keys


def test_nproc_per_node_joins_the_key_only_above_one(tmp_path):
    """Single-process keys are what they were before train.nproc_per_node existed; 2 processes get their own."""
    tokens = tmp_path / "train.bin"
    tokens.write_bytes(b"\0\1" * 8)
    config, p = GPTConfig(), TrainParams()
    assert "nproc_per_node" not in key_material(config, p, [tokens])["train"]
    two = dataclasses.replace(p, nproc_per_node=2)
    assert key_material(config, two, [tokens])["train"]["nproc_per_node"] == 2
    assert run_key(key_material(config, two, [tokens])) != run_key(key_material(config, p, [tokens]))


def pretrain_metrics(project) -> dict:
    return json.loads((project / "metrics/pretrain.json").read_text())


def interrupt_after_first_checkpoint(project) -> None:
    """Start the stage as DVC would, and kill -9 it as soon as its first checkpoint is on disk."""
    env = dict(os.environ)
    env.pop("MLFLOW_TRACKING_URI", None)
    stage = subprocess.Popen([sys.executable, "-m", "stages.pretrain"], cwd=project, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((project / ".cache/pretrain").glob("*/checkpoint.pt")) and time.time() < deadline:
        assert stage.poll() is None, "the stage ended before its first checkpoint"
        time.sleep(0.02)
    stage.send_signal(signal.SIGKILL)
    stage.wait()


@pytest.mark.slow
def test_unchanged_code_resumes_and_edited_code_trains_from_scratch(tiny_project):
    project = tiny_project
    set_params(project, train={"max_steps": 400, "checkpoint_interval": 25, "eval_interval": 200})
    dvc(project, "repro", "split")

    interrupt_after_first_checkpoint(project)
    out = dvc(project, "repro", "pretrain")
    assert "Running stage 'pretrain'" in out.stdout
    resumed = pretrain_metrics(project)
    assert 25 <= resumed["resumed_from_step"] < 400 and resumed["steps"] == 400

    # A comment in a module the stage imports: DVC reruns the stage, and the final checkpoint that the
    # old code wrote is not taken as this run's result.
    with (project / "src/tinygpt/model/gpt.py").open("a") as f:
        f.write("\n# an edit that changes no number, only the code\n")
    out = dvc(project, "repro", "pretrain")
    assert "Running stage 'pretrain'" in out.stdout
    fresh = pretrain_metrics(project)
    assert fresh["resumed_from_step"] == 0 and fresh["steps"] == 400
    assert len(list((project / ".cache/pretrain").iterdir())) == 2  # one checkpoint directory per code version
    assert "up to date" in dvc(project, "status", "pretrain").stdout

    # A comment in code that only reports on the weights (the stage's metrics and plots): DVC reruns the
    # stage, which takes the final checkpoint as it is and trains nothing.
    with (project / "src/tinygpt/pipeline/outputs/pretrain.py").open("a") as f:
        f.write("\n# an edit to the reporting code\n")
    out = dvc(project, "repro", "pretrain")
    assert "Running stage 'pretrain'" in out.stdout
    reported = pretrain_metrics(project)
    assert reported["resumed_from_step"] == 400 and reported["whole_val"] == fresh["whole_val"]
