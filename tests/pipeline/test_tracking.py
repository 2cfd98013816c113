import os
import sqlite3
from pathlib import Path

import pytest

from tinygpt.pipeline import tracking
from tinygpt.pipeline.params import TrackingParams


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


def test_a_dataset_another_run_creates_at_the_same_moment_is_logged_on_retry(mlflow_uri, tmp_path, monkeypatch):
    # Seen in the load test on a server: two rlhf stages logged the same new dataset at once and the
    # second insert failed the stage. The store's answer is replayed here on the first attempt.
    from mlflow.exceptions import MlflowException

    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.bin").write_bytes(b"abc")
    with tracking.stage_run("demo", {"a": 1}, TrackingParams("race")) as run:
        real = run.mlflow_client.log_inputs
        attempts = []

        def racing(*args, **kwargs):
            attempts.append(1)
            if len(attempts) == 1:
                raise MlflowException("BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed: "
                                      "datasets.experiment_id, datasets.name, datasets.digest")
            return real(*args, **kwargs)

        monkeypatch.setattr(run.mlflow_client, "log_inputs", racing)
        run.log_dataset(tmp_path / "prompts.bin", "training")
        run_id = run.run_id
        run.finish({"loss": 1.0})
    from mlflow.tracking import MlflowClient

    inputs = MlflowClient(mlflow_uri).get_run(run_id).inputs.dataset_inputs
    assert len(attempts) == 2 and [d.dataset.name for d in inputs] == ["prompts.bin"]


def test_stage_run_logs_params_metrics_tags(mlflow_uri, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    with tracking.stage_run("demo", {"split.val_fraction": 0.1}, TrackingParams("exp-test")) as run:
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
    tags = logged.data.tags
    assert tags["mlflow.source.name"] == "stages/demo.py" and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.user"] and {"mlflow.source.git.commit", "mlflow.source.git.dirty"} <= set(tags)
    experiment = client.get_experiment(logged.info.experiment_id)
    assert experiment.name == "exp-test"
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs
    assert experiment.artifact_location == (Path(tmp_path).resolve() / "mlartifacts").as_uri()


def test_failed_stage_marks_run_failed(mlflow_uri, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError):
        with tracking.stage_run("boom", {}, TrackingParams("exp-test")) as run:
            run_id = run.run_id
            raise RuntimeError("stage failed")
    assert MlflowClient(mlflow_uri).get_run(run_id).info.status == "FAILED"


def test_an_experiment_made_before_the_kind_tag_gets_it(mlflow_uri, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    client = MlflowClient(mlflow_uri)
    old = client.create_experiment("old-exp")
    with tracking.stage_run("demo", {}, TrackingParams("old-exp")):
        pass
    assert client.get_experiment(old).tags["mlflow.experimentKind"] == "custom_model_development"


def test_source_tags_name_the_commit_and_branch(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "work"], check=True)
    (tmp_path / "f.txt").write_text("x")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    tags = tracking.source_tags("pretrain")
    assert tags["mlflow.source.git.commit"] == head and tags["mlflow.source.git.branch"] == "work"
    assert tags["mlflow.source.git.dirty"] == "false" and "mlflow.source.git.repoURL" not in tags
    (tmp_path / "f.txt").write_text("changed")
    assert tracking.source_tags("pretrain")["mlflow.source.git.dirty"] == "true"


def test_datasets_are_logged_as_inputs_with_their_md5(mlflow_uri, tmp_path, monkeypatch):
    import hashlib

    from mlflow.tracking import MlflowClient

    from tinygpt.pipeline import paths

    monkeypatch.chdir(tmp_path)
    paths.TRAIN_BIN.parent.mkdir(parents=True)
    paths.TRAIN_BIN.write_bytes(b"\x01\x00\x02\x00")
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "a.arrow").write_bytes(b"abc")
    with tracking.stage_run("demo", {}, TrackingParams("exp-test")) as run:
        run.log_dataset(paths.TRAIN_BIN, "training")
        run.log_dataset(Path("pairs"), "evaluation")
    inputs = MlflowClient(mlflow_uri).get_run(run.run_id).inputs.dataset_inputs
    found = {i.dataset.name: (i.dataset.digest, {t.key: t.value for t in i.tags}) for i in inputs}
    assert found["train split"] == (hashlib.md5(b"\x01\x00\x02\x00").hexdigest(),
                                    {"mlflow.data.context": "training"})
    assert found["pairs"][1] == {"mlflow.data.context": "evaluation"}
    (tmp_path / "pairs" / "a.arrow").write_bytes(b"abd")
    assert tracking.md5_digest(Path("pairs")) != found["pairs"][0]


def test_system_metrics_are_sampled_on_request(mlflow_uri, tmp_path, monkeypatch):
    import time

    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    with tracking.stage_run("trained", {}, TrackingParams("exp-test"), system_metrics=True) as run:
        time.sleep(3.5)
    with tracking.stage_run("quick", {}, TrackingParams("exp-test")) as quiet:
        time.sleep(1.5)
    client = MlflowClient(mlflow_uri)
    sampled = client.get_run(run.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in sampled and "system/system_memory_usage_megabytes" in sampled
    assert not any(name.startswith("system/") for name in client.get_run(quiet.run_id).data.metrics)


def test_a_run_whose_process_died_is_marked_killed_by_the_next_run_of_its_stage(mlflow_uri, tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys

    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment("exp-test")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    orphan, alive, other_stage = (
        client.create_run(experiment, tags={"stage": stage, tracking.PID_TAG: pid, tracking.HOST_TAG: host}).info.run_id
        for stage, pid in (("demo", dead.stdout.strip()), ("demo", str(os.getppid())), ("other", dead.stdout.strip()))
    )
    with tracking.stage_run("demo", {}, TrackingParams("exp-test")) as run:
        pass
    status = {r: client.get_run(r).info.status for r in (orphan, alive, other_stage)}
    assert status == {orphan: "KILLED", alive: "RUNNING", other_stage: "RUNNING"}
    assert client.get_run(run.run_id).data.tags[tracking.PID_TAG] == str(os.getpid())
