"""Faults during a run, in a copy of the finished tiny project: `kill -9` of the reward and rlhf stages
mid-run, and a crash between a stage's outputs and its metrics. After each, DVC holds nothing of the
broken run (dvc.lock, the cache and the run-cache as before; the stage shows as changed), the MLflow run
is marked KILLED by the next one, and a plain rerun restarts the stage cleanly: its model is byte for byte
the uninterrupted run's and nothing of the killed one is left on disk."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from support import copy_finished, dvc, set_params

FAULT_INJECTION = Path(__file__).with_name("fault_injection")  # its sitecustomize.py kills on cue
# Runs with steps past HOLD_AT_STEP (the tiny defaults have one or two) and, for rlhf, evaluations before it.
LONGER = {"reward": {"reward": {"epochs": 4}}, "rlhf": {"rlhf": {"steps": 6, "eval_interval": 2}}}


def folder_digest(path: Path) -> dict[str, str]:
    return {f.relative_to(path).as_posix(): hashlib.md5(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


def cache_objects(project: Path) -> set[str]:
    """Every file in DVC's cache, the run-cache included."""
    cache = project / ".dvc" / "cache"
    return {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}


HOLD_AT_STEP = 2  # the training step after which the stage waits for its SIGKILL


def kill_mid_run(project: Path, stage: str) -> subprocess.CompletedProcess:
    """`dvc repro` the stage and SIGKILL its process mid-training: the fault injection holds it after
    training step HOLD_AT_STEP and names its pid in a marker file."""
    marker = project.parent / f"{stage}.holding"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PATH=str(Path(sys.executable).parent) + os.pathsep + env["PATH"], PYTHONPATH=str(FAULT_INJECTION),
               TINYGPT_HOLD_AT_STEP=str(HOLD_AT_STEP), TINYGPT_HOLD_MARKER=str(marker))
    proc = subprocess.Popen([str(Path(sys.executable).parent / "dvc"), "repro", "--single-item", stage], cwd=project,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not marker.exists() or not marker.read_text():
        assert proc.poll() is None and time.time() < deadline, f"{stage} ended before step {HOLD_AT_STEP}"
        time.sleep(0.2)
    victim = psutil.Process(int(marker.read_text()))
    assert f"stages.{stage}" in " ".join(victim.cmdline()), victim.cmdline()
    victim.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def assert_dvc_took_nothing(project: Path, stage: str, lock_before: str, cache_before: set[str]) -> None:
    assert (project / "dvc.lock").read_text() == lock_before
    assert cache_objects(project) == cache_before, "the broken run's outputs reached DVC's cache"
    assert stage in json.loads(dvc(project, "status", "--json", stage).stdout)  # DVC knows it must rerun


def runs_of_stage(project: Path, stage: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tinygpt").experiment_id
    return client.search_runs([experiment], f"tags.stage = '{stage}'", max_results=100)


def reference_model(finished_project: Path, stage: str, root: Path) -> dict:
    """The stage's model from an uninterrupted run with the LONGER settings."""
    project = copy_finished(finished_project, root / "reference")
    set_params(project, **LONGER[stage])
    dvc(project, "repro", "--single-item", stage)
    return folder_digest(project / "models" / stage)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["reward", "rlhf"])
def test_kill_9_mid_run_then_a_rerun_restarts_cleanly(stage, finished_project, tmp_path):
    reference = reference_model(finished_project, stage, tmp_path)
    project = copy_finished(finished_project, tmp_path / "project")
    set_params(project, **LONGER[stage])
    lock_before, cache_before = (project / "dvc.lock").read_text(), cache_objects(project)

    killed = kill_mid_run(project, stage)
    assert killed.returncode != 0 and "Traceback" not in killed.stderr, killed.stderr
    assert not (project / "metrics" / f"{stage}.json").exists()
    assert_dvc_took_nothing(project, stage, lock_before, cache_before)

    dvc(project, "repro", "--single-item", stage)
    assert folder_digest(project / "models" / stage) == reference
    assert not list(project.glob(f"models/.{stage}.*"))  # the killed run's temp folder went with the rerun
    assert "up to date" in dvc(project, "status", stage).stdout
    statuses = sorted(r.info.status for r in runs_of_stage(project, stage))
    assert statuses.count("KILLED") == 1 and statuses.count("FINISHED") == 2, statuses  # the fixture's, the rerun


@pytest.mark.slow
def test_a_crash_between_outputs_and_metrics_leaves_nothing_dvc_would_cache(finished_project, tmp_path):
    project = copy_finished(finished_project, tmp_path / "project")
    set_params(project, reward={"seed": 7})
    lock_before, cache_before = (project / "dvc.lock").read_text(), cache_objects(project)

    crashed = dvc(project, "repro", "--single-item", "reward", check=False,
                  env_vars={"PYTHONPATH": str(FAULT_INJECTION), "TINYGPT_KILL_BEFORE": "metrics/reward.json"})
    assert crashed.returncode != 0
    assert (project / "models" / "reward" / "model.safetensors").exists()  # written: the crash came after it
    assert not (project / "metrics" / "reward.json").exists()
    assert_dvc_took_nothing(project, "reward", lock_before, cache_before)
    refused = dvc(project, "commit", "--force", "reward", check=False)  # nor can it be committed by hand
    assert refused.returncode != 0 and "metrics/reward.json" in refused.stderr, refused.stderr
    assert cache_objects(project) == cache_before

    dvc(project, "repro", "--single-item", "reward")
    assert json.loads((project / "metrics" / "reward.json").read_text())["mlflow_run_id"]
    assert "up to date" in dvc(project, "status", "reward").stdout
