"""evaluate_model's numbers and their relations, inspection and samples, the files it writes, params
errors, and the evaluate stage end to end in a temp project with a temp MLflow store."""
import copy
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from stages import evaluate as evaluate_stage
from tinygpt.core import io
from tinygpt.core.compute import ComputeParams
from tinygpt.core.errors import ParamsError
from tinygpt.data import tokenizer
from tinygpt.data.tokens import write_tokens
from tinygpt.eval import calibration, inspection
from tinygpt.eval.config import EvalParams
from tinygpt.eval.evaluate import evaluate_model, text_bytes, window_shape
from tinygpt.eval.likelihood import LogitHead, lm_head_logits, split_nll
from tinygpt.model import weights
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.shortlist import CompactVocabulary, ShortlistGPT
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs.evaluate import write_evaluation
from tinygpt.pipeline.sections import SECTIONS

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
    "ROMEO:\nIs the day so young?\n\nBENVOLIO:\nBut new struck nine.\n\n"
)
SMALL = dict(stride=16, batch_size=8, train_tokens=300, train_segments=3, calibration_bins=10,
             prompts=["To be or not to", "ROMEO:"], inspect_top_k=5, sample_max_new_tokens=6)
CPU_FP32 = ComputeParams(device="cpu", precision="fp32")


def tiny_gpt(seed=0, block_size=32, n_embd=16) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=tokenizer.N_VOCAB, block_size=block_size, n_layer=1, n_head=2, n_embd=n_embd))


def tokens_of(text: str) -> np.ndarray:
    return np.array(tokenizer.encode(text), dtype=np.uint16)


def copy_model(sharpness: float) -> GPT:
    """A GPT that predicts "the next token repeats this one", with tunable confidence.

    Without position embeddings and with every block's output projection zeroed, the final hidden state
    is LayerNorm(wte[x]); through the tied head the token's own logit is |LN(wte[x])| * |wte[x]|, far
    above any other at width 64. Scaling ln_f scales all logits: the same argmax, more confidence.
    """
    model = tiny_gpt(seed=1, n_embd=64)
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        for block in model.transformer.h:
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
        model.transformer.ln_f.weight.mul_(sharpness)
    return model


@pytest.fixture(scope="module")
def splits():
    """val: 100 random ids, each repeated 4 times (the copy model is right 3 times in 4); train: text."""
    ids = np.random.default_rng(0).choice(50000, size=100, replace=False)
    val = np.repeat(ids, 4).astype(np.uint16)
    train_text = TEXT * 9
    return val, text_bytes(val), tokens_of(train_text), len(train_text.encode())


@pytest.fixture(scope="module")
def overconfident(splits):
    """The copy model made so sharp that its confidence is ~1 while it is right 75% of the time."""
    val, val_bytes, train, train_bytes = splits
    return evaluate_model(copy_model(40.0), EvalParams(**SMALL), val, val_bytes, train, train_bytes, compute=CPU_FP32)


def test_metrics_relations(overconfident, splits):
    val_tokens, val_bytes, train_tokens, _ = splits
    m = overconfident.metrics
    assert m["val"]["tokens"] == len(val_tokens) - 1
    assert m["val"]["perplexity"] == pytest.approx(math.exp(m["val"]["loss"]))
    total = m["val"]["loss"] * m["val"]["tokens"]
    assert m["val"]["bits_per_byte"] == pytest.approx(total / (math.log(2) * val_bytes))
    assert overconfident.val.accuracy == m["val"]["accuracy"]
    # train: 3 runs of 100 tokens; their bytes counted from the tokens' text
    assert m["train"]["tokens"] == 3 * 99
    starts = np.linspace(0, len(train_tokens) - 100, 3).round().astype(int)
    sample_text = "".join(tokenizer.decode(train_tokens[s : s + 100].tolist()) for s in starts)
    assert m["train"]["bytes"] == len(sample_text.encode()) == text_bytes(np.concatenate([train_tokens[s:s + 100] for s in starts]))
    assert m["windows"] == {"context": 32, "stride": 16}


def test_calibration_metrics_and_bins(overconfident, splits):
    m, bins = overconfident.metrics["calibration"], overconfident.bins
    val = splits[0]
    repeats = float(np.mean(val[1:] == val[:-1]))  # the copy model's accuracy, by construction
    assert overconfident.metrics["val"]["accuracy"] == pytest.approx(repeats)
    assert len(bins) == 10 and bins["count"].sum() == overconfident.metrics["val"]["tokens"]
    assert bins["count"].iloc[-1] == bins["count"].sum()  # confidence ~1: all in the last bin
    assert m["confidence"] > 0.999
    assert m["ece"] == pytest.approx(m["confidence"] - repeats, abs=1e-6)
    assert m["mce"] == pytest.approx(m["ece"]) and m["adaptive_ece"] == pytest.approx(m["ece"], abs=1e-3)
    assert m["brier"] == pytest.approx(1 - repeats, abs=1e-3)  # (1 - 1)^2 when right, (1 - 0)^2 when wrong


