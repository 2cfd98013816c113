"""End to end: the download, tokenize and split stages under `dvc repro` in a copy of the project,
fetching a small corpus from a loopback HTTP server, logging to the copy's own MLflow store."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml
from support import copy_project, dvc, set_params

CORPUS = ("ROMEO:\nBut, soft! what light through yonder window breaks?\n" * 40 + "JULIET:\nAy me!\n" * 30).encode()


@pytest.mark.slow
def test_data_stages_end_to_end(repo_root, tmp_path, http_server):
    url = http_server.serve("/input.txt", CORPUS)
    project = copy_project(repo_root, tmp_path / "project")
    set_params(project, data={"url": url, "sha256": hashlib.sha256(CORPUS).hexdigest(), "mirrors": []})

    dvc(project, "repro", "split")

    assert (project / "data/raw/input.txt").read_bytes() == CORPUS
    meta = json.loads((project / "data/tokens/meta.json").read_text())
    split = json.loads((project / "data/split/split.json").read_text())
    assert meta["characters"] == len(CORPUS.decode()) and meta["bytes"] == len(CORPUS)
    assert split["train"]["tokens"] + split["val"]["tokens"] == meta["tokens"]
    assert split["train"]["characters"] + split["val"]["characters"] == meta["characters"]
    assert (project / "data/split/train.bin").stat().st_size == 2 * split["train"]["tokens"]
    assert (project / "data/split/val.bin").stat().st_size == 2 * split["val"]["tokens"]
    assert abs(split["val"]["characters"] / meta["characters"] - 0.1) < 0.01

    again = dvc(project, "repro", "split")
    assert "Running stage" not in again.stdout
    status = dvc(project, "status", "download", "tokenize", "split")
    assert "up to date" in status.stdout

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tinygpt")
    runs = {r.data.tags["stage"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["check_params", "download", "split", "tokenize"]  # one run per stage, none twice
    assert runs["download"].data.params["data.url"] == url
    assert runs["download"].data.metrics["bytes"] == len(CORPUS)
    assert runs["tokenize"].data.metrics["tokens"] == meta["tokens"]
    assert runs["split"].data.params == {"split.val_fraction": "0.1", "split.seed": "1337"}
    assert runs["split"].data.metrics["val.tokens"] == split["val"]["tokens"]
    for stage, run in runs.items():
        metrics = json.loads((project / f"metrics/{stage}.json").read_text())
        assert metrics["mlflow_run_id"] == run.info.run_id
        assert run.info.status == "FINISHED"
        assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    # what each stage read, as MLflow dataset inputs; a file's digest is the md5 dvc.lock records for it
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    corpus_md5 = next(d["md5"] for d in lock["tokenize"]["deps"] if d["path"] == "data/raw/input.txt")
    tokenize_inputs = {i.dataset.name: i.dataset.digest for i in runs["tokenize"].inputs.dataset_inputs}
    assert tokenize_inputs == {"corpus": corpus_md5}
    assert [i.dataset.name for i in runs["split"].inputs.dataset_inputs] == ["corpus tokens"]

    # Changing a key only the split reads reruns the split alone.
    set_params(project, split={"val_fraction": 0.2})
    rerun = dvc(project, "repro", "split")
    assert "Running stage 'split'" in rerun.stdout
    assert "Running stage 'download'" not in rerun.stdout and "Running stage 'tokenize'" not in rerun.stdout


@pytest.mark.slow
def test_a_folder_of_documents_end_to_end(repo_root, tmp_path):
    """data.source files: one document per file, an end-of-text after each, whole documents to val; a
    changed file in data/corpus reruns the data stages."""
    project = copy_project(repo_root, tmp_path / "project")
    books = project / "data/corpus/books"
    books.mkdir()
    texts = [f"Book {i}.\n" + f"Line {i} of a story that goes on.\n" * (5 + i) for i in range(10)]
    for i, text in enumerate(texts):
        (books / f"{i:02d}.txt").write_text(text)
    set_params(project, data={"source": "files", "files": "data/corpus/books"}, split={"val_fraction": 0.2})

    dvc(project, "repro", "split")

    manifest = json.loads((project / "data/raw/manifest.json").read_text())
    assert manifest["documents"] == 10 and len(manifest["files"]) == 10 and manifest["kind"] == "files"
    meta = json.loads((project / "data/tokens/meta.json").read_text())
    split = json.loads((project / "data/split/split.json").read_text())
    assert meta["documents"] == 10 and meta["dtype"] == "uint16"
    assert split["documents"] == 10 and 1 <= split["val_documents"] <= 3
    assert split["train"]["tokens"] + split["val"]["tokens"] == meta["tokens"]
    assert split["train"]["characters"] + split["val"]["characters"] == sum(map(len, texts))
    val = np.fromfile(project / "data/split/val.bin", dtype=np.uint16)
    assert (val == 50256).sum() == split["val_documents"] and val[-1] == 50256

    (books / "03.txt").write_text("A rewritten book.\n" * 9)
    rerun = dvc(project, "repro", "split")
    assert "Running stage 'download'" in rerun.stdout and "Running stage 'split'" in rerun.stdout
    assert json.loads((project / "data/raw/manifest.json").read_text())["files"][3]["bytes"] == 18 * 9


@pytest.mark.slow
def test_download_stage_fails_cleanly(repo_root, tmp_path, http_server):
    project = copy_project(repo_root, tmp_path / "project")
    set_params(project, data={"url": http_server.url("/absent.txt"), "mirrors": []})
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'm.db'}")
    out = subprocess.run([sys.executable, "-m", "stages.download"], cwd=project, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert "error: could not fetch the corpus" in out.stderr
    assert "HTTP 404" in out.stderr and "Traceback" not in out.stderr
    assert not (project / "data/raw/input.txt").exists()
    assert list((project / "data/raw").iterdir()) == []
