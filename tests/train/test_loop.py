"""Pretraining: it learns, it is reproducible bit for bit, it resumes exactly (with AdamW and with Muon),
its schedule, weight decay groups and Muon/AdamW split are what the README says, it stops on a non-finite loss, and the stage runs end to end."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from support import Interrupted, crash_at, declared_paths

from tinygpt.core.compute import ComputeParams
from tinygpt.core.errors import ParamsError
from tinygpt.data import tokenizer
from tinygpt.data.tokens import write_tokens
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.train import loop as train_module
from tinygpt.train.checkpoint import CHECKPOINT_FILE
from tinygpt.train.config import TrainParams
from tinygpt.train.loop import NonFiniteLossError, train
from tinygpt.train.optim import WarmupCosine, build_optimizer, build_schedule

TINY = GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, dropout=0.0)
# A tiny, fast recipe, not the pipeline's (TrainParams() is params.yaml's): eager AdamW with light decay, no
# label smoothing, no input noise.
FAST = TrainParams(max_steps=20, batch_size=8, learning_rate=1e-2, min_lr=1e-3, warmup_steps=5, eval_interval=10,
                   eval_batches=2, checkpoint_interval=5, compile=False, optimizer="adamw", weight_decay=0.1,
                   muon_weight_decay=0.1, unseen_smoothing=0.0, input_noise=0.0)
MUON = dataclasses.replace(FAST, optimizer="muon", muon_weight_decay=0.3)
CPU_FP32 = ComputeParams(device="cpu", precision="fp32")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models spend their time in thread synchronisation; one thread is faster and steadier when
    other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def corpus(tmp_path):
    """train.bin / val.bin: a fixed shuffle of the 64 ids, repeated. Each id has one successor, so a
    model that learns the cycle predicts every token: the loss can go to zero."""
    cycle = np.random.default_rng(0).permutation(64)
    train_path, val_path = tmp_path / "train.bin", tmp_path / "val.bin"
    write_tokens(train_path, np.tile(cycle, 10))
    write_tokens(val_path, np.tile(cycle, 2))
    return train_path, val_path


def run(corpus, root, p=FAST, config=TINY, compute=CPU_FP32, **kwargs):
    return train(config, p, corpus[0], corpus[1], root, compute=compute, **kwargs)


def weights(result) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in result.model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), f"{name} differs"


def without_speed(rows: list[dict]) -> list[dict]:
    """Step rows without tokens/s, the one column that depends on the machine's load."""
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]


def lr_at(p: TrainParams, step: int) -> float:
    """The learning rate the schedule sets at `step` (0-based)."""
    return p.learning_rate * WarmupCosine(p.warmup_steps, p.max_steps, p.min_lr / p.learning_rate)(step)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_overfits_a_tiny_corpus(corpus, tmp_path, optimizer):
    p = dataclasses.replace(FAST, max_steps=100, eval_interval=50, checkpoint_interval=100, optimizer=optimizer)
    result = run(corpus, tmp_path / "ckpt", p)
    assert result.evals[0]["train_loss"] == pytest.approx(math.log(64), abs=0.1)  # at step 0: uniform
    assert result.evals[-1]["train_loss"] < 0.1
    assert result.evals[-1]["val_loss"] < 0.1  # val is the same cycle
    assert [row["step"] for row in result.evals] == [0, 50, 100]
    assert len(result.history) == 100 and result.history[-1]["tokens_seen"] == 100 * 8 * 16
    assert result.metrics["final"]["val_loss"] == result.evals[-1]["val_loss"]


def test_same_seed_same_weights_other_seed_other_weights(corpus, tmp_path):
    p = dataclasses.replace(FAST, grad_accum_steps=2)
    config = dataclasses.replace(TINY, dropout=0.1)  # dropout draws from the seeded generator too
    a, b = run(corpus, tmp_path / "a", p, config), run(corpus, tmp_path / "b", p, config)
    assert_same_weights(weights(a), weights(b))
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history]
    c = run(corpus, tmp_path / "c", dataclasses.replace(p, seed=7), config)
    assert not torch.equal(weights(a)["lm_head.weight"], weights(c)["lm_head.weight"])


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_after_interruption_gives_identical_weights(corpus, tmp_path, optimizer):
    p = dataclasses.replace(FAST, grad_accum_steps=2, optimizer=optimizer, input_noise=0.1)  # noise draws resume too
    config = dataclasses.replace(TINY, dropout=0.1)
    uninterrupted = run(corpus, tmp_path / "one", p, config)

    with pytest.raises(Interrupted):
        run(corpus, tmp_path / "two", p, config, on_step=crash_at(13))
    saved = torch.load(next((tmp_path / "two").glob(f"*/{CHECKPOINT_FILE}")), weights_only=True)
    assert saved["step"] == 10  # steps 11-13 were lost and are redone
    logged = []
    resumed = run(corpus, tmp_path / "two", p, config, on_step=lambda step, m: logged.append(step))
    assert resumed.resumed_from == 10
    assert_same_weights(weights(uninterrupted), weights(resumed))
    assert without_speed(resumed.history) == without_speed(uninterrupted.history)
    assert [r["val_loss"] for r in resumed.evals] == [r["val_loss"] for r in uninterrupted.evals]
    assert sorted(set(logged)) == list(range(21))  # the restored curve is replayed to the logger