def test_temperature_scaling_helps_an_overconfident_model(overconfident):
    m = overconfident.metrics["calibration"]
    fit = m["temperature_fit"]
    assert m["temperature"] > 2.0
    assert fit["nll_after"] < fit["nll_before"] - 5.0
    assert fit["ece_after"] < fit["ece_before"] - 0.05
    assert fit["accuracy_after"] == fit["accuracy_before"]
    assert fit["fit_tokens"] + fit["test_tokens"] == overconfident.metrics["val"]["tokens"]
    assert fit["converged"]


def test_fitted_temperature_undoes_a_scaling_of_the_logits(splits):
    """Doubling every logit must double the fitted temperature and leave the fitted NLL unchanged."""
    model = copy_model(10.0)
    val = split_nll(model, splits[0], 32, 16, batch_size=8, keep_hidden=True)
    head = lm_head_logits(model, torch.device("cpu"), "fp32")
    once = calibration.fit_temperature(head, val.hidden, val.targets)
    twice = calibration.fit_temperature(LogitHead(lambda h: 2 * head(h), head.vocab), val.hidden, val.targets)
    assert twice.temperature == pytest.approx(2 * once.temperature, rel=1e-4)
    assert twice.nll == pytest.approx(once.nll, rel=1e-5)


def test_next_tokens_and_samples():
    model = tiny_gpt(seed=2)
    cpu = torch.device("cpu")
    item = inspection.next_tokens(model, "To be or not to", 5, cpu, "fp32")
    probs = [t["probability"] for t in item["top"]]
    assert item["prompt_tokens"] == len(tokenizer.encode("To be or not to"))
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    with torch.no_grad():
        logits, _ = model(torch.tensor([tokenizer.encode("To be or not to")]))
    assert item["top"][0]["id"] == int(logits[0, -1].argmax())
    assert item["top"][0]["token"] == tokenizer.decode([item["top"][0]["id"]])
    a = inspection.sample_completion(model, "ROMEO:", 8, 0.8, 50, None, 7, cpu, "fp32")
    b = inspection.sample_completion(model, "ROMEO:", 8, 0.8, 50, None, 7, cpu, "fp32")
    assert a == b and a["new_tokens"] == 8
    greedy = inspection.sample_completion(model, "ROMEO:", 1, 0.0, None, None, 0, cpu, "fp32")
    with torch.no_grad():
        logits, _ = model(torch.tensor([tokenizer.encode("ROMEO:")]))
    assert greedy["completion"] == tokenizer.decode([int(logits[0, -1].argmax())])
    md = inspection.next_tokens_markdown([item])
    assert '`"To be or not to"`' in md and md.count("\n| ") == 6  # header + 5 rows


