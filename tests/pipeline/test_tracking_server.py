"""A real `mlflow server` on a loopback port: stages log to it, fail within seconds naming the URI when it
is down (or warn and run untracked with `tracking.required: false`), and two queued experiments run at
once by two DVC workers both land in MLflow, on the SQLite store and on the server, with no "database is
locked"."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import copy_finished, dvc, run_queued, set_params

from tinygpt.pipeline import tracking
from tinygpt.pipeline.params import TrackingParams

MLFLOW = str(Path(sys.executable).parent / "mlflow")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    uri: str
    process: subprocess.Popen

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the server and its worker processes
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with its own SQLite store; stopped (with its workers) after the test."""
    folder = tmp_path / "server"
    folder.mkdir()
    port = free_port()
    log = (folder / "server.log").open("w")
    process = subprocess.Popen(
        [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
         "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
         "--default-artifact-root", (folder / "artifacts").as_uri()],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", process)
    deadline = time.time() + 120
    while not healthy(server.uri):
        assert process.poll() is None and time.time() < deadline, (folder / "server.log").read_text()
        time.sleep(0.5)
    yield server
    server.stop()
    log.close()


def metrics_of(project: Path, stage: str) -> dict:
    return json.loads((project / "metrics" / f"{stage}.json").read_text())


@pytest.mark.slow
def test_stages_log_to_a_server_and_stop_in_seconds_when_it_is_down(finished_project, tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    project = copy_finished(finished_project, tmp_path / "project")
    on_server = {"MLFLOW_TRACKING_URI": mlflow_server.uri}
    dvc(project, "repro", "--force", "--single-item", "evaluate", env_vars=on_server)
    run = MlflowClient(mlflow_server.uri).get_run(metrics_of(project, "evaluate")["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["stage"] == "evaluate"
    assert "val.loss" in run.data.metrics and run.data.params["eval.stride"] == "16"
    # tracking.required is no DVC dependency: switching it leaves every stage up to date (check_params
    # aside, whose dependency is the whole file; its output does not change).
    stale = set(json.loads(dvc(project, "status", "--json").stdout))  # report: evaluate has a new run id
    set_params(project, tracking={"required": False})
    assert set(json.loads(dvc(project, "status", "--json").stdout)) <= stale | {"check_params"}
    subprocess.run(["git", "checkout", "-q", "params.yaml"], cwd=project, check=True)

    mlflow_server.stop()
    started = time.perf_counter()
    down = dvc(project, "repro", "--force", "--single-item", "evaluate", env_vars=on_server, check=False)
    seconds = time.perf_counter() - started
    assert down.returncode != 0 and "Traceback" not in down.stderr, down.stderr
    error = next(line for line in down.stderr.splitlines() if line.startswith("error: "))
    assert mlflow_server.uri in error and "unreachable" in error and "tracking.required: false" in error
    assert seconds < 60, f"a dead server took {seconds:.0f} s to be reported"  # imports included; MLflow's own retries take minutes
    assert not (project / "metrics" / "evaluate.json").exists()

    # Not required: a warning, the stage runs, and its metrics say it has no run.
    set_params(project, tracking={"required": False})
    untracked = dvc(project, "repro", "--force", "--single-item", "evaluate", env_vars=on_server)
    assert f"warning: MLFLOW_TRACKING_URI={mlflow_server.uri}" in untracked.stderr
    assert metrics_of(project, "evaluate")["mlflow_run_id"] is None


def test_a_server_that_never_answers_fails_within_the_timeout(monkeypatch, capsys):
    with socket.socket() as silent:  # accepts connections (the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        started = time.perf_counter()
        with pytest.raises(tracking.TrackingUnavailable, match=re.escape(uri)):
            tracking.open_client(required=True)
        assert time.perf_counter() - started < tracking.REACH_TIMEOUT_S + 5
        assert tracking.open_client(required=False) is None
    assert "tracking.required is false" in capsys.readouterr().err


def test_an_untracked_stage_run_logs_nothing_and_says_so(monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    with tracking.stage_run("demo", {"a": 1}, TrackingParams("exp", required=False)) as run:
        run.log_step(1, {"loss": 2.0})
        run.log_dataset(Path("nowhere"), "training")
        metrics = run.finish({"loss": 1.5}, artifacts=["nowhere"])
    assert metrics.pop("time")["total_s"] > 0  # the time profile is in the metrics file all the same
    assert metrics == {"loss": 1.5, "mlflow_run_id": None}
    assert "runs without an MLflow run" in capsys.readouterr().err


# ---------------------------------------------------------------- load: two experiments at once


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_two_queued_experiments_at_once_all_log(store, finished_project, tmp_path, request):
    from mlflow.tracking import MlflowClient

    project = copy_finished(finished_project, tmp_path / "project")
    if store == "server":
        uri = request.getfixturevalue("mlflow_server").uri
        env_vars = {"MLFLOW_TRACKING_URI": uri}
    else:
        uri, env_vars = f"sqlite:///{project / 'mlflow.db'}", {}
    names = [f"load-{i}" for i in range(2)]
    # A new PPO seed: check_params, rlhf, frontier and report rerun, three stage runs and a pipeline run per
    # experiment, eight runs written by two workers at once. More experiments than workers would queue the
    # rest behind them: minutes more, the same two writers at a time (a new reward seed would rerun seven
    # stages: the same again).
    run_queued(project, {name: ["-S", f"rlhf.seed={100 + i}"] for i, name in enumerate(names)}, workers=2,
               env_vars=env_vars)

    client = MlflowClient(uri)
    stage_runs = client.search_runs([client.get_experiment_by_name("tinygpt").experiment_id], max_results=1000)
    pipeline_runs = client.search_runs([client.get_experiment_by_name("tinygpt-pipeline").experiment_id],
                                       max_results=1000)
    retries = 0
    for name in names:
        log = dvc(project, "queue", "logs", name, env_vars=env_vars).stdout
        assert "database is locked" not in log.lower() and "Traceback" not in log, log
        ran = set(re.findall(r"Running stage '(\w+)'", log))
        assert {"rlhf", "frontier", "report"} <= ran, log
        logged = [r for r in stage_runs if r.data.tags.get("dvc.exp_name") == name]
        assert sorted(r.data.tags["stage"] for r in logged) == sorted(ran - {"report"}), name
        assert all(r.info.status == "FINISHED" for r in logged)
        pipeline = [r for r in pipeline_runs if r.data.tags.get("dvc.exp_name") == name]
        assert len(pipeline) == 1 and pipeline[0].info.status == "FINISHED", name
        retries += sum(int(r.data.tags.get(tracking.RETRIES_TAG, 0)) for r in logged + pipeline)
    queued = [r for r in stage_runs + pipeline_runs if r.data.tags.get("dvc.exp_name") in names]
    print(f"load ({store}): {len(names)} experiments on 2 workers, {len(queued)} runs logged "
          f"({len(queued) - len(names)} stage runs, {len(names)} pipeline runs), {retries} store retries")
