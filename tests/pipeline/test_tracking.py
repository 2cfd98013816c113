import sqlite3
from pathlib import Path

import pytest

from tinygpt.pipeline import tracking


def test_repo_root_from_a_dvc_temp_experiment(tmp_path):
    inside = tmp_path / "project" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    inside.mkdir(parents=True)
    assert tracking.repo_root(inside) == tmp_path / "project"
    assert tracking.repo_root(tmp_path) == tmp_path


def test_default_uri_is_absolute_sqlite_at_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert tracking.tracking_uri() == "sqlite:////elsewhere/x.db"


def test_flatten_metrics():
    flat = tracking.flatten_metrics({"val": {"loss": 4.5, "n": 3}, "ok": True, "name": "x", "nan": float("nan")})
    assert flat == {"val.loss": 4.5, "val.n": 3.0, "ok": 1.0}


def test_retry_on_locked_database():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "done"

    assert tracking.with_retry(flaky) == "done" and len(calls) == 3
    with pytest.raises(ValueError):
        tracking.with_retry(lambda: (_ for _ in ()).throw(ValueError("other")))


def test_stage_run_logs_params_metrics_tags(mlflow_uri, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    with tracking.stage_run("demo", {"split.val_fraction": 0.1}, "exp-test") as run:
        for step in range(3):
            run.log_step(step, {"loss": 3.0 - step})
        metrics = run.finish({"val": {"loss": 1.5}}, artifacts=[])
    client = MlflowClient(mlflow_uri)
    logged = client.get_run(metrics["mlflow_run_id"])
    assert logged.info.status == "FINISHED"
    assert logged.data.params == {"split.val_fraction": "0.1"}
    assert logged.data.metrics["val.loss"] == 1.5
    assert [m.value for m in client.get_metric_history(logged.info.run_id, "loss")] == [3.0, 2.0, 1.0]
    assert logged.data.tags["stage"] == "demo"
    assert {"git.commit", "git.dirty"} <= set(logged.data.tags)
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.name == "exp-test"
    assert experiment.artifact_location == (Path(tmp_path).resolve() / "mlartifacts").as_uri()


def test_failed_stage_marks_run_failed(mlflow_uri, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError):
        with tracking.stage_run("boom", {}, "exp-test") as run:
            run_id = run.run_id
            raise RuntimeError("stage failed")
    assert MlflowClient(mlflow_uri).get_run(run_id).info.status == "FAILED"