def test_write_evaluation(overconfident, tmp_path):
    written = write_evaluation(overconfident, tmp_path / "plots", tmp_path / "reports", title="test")
    assert sorted(p.name for p in written) == sorted(
        p.name for p in (paths.RELIABILITY_CSV, paths.RELIABILITY_PNG, paths.NEXT_TOKENS_JSON,
                         paths.NEXT_TOKENS_MD, paths.SAMPLES_JSON, paths.SAMPLES_MD))
    table = pd.read_csv(tmp_path / "plots" / paths.RELIABILITY_CSV.name)
    assert table["count"].tolist() == overconfident.bins["count"].tolist()
    assert (tmp_path / "plots" / paths.RELIABILITY_PNG.name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    looked = json.loads((tmp_path / "reports" / paths.NEXT_TOKENS_JSON.name).read_text())
    assert [x["prompt"] for x in looked] == ["To be or not to", "ROMEO:"] and len(looked[0]["top"]) == 5
    samples = json.loads((tmp_path / "reports" / paths.SAMPLES_JSON.name).read_text())
    assert samples["decoding"]["max_new_tokens"] == 6 and len(samples["samples"]) == 2
    assert [x["seed"] for x in samples["samples"]] == [1337, 1338]  # each prompt its own random stream


def test_bad_params_name_the_key():
    for values, key in [({"stride": 0}, "eval.stride"), ({"context": 8, "stride": 9}, "eval.stride"),
                        ({"calibration_bins": 0}, "eval.calibration_bins"), ({"sample_top_p": 1.5}, "eval.sample_top_p"),
                        ({"prompts": []}, "eval.prompts"), ({"prompts": ["ok", ""]}, r"eval.prompts\[1\]"),
                        ({"train_tokens": -1}, "eval.train_tokens"), ({"bins": 10}, "eval.bins")]:
        with pytest.raises(ParamsError, match=key):
            params.build_section("eval", SECTIONS["eval"], values)
    model = tiny_gpt(block_size=32)
    with pytest.raises(ParamsError, match="eval.context"):
        window_shape(model, EvalParams(context=64))
    with pytest.raises(ParamsError, match="eval.stride"):
        window_shape(model, EvalParams(stride=33))
    assert window_shape(model, EvalParams(stride=32)) == (32, 32)


# ---------------------------------------------------------------- the stage


def make_project(root, splits, eval_values):
    val, val_bytes, train, train_bytes = splits
    io.write_text(root / params.PARAMS_FILE, yaml.safe_dump({"tracking": {"experiment": "evaluate-test"},
                                                             "compute": {"device": "cpu", "precision": "fp32"},
                                                             "eval": eval_values}))
    write_tokens(root / paths.VAL_BIN, val)
    write_tokens(root / paths.TRAIN_BIN, train)
    io.write_json(root / paths.SPLIT_META, {"train": {"tokens": len(train), "bytes": train_bytes},
                                            "val": {"tokens": len(val), "bytes": val_bytes}})
    weights.save_model(tiny_gpt(seed=3), root / paths.PRETRAIN_DIR)


def test_stage_end_to_end(tmp_path, monkeypatch, mlflow_uri, splits):
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, splits, {**SMALL, "train_tokens": 0})
    evaluate_stage.main()
    metrics = json.loads(paths.metrics_file("evaluate").read_text())
    for produced in (paths.RELIABILITY_CSV, paths.RELIABILITY_PNG, paths.NEXT_TOKENS_JSON, paths.NEXT_TOKENS_MD,
                     paths.SAMPLES_JSON, paths.SAMPLES_MD):
        assert produced.exists(), produced
    assert metrics["train"]["tokens"] == splits[2].size - 1  # train_tokens 0: the whole split
    assert metrics["train"]["bytes"] == splits[3]
    run = tracking.client().get_run(metrics["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["val.loss"] == pytest.approx(metrics["val"]["loss"])
    assert run.data.metrics["calibration.temperature"] == pytest.approx(metrics["calibration"]["temperature"])
    assert run.data.params["eval.stride"] == "16" and run.data.params["model.n_embd"] == "16"
    logged = {a.path for a in tracking.client().list_artifacts(run.info.run_id)}
    assert {paths.RELIABILITY_PNG.name, paths.RELIABILITY_CSV.name, paths.NEXT_TOKENS_MD.name} <= logged


def test_stage_bad_params_exit_cleanly(tmp_path, monkeypatch, mlflow_uri, splits, capsys):
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path, splits, {**SMALL, "stride": 64})  # more than the model's 32-token context
    with pytest.raises(SystemExit) as exit_info:
        run_stage(evaluate_stage.main)
    assert exit_info.value.code == 1
    assert "eval.stride" in capsys.readouterr().err
    assert not paths.metrics_file("evaluate").exists()


def test_a_model_with_a_saved_map_is_scored_through_the_compact_head_with_the_full_heads_numbers():
    # Pretrained over a training vocabulary: every id the text below never uses shares one embedding row.
    text = tokens_of(TEXT * 3)
    vocab = CompactVocabulary.of_tokens(text, tokenizer.N_VOCAB)
    torch.manual_seed(3)
    model = ShortlistGPT(GPTConfig(vocab_size=tokenizer.N_VOCAB, block_size=32, n_layer=1, n_head=2, n_embd=16),
                         vocab).to_full().eval()
    full = copy.deepcopy(model)
    full.vocabulary = None  # no map: the 50,257-row head
    assert lm_head_logits(model, torch.device("cpu"), "fp32").vocab is not None
    assert lm_head_logits(full, torch.device("cpu"), "fp32").vocab is None
    val = tokens_of(TEXT.replace("speak", "sing"))  # some val ids fall in the shared row
    assert (vocab.counts[vocab.row_of_id[torch.as_tensor(val.astype(np.int64))]] > 1).any()
    ours, theirs = (evaluate_model(m, EvalParams(**SMALL), val, text_bytes(val), compute=CPU_FP32).metrics
                    for m in (model, full))
    for key in ("loss", "accuracy"):
        assert ours["val"][key] == pytest.approx(theirs["val"][key], rel=1e-5)
    for key in ("ece", "brier", "temperature"):
        assert ours["calibration"][key] == pytest.approx(theirs["calibration"][key], rel=1e-4, abs=1e-6)
    assert ours["calibration"]["temperature_fit"]["nll_after"] == pytest.approx(
        theirs["calibration"]["temperature_fit"]["nll_after"], rel=1e-5)