def test_changed_params_do_not_resume_another_configurations_checkpoint(corpus, tmp_path):
    run(corpus, tmp_path / "ckpt", FAST)
    other = run(corpus, tmp_path / "ckpt", dataclasses.replace(FAST, learning_rate=5e-3))
    assert other.resumed_from == 0
    again = run(corpus, tmp_path / "ckpt", dataclasses.replace(FAST, checkpoint_interval=10))  # not in the key
    assert again.resumed_from == 20
    assert len(list((tmp_path / "ckpt").iterdir())) == 2


def test_learning_rate_schedule():
    p = TrainParams(learning_rate=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert lr_at(p, 0) == pytest.approx(0.1)
    assert lr_at(p, 4) == pytest.approx(0.5)
    assert lr_at(p, 9) == pytest.approx(1.0)
    assert lr_at(p, 10) == pytest.approx(1.0)
    assert lr_at(p, 60) == pytest.approx(0.55)  # half way down the cosine: the mean of peak and floor
    assert lr_at(p, 110) == pytest.approx(0.1)
    assert lr_at(p, 500) == pytest.approx(0.1)


def test_logged_learning_rates_follow_the_schedule(corpus, tmp_path):
    result = run(corpus, tmp_path / "ckpt")
    assert [row["lr"] for row in result.history] == pytest.approx([lr_at(FAST, s) for s in range(20)])


def test_weight_decay_only_on_matrices():
    model = GPT(TINY)
    groups = build_optimizer(model, FAST, torch.device("cpu")).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    plain = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == FAST.weight_decay and groups[1]["weight_decay"] == 0.0
    assert "transformer.wte.weight" in decayed and "transformer.wpe.weight" in decayed
    assert "transformer.h.0.attn.c_attn.weight" in decayed and "transformer.h.1.mlp.c_proj.weight" in decayed
    assert all(n.endswith(".bias") or ".ln_" in n for n in plain)
    assert "transformer.ln_f.weight" in plain and "transformer.h.0.mlp.c_fc.bias" in plain
    assert sum(p.numel() for g in groups for p in g["params"]) == model.param_counts().total  # tied once


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = GPT(TINY)
    optimizer = build_optimizer(model, MUON, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    on = {part: [names[id(p)] for g in opt.param_groups for p in g["params"]] for part, opt in optimizer.parts.items()}
    assert set(on["muon"]) == {f"transformer.h.{i}.{m}.weight" for i in range(TINY.n_layer)
                               for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight"} <= set(on["adamw"])
    assert sorted(on["muon"] + on["adamw"]) == sorted(names.values())  # each parameter once, the tied one too
    muon_group = optimizer.parts["muon"].param_groups[0]
    assert muon_group["weight_decay"] == MUON.muon_weight_decay and muon_group["momentum"] == MUON.muon_momentum
    assert optimizer.parts["adamw"].param_groups[0]["weight_decay"] == MUON.weight_decay
    assert muon_group["adjust_lr_fn"] == "match_rms_adamw"  # so learning_rate means the same for both


def test_the_schedule_sets_the_learning_rate_of_both_muon_and_adamw():
    model = GPT(TINY)
    optimizer = build_optimizer(model, MUON, torch.device("cpu"))
    schedule = build_schedule(optimizer, MUON)
    for step in range(MUON.max_steps):
        assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([lr_at(MUON, step)] * 3)
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()


@pytest.mark.parametrize("changes, key", [
    ({"optimizer": "sgd"}, "train.optimizer"),
    ({"optimizer": "muon", "muon_momentum": 1.0}, "train.muon_momentum"),
    ({"optimizer": "muon", "muon_weight_decay": -0.1}, "train.muon_weight_decay"),
])
def test_bad_optimizer_params_name_the_key(changes, key):
    with pytest.raises(ParamsError, match=key):
        dataclasses.replace(TrainParams(), **changes).validate()


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(corpus, tmp_path, monkeypatch):
    import tinygpt.train.loop as train_module

    real_forward, calls = train_module.forward, []

    def forward_nan_at_step_7(model, x, y, device, precision):
        loss = real_forward(model, x, y, device, precision)
        calls.append(1) if model.training else None
        return loss * float("nan") if model.training and len(calls) == 7 else loss

    monkeypatch.setattr(train_module, "forward", forward_nan_at_step_7)
    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at step 7; .*checkpoint \(step 5\)"):
        run(corpus, tmp_path / "ckpt", FAST)
    saved = torch.load(next((tmp_path / "ckpt").glob(f"*/{CHECKPOINT_FILE}")), weights_only=True)
    assert saved["step"] == 5
    assert all(torch.isfinite(v).all() for v in saved["model"].values())


# ---------------------------------------------------------------- the stage


def test_pretrain_stage_end_to_end(tmp_path, monkeypatch, mlflow_uri, shakespeare_path):
    import yaml
    from mlflow.tracking import MlflowClient

    from stages import pretrain as stage

    ids = np.asarray(tokenizer.encode(shakespeare_path.read_text()[:12000]))
    write_tokens(tmp_path / "data/split/train.bin", ids[:3000])
    write_tokens(tmp_path / "data/split/val.bin", ids[3000:])
    val_bytes = len(tokenizer.gpt2_encoding().decode(ids[3000:].tolist()).encode())
    (tmp_path / "data/split/split.json").write_text(json.dumps({"val": {"bytes": val_bytes}}))
    params = {
        "tracking": {"experiment": "test-pretrain"},
        "model": {"vocab_size": 50257, "block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 16},
        "train": {"max_steps": 6, "batch_size": 4, "learning_rate": 1e-3, "min_lr": 1e-4, "warmup_steps": 2,
                  "weight_decay": 0.1, "optimizer": "adamw", "unseen_smoothing": 0.0, "input_noise": 0.0,
                  "eval_interval": 3, "eval_batches": 1, "checkpoint_interval": 3, "compile": False},
        "compute": {"device": "cpu", "precision": "fp32"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    stage.main()

    metrics = json.loads((tmp_path / "metrics/pretrain.json").read_text())
    assert metrics["steps"] == 6 and metrics["tokens_seen"] == 6 * 4 * 32 and metrics["resumed_from_step"] == 0
    assert metrics["params"]["total"] == 50257 * 16 + 32 * 16 + metrics["params"]["non_embedding"]
    assert metrics["final"]["val_loss"] < math.log(50257) and metrics["best"]["val_loss"] <= metrics["final"]["val_loss"]
    assert metrics["precision"] == "fp32" and metrics["peak_rss_mib"] > 0
    profile = metrics["time"]  # the stage's time profile: its parts add up to the total
    assert profile["training_s"] > 0 and profile["evaluation_s"] > 0 and profile["logging_s"] > 0
    assert sum(v for k, v in profile.items() if k != "total_s") == pytest.approx(profile["total_s"])
    seen = len(np.unique(ids[:3000]))  # train.shortlist_vocab is on by default
    assert metrics["vocabulary"] == {"shortlist": True, "softmax_rows": seen + 1, "seen_tokens": seen,
                                     "unseen_tokens": 50257 - seen, "unseen_smoothing": 0.0}
    whole = metrics["whole_val"]  # every val token after the first, in windows of the 32-token context
    assert whole["tokens"] == len(ids) - 3000 - 1 and whole["bytes"] == val_bytes
    assert whole["perplexity"] == pytest.approx(math.exp(whole["loss"]))
    assert whole["bits_per_byte"] == pytest.approx(whole["loss"] * whole["tokens"] / (math.log(2) * val_bytes))
    assert abs(whole["loss"] - metrics["final"]["val_loss"]) < 0.5  # the fixed batches sample the same split
    steps = (tmp_path / "plots/pretrain/steps.csv").read_text().splitlines()
    assert steps[0] == "step,loss,lr,grad_norm,tokens_seen,tokens_per_s" and len(steps) == 7
    evals = (tmp_path / "plots/pretrain/eval.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in evals[1:]] == ["0", "3", "6"]
    assert (tmp_path / "plots/pretrain/steps.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "reports").exists()  # samples of the trained model are the evaluate stage's
    first = load_file(str(tmp_path / "models/pretrain/model.safetensors"))

    mlflow_run = MlflowClient(mlflow_uri).get_run(metrics["mlflow_run_id"])
    assert mlflow_run.data.params["train.max_steps"] == "6" and mlflow_run.data.params["model.n_embd"] == "16"
    assert mlflow_run.data.metrics["final.val_loss"] == pytest.approx(metrics["final"]["val_loss"])
    history = MlflowClient(mlflow_uri).get_metric_history(metrics["mlflow_run_id"], "loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5, 6]
    artifacts = {a.path for a in MlflowClient(mlflow_uri).list_artifacts(metrics["mlflow_run_id"])}
    assert {"steps.png", "eval.csv"} <= artifacts
    # the weights are the run's logged MLflow model, registered as <experiment>-pretrain with alias current
    version = MlflowClient(mlflow_uri).get_model_version_by_alias("test-pretrain-pretrain", "current")
    assert version.run_id == metrics["mlflow_run_id"]
    [logged] = [o.model_id for o in mlflow_run.outputs.model_outputs]
    assert version.source == f"models:/{logged}"
    assert {d.dataset.name for d in mlflow_run.inputs.dataset_inputs} == {"train split", "val split"}

    # DVC deletes the outputs before a rerun; the same configuration resumes from its final checkpoint.
    (tmp_path / "models/pretrain/model.safetensors").unlink()
    stage.main()
    metrics = json.loads((tmp_path / "metrics/pretrain.json").read_text())
    assert metrics["resumed_from_step"] == 6
    assert_same_weights(first, load_file(str(tmp_path / "models/pretrain/model.safetensors")))
    assert len((tmp_path / "plots/pretrain/steps.csv").read_text().splitlines()) == 7


def test_training_runs_with_deterministic_kernels_and_restores_the_setting(corpus, tmp_path, monkeypatch):
    """Compiled default-size runs drifted apart without deterministic algorithms (see deterministic_kernels)."""
    seen = []
    real_step = train_module.pretrain_step
    monkeypatch.setattr(train_module, "pretrain_step",
                        lambda *a, **k: seen.append(torch.are_deterministic_algorithms_enabled()) or real_step(*a, **k))
    assert not torch.are_deterministic_algorithms_enabled()
    run(corpus, tmp_path / "ckpt")
    assert seen == [True] * FAST.max_steps
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_compiled_training_is_reproducible_and_resumes_exactly(corpus, tmp_path):
    """train.compile: the Inductor kernels give the same weights run to run, and across a resume."""
    p = dataclasses.replace(FAST, max_steps=6, checkpoint_interval=3, eval_interval=3, compile=True)
    config = dataclasses.replace(TINY, n_layer=1, dropout=0.1)
    whole = run(corpus, tmp_path / "one", p, config)

    with pytest.raises(Interrupted):
        run(corpus, tmp_path / "two", p, config, on_step=crash_at(5))
    resumed = run(corpus, tmp_path / "two", p, config)
    assert resumed.resumed_from == 3
    assert_same_weights(weights(whole), weights(resumed))
    # Inductor draws its dropout masks its own way: the eager run agrees closely, not bit for bit.
    eager = run(corpus, tmp_path / "three", dataclasses.replace(p, compile=False), config)
    assert [r["loss"] for r in eager.history] == pytest.approx([r["loss"] for r in whole.history], rel=2e-2)


def test_dvc_declares_the_library_paths_of_the_pretrain_stage(repo_root):
    import yaml

    from tinygpt.pipeline import paths

    stage = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]["pretrain"]
    assert stage["outs"] == [str(paths.PRETRAIN_DIR)]
    assert declared_paths(stage["metrics"]) == [str(paths.metrics_file("pretrain"))]
    assert declared_paths(stage["plots"]) == [str(p) for p in (paths.PRETRAIN_STEPS_CSV, paths.PRETRAIN_EVAL_CSV,
                                                paths.PRETRAIN_STEPS_PNG, paths.PRETRAIN_EVAL_PNG)]
    assert {str(paths.TRAIN_BIN), str(paths.VAL_BIN), "src/tinygpt/train/loop.py", "src/tinygpt/model/gpt.py"} <= set(stage["deps"])
