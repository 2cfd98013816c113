"""End to end on a tiny configuration: the whole pipeline under `dvc exp run`, the pipeline runs it
leaves in MLflow, the run-cache, `--temp` experiments, and DVC's plots and metrics."""
from __future__ import annotations

import json
import re

import pytest
from support import copy_finished, dvc

from tinygpt.pipeline import report
from tinygpt.pipeline.sections import load_named


def store(project):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{project / 'mlflow.db'}")


def runs_of(client, experiment: str, **tags):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    found = client.search_runs([exp.experiment_id], max_results=1000)
    return [r for r in found if all(r.data.tags.get(k) == v for k, v in tags.items())]


def read_json(project, path):
    return json.loads((project / path).read_text())


def stage_run_ids(project):
    return {s: read_json(project, f"metrics/{s}.json")["mlflow_run_id"] for s in report.STAGES}


@pytest.mark.slow
def test_experiments_make_one_pipeline_run_each(finished_project, tmp_path):
    # The finished tiny pipeline is exp-a's starting point: `dvc exp run` on it reruns nothing, and its
    # store holds the one pipeline run its `dvc repro` logged.
    project = copy_finished(finished_project, tmp_path / "project")
    client = store(project)
    default_lr = str(load_named("dpo", path=project / "params.yaml").dpo.learning_rate)

    out = dvc(project, "exp", "run", "-n", "exp-a")
    assert "Running stage" not in out.stdout, out.stdout
    first = read_json(project, "metrics/report.json")
    first_links = stage_run_ids(project)

    # A DPO setting: dpo, frontier and report rerun (the cheapest stages that log a changed metric; in
    # the tiny pipeline PPO's held-out evaluation keeps the reference, so a PPO setting changes none).
    out = dvc(project, "exp", "run", "-n", "exp-b", "-S", "dpo.learning_rate=0.001")
    assert "Running stage 'dpo'" in out.stdout and "Running stage 'pretrain'" not in out.stdout
    second = read_json(project, "metrics/report.json")
    second_links = stage_run_ids(project)

    pipelines = runs_of(client, "tinygpt-pipeline")
    assert {r.info.run_id for r in pipelines} == {first["pipeline_run_id"], second["pipeline_run_id"]}
    run_a, run_b = (client.get_run(x["pipeline_run_id"]) for x in (first, second))
    assert run_a.data.params["dpo.learning_rate"] == default_lr and run_b.data.params["dpo.learning_rate"] == "0.001"
    assert run_a.data.metrics["dpo/kl"] != run_b.data.metrics["dpo/kl"]
    for run, links in ((run_a, first_links), (run_b, second_links)):
        assert {k[len("stage_run."):]: v for k, v in run.data.tags.items() if k.startswith("stage_run.")} == links
    # The stages upstream of dpo did not rerun for exp-b: both pipeline runs link the same runs of them.
    assert first_links["pretrain"] == second_links["pretrain"] and first_links["dpo"] != second_links["dpo"]
    dpo_runs = len(runs_of(client, "tinygpt", stage="dpo"))

    # Back to the first learning rate: every stage comes back from DVC's run-cache, nothing runs or logs,
    # and the restored metrics still name the stage runs and the pipeline run of exp-a.
    # (check_params may rerun: `-S` rewrites params.yaml, e.g. 2.0e-5 as 2e-05, so the file's bytes differ
    # from exp-a's; its output does not, so nothing downstream of it runs.)
    out = dvc(project, "exp", "run", "-n", "exp-c", "-S", f"dpo.learning_rate={default_lr}")
    assert set(re.findall(r"Running stage '(\w+)'", out.stdout)) <= {"check_params"}, out.stdout
    assert read_json(project, "metrics/report.json")["pipeline_run_id"] == first["pipeline_run_id"]
    assert stage_run_ids(project) == first_links
    assert len(runs_of(client, "tinygpt", stage="dpo")) == dpo_runs
    assert len(runs_of(client, "tinygpt-pipeline")) == 2

    summary = (project / "reports/summary.md").read_text()
    assert first["pipeline_run_id"] in summary and "evaluate/val_loss" in summary

    plots = dvc(project, "plots", "show", "-o", "plots-html")
    assert (project / "plots-html" / "index.html").stat().st_size > 1000, plots.stdout
    metrics = json.loads(dvc(project, "metrics", "show", "--json").stdout)
    shown = json.dumps(metrics)
    assert first["pipeline_run_id"] in shown and "val_loss" in shown
    listed = dvc(project, "exp", "list").stdout
    assert "exp-a" in listed and "exp-b" in listed


@pytest.mark.slow
def test_a_temp_experiment_logs_to_the_project_store(tiny_project):
    # Queued experiments on two workers writing to one store at once: test_tracking_server.py's load test.
    project = tiny_project
    client = store(project)
    dvc(project, "repro", "split")  # data stages in the workspace first: the store now exists

    # --temp runs in .dvc/tmp/exps/...; its runs must land in the project's store.
    dvc(project, "exp", "run", "--temp", "-S", "split.val_fraction=0.2", "split")
    split_runs = runs_of(client, "tinygpt", stage="split")
    assert sorted(r.data.params["split.val_fraction"] for r in split_runs) == ["0.1", "0.2"]
    assert all(r.info.status == "FINISHED" for r in split_runs)
