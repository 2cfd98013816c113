"""The compare stage end to end in a temp project: a tiny random GPT-2 saved to a directory stands in
for compare.pretrained; offline, the pretrained model is recorded as unavailable and the stage still
succeeds; compare.require_pretrained turns that into an error."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import GPT2Config, GPT2LMHeadModel

from stages import compare as compare_stage
from tinygpt.core import io
from tinygpt.data import tokenizer
from tinygpt.data.tokens import read_tokens, write_tokens
from tinygpt.eval import compare
from tinygpt.model import weights
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
)


def write_params(pretrained: str, **compare_overrides) -> None:
    sections = {
        "tracking": {"experiment": "compare-test"},
        "compute": {"device": "cpu", "precision": "fp32"},
        "eval": {
            "stride": 16, "batch_size": 8, "calibration_bins": 10,
            "prompts": ["ROMEO:"], "inspect_top_k": 3, "sample_max_new_tokens": 4,
        },
        "compare": {
            "pretrained": pretrained, "fidelity_tokens": 400,
            "speed_batch_size": 2,
            **compare_overrides,
        },
    }
    io.write_text(params.PARAMS_FILE, yaml.safe_dump(sections))


@pytest.fixture
def project(tmp_path, monkeypatch, mlflow_uri):
    """A temp project: val split, split.json, our (random) model in models/pretrain, a tiny GPT-2 dir."""
    monkeypatch.chdir(tmp_path)
    val = np.array(tokenizer.encode(TEXT * 12), dtype=np.int64)
    write_tokens(paths.VAL_BIN, val)
    io.write_json(paths.SPLIT_META, {"val": {"tokens": len(val), "bytes": len((TEXT * 12).encode())}})
    torch.manual_seed(0)
    ours = GPT(GPTConfig(vocab_size=tokenizer.N_VOCAB, block_size=32, n_layer=1, n_head=2, n_embd=16))
    weights.save_model(ours, paths.PRETRAIN_DIR)
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=tokenizer.N_VOCAB, n_positions=64, n_embd=16, n_layer=1, n_head=2))
    gpt2.save_pretrained(str(tmp_path / "gpt2-tiny"))
    return tmp_path


def run_metrics() -> dict:
    return json.loads(paths.metrics_file("compare").read_text())


def mlflow_run(run_id: str):
    return tracking.client().get_run(run_id)


def test_stage_with_a_local_pretrained_dir(project):
    write_params(str(project / "gpt2-tiny"))
    compare_stage.main()
    m = run_metrics()
    assert m["pretrained_status"] == "available"

    fid = m["fidelity"]  # (a): our weights through transformers' GPT-2, read back from models/hf
    assert fid["tokens"] == (400 - 1) // 32 * 32 and fid["context"] == 32
    assert fid["max_abs_logit_diff"] < 1e-5
    assert abs(fid["ours_loss"] - fid["hf_loss"]) < 1e-6 and fid["top1_agreement"] == 1.0
    assert (paths.HF_DIR / "model.safetensors").exists() and (paths.HF_DIR / "tokenizer.json").exists()

    # (b): both models scored on the same windows of the same tokens; a random GPT-2 is near uniform.
    assert m["ours"]["windows"] == m["gpt2"]["windows"] == {"context": 32, "stride": 16}
    assert m["ours"]["val"]["tokens"] == m["gpt2"]["val"]["tokens"] == len(read_tokens(paths.VAL_BIN)) - 1
    assert abs(m["gpt2"]["val"]["loss"] - math.log(tokenizer.N_VOCAB)) < 0.05
    assert m["gpt2"]["parameters"] == GPT2LMHeadModel.from_pretrained(str(project / "gpt2-tiny")).num_parameters()

    # (c): both implementations timed for both models.
    for label in ("ours", "gpt2"):
        speed = m[label]["speed"]
        assert speed["tinygpt"]["forward_tokens_per_s"] > 0 and speed["transformers"]["train_step_tokens_per_s"] > 0
        assert speed["batch_size"] == 2 and speed["seq_len"] == 32

    table = pd.read_csv(paths.COMPARE_TABLE_CSV)
    assert list(table["parameters"]) == [m["ours"]["parameters"], m["gpt2"]["parameters"]]
    assert table["val loss"].tolist() == pytest.approx([m["ours"]["val"]["loss"], m["gpt2"]["val"]["loss"]])
    assert "| model" in paths.COMPARE_TABLE_MD.read_text()
    assert paths.RELIABILITY_OVERLAY_PNG.stat().st_size > 1000
    for label in ("ours", "gpt2"):
        assert (paths.COMPARE_REPORTS / label / "samples.md").exists()
        assert (paths.COMPARE_PLOTS / label / "reliability.csv").exists()

    run = mlflow_run(m["mlflow_run_id"])
    assert run.data.tags["pretrained_status"] == "available"
    assert run.data.metrics["gpt2.val.loss"] == pytest.approx(m["gpt2"]["val"]["loss"])
    assert run.data.metrics["ours.val.loss"] == pytest.approx(m["ours"]["val"]["loss"])
    assert run.data.metrics["fidelity.max_abs_logit_diff"] == pytest.approx(fid["max_abs_logit_diff"])
    assert run.data.params["compare.pretrained"] == str(project / "gpt2-tiny")
    artifacts = {a.path for a in tracking.client().list_artifacts(run.info.run_id, "reports")}
    assert "reports/table.md" in artifacts and "reports/gpt2" in artifacts


def test_stage_offline_records_unavailable_and_succeeds(project, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # A gpt2 folder from an earlier run must not survive a run without the pretrained model.
    (paths.COMPARE_REPORTS / "gpt2").mkdir(parents=True)
    write_params("tinygpt-tests/no-such-model")
    compare_stage.main()
    m = run_metrics()
    assert m["pretrained_status"] == "unavailable"
    assert "HF_HUB_OFFLINE" in m["pretrained_reason"]
    assert "gpt2" not in m and m["fidelity"]["max_abs_logit_diff"] < 1e-5  # (a) and (c) still ran
    assert m["ours"]["speed"]["ratio"]["forward_ours_over_hf"] > 0
    assert len(pd.read_csv(paths.COMPARE_TABLE_CSV)) == 1
    assert "unavailable" in paths.COMPARE_TABLE_MD.read_text()
    assert not (paths.COMPARE_REPORTS / "gpt2").exists()
    err = capsys.readouterr().err
    assert "warning: pretrained model 'tinygpt-tests/no-such-model' is unavailable" in err
    assert "compare.pretrained=DIR" in err  # says how to provide it
    run = mlflow_run(m["mlflow_run_id"])
    assert run.data.tags["pretrained_status"] == "unavailable"
    assert "HF_HUB_OFFLINE" in run.data.tags["pretrained_reason"]


def test_require_pretrained_makes_it_an_error(project, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_params("tinygpt-tests/no-such-model", require_pretrained=True)
    with pytest.raises(SystemExit) as exit_info:
        run_stage(compare_stage.main)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: pretrained model 'tinygpt-tests/no-such-model' is unavailable")
    assert "compare.require_pretrained is true" in err
    assert not paths.metrics_file("compare").exists() and not paths.HF_DIR.exists()  # failed before any work


def test_fidelity_detects_a_different_model():
    """The fidelity numbers can fail: a perturbed export shows a logit difference and a loss gap."""
    from tinygpt.model.hf import hf_from_gpt

    torch.manual_seed(1)
    ours = GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16)).eval()
    other = hf_from_gpt(ours)
    with torch.no_grad():
        other.transformer.h[0].mlp.c_fc.bias.add_(0.5)
    tokens = np.random.default_rng(0).integers(0, 300, size=100)
    same = compare.fidelity(ours, hf_from_gpt(ours), tokens, 4, torch.device("cpu"))
    diff = compare.fidelity(ours, other, tokens, 4, torch.device("cpu"))
    assert same["max_abs_logit_diff"] < 1e-5 and same["tokens"] == 96
    assert diff["max_abs_logit_diff"] > 1e-3 and diff["abs_loss_diff"] > 1e-6
