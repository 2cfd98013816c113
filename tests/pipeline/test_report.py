import base64

import pytest

from tinygpt.core import io
from tinygpt.pipeline import paths, report, tracking
from tinygpt.pipeline.params import TrackingParams

PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def workspace(tmp_path, monkeypatch, mlflow_uri):
    """A working directory holding every stage's metrics file, like after `dvc repro`."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("train:\n  learning_rate: 0.001\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    for i, stage in enumerate(report.STAGES):
        io.write_json(paths.metrics_file(stage), {"mlflow_run_id": f"run{i:02d}", "score": float(i)})
    io.write_json(paths.metrics_file("evaluate"), {"mlflow_run_id": "run-eval", "val": {"loss": 4.5},
                                                   "calibration": {"ece": 0.02}})
    io.write_bytes(paths.plots_dir("pretrain") / "loss.png", PNG_1PX)
    io.write_text(paths.REPORTS / "evaluate" / "samples.md", "| prompt | sample |\n|---|---|\n| ROMEO: | hi |\n")
    return tmp_path


def state(params=None):
    return report.PipelineState(params or {"train.learning_rate": 0.001}, report.read_stage_metrics())


def test_missing_stage_metrics_names_the_stage(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"metrics/download.json.*dvc repro download"):
        report.read_stage_metrics()


def test_headlines_and_links(workspace):
    s = state()
    headlines = report.headline_metrics(s.stage_metrics)
    assert headlines["evaluate/val_loss"] == 4.5 and headlines["evaluate/ece"] == 0.02
    assert "pretrain/val_loss" not in headlines  # absent from its metrics: skipped, not invented
    tags = report.pipeline_tags(s)
    assert tags["stage_run.evaluate"] == "run-eval" and tags["stage_run.download"] == "run00"
    assert report.all_stage_metrics(s.stage_metrics)["rlhf/score"] == float(report.STAGES.index("rlhf"))


def test_fingerprint_follows_params_and_metrics(workspace):
    assert state().fingerprint() == state().fingerprint()
    assert state({"train.learning_rate": 0.002}).fingerprint() != state().fingerprint()
    io.write_json(paths.metrics_file("pretrain"), {"mlflow_run_id": "other-run"})
    assert state().fingerprint() != report.PipelineState({"train.learning_rate": 0.001}, {}).fingerprint()


def test_summary_and_dashboard(workspace):
    markdown_text, _ = report.write_outputs(state(), "pipe123")
    summary = paths.SUMMARY_MD.read_text()
    assert "pipe123" in summary and "| `evaluate/val_loss` | 4.5 |" in summary
    assert "![loss](../plots/pretrain/loss.png)" in summary
    assert "| ROMEO: | hi |" in summary
    page = paths.DASHBOARD_HTML.read_text()
    assert "data:image/png;base64," + base64.b64encode(PNG_1PX).decode() in page
    assert "<td>ROMEO:</td>" in page and "<table>" in page


def test_one_pipeline_run_per_state(workspace, mlflow_uri):
    from mlflow.tracking import MlflowClient

    first = report.publish(state(), TrackingParams("exp"))
    again = report.publish(state(), TrackingParams("exp"))
    assert first["new_run"] and not again["new_run"]
    assert again["pipeline_run_id"] == first["pipeline_run_id"]
    changed = report.publish(state({"train.learning_rate": 0.01}), TrackingParams("exp"))
    assert changed["new_run"] and changed["pipeline_run_id"] != first["pipeline_run_id"]

    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("exp-pipeline").experiment_id])
    assert len(runs) == 2
    run = client.get_run(first["pipeline_run_id"])
    assert run.data.tags["stage_run.evaluate"] == "run-eval"
    assert run.data.tags["kind"] == "pipeline"
    assert run.data.metrics["evaluate/val_loss"] == 4.5
    assert run.data.metrics["evaluate/val.loss"] == 4.5
    assert run.data.params["train.learning_rate"] == "0.001"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.md", "dashboard.html", "params.yaml", "dvc.lock"} <= artifacts


def test_the_pipeline_run_links_its_stage_runs(workspace, mlflow_uri):
    from mlflow.tracking import MlflowClient

    with tracking.stage_run("evaluate", {}, TrackingParams("exp")) as stage:
        pass
    s = state()
    s.stage_metrics["evaluate"]["mlflow_run_id"] = stage.run_id
    published = report.publish(s, TrackingParams("exp"))
    client = MlflowClient(mlflow_uri)
    note = client.get_run(published["pipeline_run_id"]).data.tags["mlflow.note.content"]
    experiment = client.get_experiment_by_name("exp").experiment_id
    assert f"- [evaluate](#/experiments/{experiment}/runs/{stage.run_id})" in note
    assert "- download: `run00` (not in this store)" in note
