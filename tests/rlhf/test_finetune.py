"""RLHF end to end on a tiny GPT trained on a tiny synthetic language ("he is good.\\n she was here.\\n"),
where the keyword oracle ("good") is easy: preferences -> reward model -> PPO raises the reward and
the keyword rate; and the three stages run in a temp project with a temp MLflow store."""
from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tinygpt.core import io
from tinygpt.data.tokens import write_tokens
from tinygpt.eval.text_quality import quality_values
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.weights import save_model
from tinygpt.pipeline import paths
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs.samples import read_samples
from tinygpt.rlhf import preferences as prefs
from tinygpt.rlhf import reward_model as rm
from tinygpt.rlhf.config import PreferencesParams, RlhfParams
from tinygpt.rlhf.finetune import PolicyWithValue, train_ppo
from tinygpt.rlhf.tuning import frozen_copy
from tinygpt.rlhf.heldout import held_out
from tinygpt.rlhf.oracles import Oracle

pytestmark = pytest.mark.usefixtures("single_thread")

# GPT-2 ids below 1024, so a 1024-token vocabulary covers the language
SUBJECTS = [[339], [673], [340], [262, 582]]  # " he", " she", " it", " the man"
VERBS = [318, 373]  # " is", " was"
ADJECTIVES = [922, 649, 890, 826, 880, 994, 612, 503]  # " good", " new", " long", " right", ...
KEYWORD = "good"


def tiny_language(n_lines: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    for _ in range(n_lines):
        ids += SUBJECTS[rng.integers(4)] + [VERBS[rng.integers(2)], ADJECTIVES[rng.integers(8)], 13, 198]
    return np.asarray(ids, dtype=np.uint16)


@pytest.fixture(scope="module")
def pretrained() -> GPT:
    """A 1-layer GPT that writes the tiny language (about 10 s on one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tokens = torch.as_tensor(tiny_language(2000, seed=0).astype(np.int64))
    model = GPT(GPTConfig(vocab_size=1024, block_size=32, n_layer=1, n_head=2, n_embd=32))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        starts = torch.randint(0, len(tokens) - 33, (16,), generator=generator)
        x = torch.stack([tokens[i : i + 32] for i in starts])
        y = torch.stack([tokens[i + 1 : i + 33] for i in starts])
        _, loss = model(x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    assert loss.item() < 1.2  # it has learned the grammar (uniform over the 16 tokens would be 2.8)
    return model.eval()


def trainable_copy(model: GPT) -> GPT:
    return frozen_copy(model).requires_grad_(True)


@pytest.mark.parametrize("advantage, logit_bias_lr", [("gae", 0.0), ("rloo", 0.0), ("gae", 3e-2)])
def test_keyword_oracle_ppo_raises_the_reward_and_the_keyword_rate(pretrained, advantage, logit_bias_lr):
    oracle = Oracle("keyword", KEYWORD)
    p = PreferencesParams(oracle="keyword", keyword=KEYWORD, prompt_tokens=4, continuation_tokens=10,
                          samples_per_prompt=4, batch_size=64)
    generator = torch.Generator().manual_seed(0)
    prompt_ids = prefs.cut_prompts(tiny_language(600, 1), 96, 4, np.random.default_rng(0))
    pairs, prompts, stats = prefs.build_split(pretrained, prompt_ids, "train", p, oracle, generator, "fp32")
    assert 0.05 < stats["oracle_mean"] < 0.5 and stats["pairs"] > 100  # "good" in some continuations
    torch.manual_seed(0)
    reward_model = rm.RewardModel(trainable_copy(pretrained))
    train = rm.pair_tensors(pairs)
    rm.train_reward_model(reward_model, train, 3e-3, 0.0, 6, 16, 2, 1.0, 0, "fp32")
    rm.fit_normalisation(reward_model, train, 64, "fp32")
    reward_model.requires_grad_(False)

    policy, ref = PolicyWithValue(trainable_copy(pretrained)), frozen_copy(pretrained)
    held = torch.as_tensor(prefs.cut_prompts(tiny_language(200, 2), 16, 4, np.random.default_rng(1)))
    before = held_out(ref, ref, reward_model, held, 8, 10, 1.0, 7, oracle, "fp32", 64)
    ppo_params = RlhfParams(steps=20, batch_size=16, minibatch_size=8, ppo_epochs=2, learning_rate=1e-3,
                            init_kl_coef=0.02, advantage=advantage, samples_per_prompt=4 if advantage == "rloo" else 1,
                            logit_bias_lr=logit_bias_lr)
    history = pd.DataFrame(train_ppo(policy, ref, reward_model, np.asarray(prompts["prompt_ids"]), ppo_params,
                                     10, oracle, "fp32"))
    after = held_out(policy.gpt, ref, reward_model, held, 8, 10, 1.0, 7, oracle, "fp32", 64)

    # Bounds from this run's spread over 6 seeds of each case (docs/experiments/tests/ppo_kl_spread.csv: gains
    # at least 0.59 / 0.30 / 0.51 / 0.26, KL 0.8 to 14.5 nats, 20.3 seen on an AMX CPU): about half the
    # smallest gain, and a KL bound 2.5x the largest seen (it catches a run whose KL runs away).
    first, last = history.head(4).mean(), history.tail(4).mean()
    assert last["reward_model_score"] > first["reward_model_score"] + 0.3
    assert last["gold_score"] > first["gold_score"] + 0.1
    assert after.reward.mean() > before.reward.mean() + 0.25
    assert after.gold.mean() > before.gold.mean() + 0.1
    assert before.kl.tolist() == [0.0] * len(before.kl)  # the reference against itself
    assert 0.0 < after.kl.mean() < 50.0
    if logit_bias_lr:  # the policy gained a logit bias, and " good" (922) rose above the other adjectives
        bias = policy.gpt.lm_head.bias.detach()
        assert bias[922].item() > 0 and bias[922].item() > bias[ADJECTIVES[1:]].max().item()
    else:
        assert policy.gpt.lm_head.bias is None


def tiny_rlhf_project(tmp_path, monkeypatch, pretrained, repo_root, **overrides) -> None:
    """A project folder with the split, the pretrained model and small params; the working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(repo_root))  # for `stages`
    write_tokens(paths.TRAIN_BIN, tiny_language(600, 1))
    write_tokens(paths.VAL_BIN, tiny_language(150, 2))
    save_model(pretrained, paths.PRETRAIN_DIR)
    values = yaml.safe_load((repo_root / "params.yaml").read_text())
    values["compute"].update(device="cpu")
    values["preferences"].update(oracle="keyword", keyword=KEYWORD, prompt_tokens=4, continuation_tokens=10,
                                 train_prompts=32, val_prompts=8, selection_prompts=4, samples_per_prompt=3)
    values["reward"].update(epochs=2, batch_size=8, warmup_steps=2)
    values["heldout"].update(samples_per_prompt=2, batch_size=16)
    values["best_of_n"].update(max_n=8, deep_n=16, deep_prompts=2)
    values["rlhf"].update(steps=3, batch_size=8, minibatch_size=4, ppo_epochs=2, eval_interval=2)
    values["dpo"].update(ranked_samples=4, ranked_pairs=1, batch_size=12, eval_interval=2)
    for section, keys in overrides.items():
        values[section].update(keys)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


def run(stage: str) -> None:
    importlib.import_module(f"stages.{stage}").main()


def test_the_rlhf_stages_end_to_end(tmp_path, monkeypatch, mlflow_uri, pretrained, repo_root):
    tiny_rlhf_project(tmp_path, monkeypatch, pretrained, repo_root)
    for stage in ("preferences", "reward", "best_of_n", "rlhf", "dpo", "frontier"):
        run(stage)

    pairs = prefs.load_pairs(paths.PREFERENCE_PAIRS)
    assert set(pairs) == {"train", "selection", "report"} and len(pairs["train"]) > 0
    row = pairs["train"][0]
    assert row["chosen_score"] == 1.0 and row["rejected_score"] == 0.0 and KEYWORD in row["chosen"]
    assert len(row["prompt_ids"]) == 4 and len(row["chosen_ids"]) == 10
    selection, report = (prefs.load_prompts(paths.PREFERENCE_PROMPTS, s) for s in ("selection", "report"))
    assert selection.shape == report.shape == (4, 4)

    reward = io.read_json(paths.metrics_file("reward"))
    assert 0.0 <= reward["report"]["accuracy"] <= 1.0 and "accuracy" in reward["selection"]
    assert reward["normalisation"]["scale"] > 0
    assert rm.load_reward_model(paths.REWARD_DIR).scale.item() == pytest.approx(reward["normalisation"]["scale"])

    metrics = io.read_json(paths.metrics_file("rlhf"))
    assert metrics["before"]["kl_mean"] == 0.0 and metrics["last"]["kl_mean"] != 0.0  # it moved
    assert "heldout_oracle_mean" not in metrics["change"]  # the keyword oracle has no held-out gold
    assert metrics["change"]["oracle_mean"] == pytest.approx(
        metrics["after"]["oracle_mean"] - metrics["before"]["oracle_mean"])
    frontier = pd.read_csv(paths.RLHF_FRONTIER_CSV)  # the reference, every 2 steps and the last, both sets
    assert sorted(set(frontier["step"])) == [0, 2, 3] and set(frontier["set"]) == {"selection", "report"}
    assert metrics["selected_step"] in {0, 2, 3} and metrics["last"]["step"] == 3
    best_of_n = pd.read_csv(paths.BEST_OF_N_CURVE_CSV)
    assert best_of_n[best_of_n["set"] == "report"]["n"].tolist() == [1, 2, 4, 8]
    deep = best_of_n[best_of_n["set"] == "report_deep"]  # the first 2 report prompts, 16 samples each
    assert deep["n"].tolist() == [1, 2, 4, 8, 16] and set(deep["prompts"]) == {2}
    assert pd.read_csv(paths.BEST_OF_N_SCORES).shape[0] == (4 + 4) * 8  # both sets, 8 samples per prompt
    soft = pd.read_csv(paths.SOFT_BEST_OF_N_CSV)
    assert soft[soft["set"] == "report"]["beta"].tolist() == [1.0, 0.5, 0.3, 0.2, 0.15, 0.1]
    assert set(io.read_json(paths.metrics_file("best_of_n"))["soft"]["report"]) == {
        "beta_1", "beta_0.5", "beta_0.3", "beta_0.2", "beta_0.15", "beta_0.1"}
    dpo = io.read_json(paths.metrics_file("dpo"))
    assert dpo["steps"] == 3 and sorted(set(pd.read_csv(paths.DPO_FRONTIER_CSV)["step"])) == [0, 2, 3]
    assert 0.0 <= dpo["pairs"]["report"]["accuracy"] <= 1.0 and (paths.DPO_DIR / "model.safetensors").exists()
    # one baseline: every method's gain is against best-of-n's reference samples (8 per prompt here)
    scores = pd.read_csv(paths.BEST_OF_N_SCORES, keep_default_na=False)
    reference = scores[scores["set"] == "report"]
    for stage_metrics in (metrics, dpo):
        assert stage_metrics["before"]["oracle_mean"] == pytest.approx(reference["gold"].mean())
        assert stage_metrics["before"]["reward_model_mean"] == pytest.approx(reference["proxy"].mean(), abs=1e-5)
    assert read_samples(paths.BEST_OF_N_SCORES)["report"].texts == reference["text"].tolist()
    summary = io.read_json(paths.metrics_file("frontier"))
    per_prompt = pd.read_csv(paths.BEST_OF_N_PER_PROMPT, keep_default_na=False)
    assert len(per_prompt) == 4 * 4 + 4 * 4 + 2 * 5  # selection and report to n = 8, the deep curve to 16
    for method, stage_metrics, samples_csv in (("ppo", metrics, paths.RLHF_SAMPLES_CSV),
                                               ("dpo", dpo, paths.DPO_SAMPLES_CSV)):
        held = read_samples(samples_csv)  # the reported point's samples, every one scored
        assert held["report"].gold.mean() == pytest.approx(stage_metrics["after"]["oracle_mean"], abs=1e-5)
        assert held["report"].kl.mean() == pytest.approx(stage_metrics["after"]["kl_mean"], abs=1e-4)
        assert summary[method]["selected_step"] == stage_metrics["selected_step"]
        assert summary[method]["gold_gain"] == pytest.approx(stage_metrics["change"]["oracle_mean"], abs=1e-5)
        assert summary[method]["best_of_n_max_kl"] == pytest.approx(deep["kl"].max())  # the deep curve reaches furthest
        if not summary[method]["beyond_best_of_n_curve"]:  # recomputed by hand from the two stages' files
            name = summary[method]["best_of_n_curve"]
            curve = per_prompt[per_prompt["set"] == name]
            policy = pd.read_csv(samples_csv, keep_default_na=False).query("set == 'report'")
            reference = per_prompt[(per_prompt["set"] == "report") & (per_prompt["n"] == 1)]
            policy_gain = policy["gold"].mean() - reference["gold"].mean()  # every prompt, 2 samples each
            gains = [np.interp(summary[method]["kl"], rows["kl"], rows["gold"]) - rows["gold"].iloc[0]
                     for prompt, rows in curve.groupby("prompt")]  # best-of-n's on the curve's prompts
            assert summary[method]["gain_over_best_of_n"] == pytest.approx(policy_gain - np.mean(gains), abs=1e-5)
            # text quality the same way: the policy's change of repeated words minus best-of-n's picks'
            repeats = quality_values(policy["text"], frozenset())["repeated_words"]
            changes = [np.interp(summary[method]["kl"], rows["kl"], rows["repeated_words"])
                       - rows["repeated_words"].iloc[0] for prompt, rows in curve.groupby("prompt")]
            assert summary[method]["repeated_words_change_over_best_of_n"] == pytest.approx(
                repeats.mean() - reference["repeated_words"].mean() - np.mean(changes), abs=1e-9)
            assert summary[method]["best_of_n_prompts"] == len(gains) == (4 if name == "report" else 2)
    assert set(summary["best_of_n_deep"]) == {"n1", "n2", "n4", "n8", "n16"}
    assert paths.FRONTIER_PNG.stat().st_size > 1000 and "## PPO" in paths.FRONTIER_TABLE_MD.read_text()
    assert "## Soft best-of-n" in paths.FRONTIER_TABLE_MD.read_text()
    assert {"soft best-of-n", "best-of-n", "best-of-n (report_deep)"} <= set(pd.read_csv(paths.FRONTIER_POINTS_CSV)["method"])
    assert "n = 1, 2, 4, ..., 16 (2 report prompts)" in paths.FRONTIER_TABLE_MD.read_text()
    assert "# The reported points against best-of-n" in paths.FRONTIER_TABLE_MD.read_text()
    table = paths.FRONTIER_SAMPLES_MD.read_text()  # the same prompts, every method
    assert table.count("## Prompt ") == 4 and table.count("| best-of-16 (report_deep curve)") == 2
    assert table.count("| reference (a sample)") == table.count("| best-of-8 (report curve)") == 4
    assert table.count(f"| PPO, step {metrics['selected_step']}") == table.count(f"| DPO, step {dpo['selected_step']}") == 4
    assert 1.0 < metrics["before"]["val_perplexity"] < 20.0  # the tiny language is easy
    steps = pd.read_csv(paths.RLHF_STEPS_CSV)
    assert list(steps["step"]) == [0, 1, 2] and {"kl", "beta", "clip_fraction", "explained_variance"} <= set(steps)
    for png in (paths.RLHF_STEPS_PNG, paths.RLHF_PROXY_GOLD_PNG, paths.REWARD_STEPS_PNG):
        assert png.stat().st_size > 1000
    # header, rule and a row per report prompt (4, fewer than the table's 8), after the title line
    assert paths.RLHF_SAMPLES_MD.read_text().count("\n|") == 2 + 4
    assert (paths.RLHF_DIR / "model.safetensors").exists()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_uri)
    run_info = client.get_run(metrics["mlflow_run_id"])
    assert run_info.data.params["rlhf.steps"] == "3" and run_info.data.tags["stage"] == "rlhf"
    assert [m.step for m in client.get_metric_history(run_info.info.run_id, "kl")] == [0, 1, 2]
    for stage in ("preferences", "reward"):
        assert client.get_run(io.read_json(paths.metrics_file(stage))["mlflow_run_id"]).info.status == "FINISHED"


def test_the_rlhf_stages_start_from_the_model_start_model_names(tmp_path, monkeypatch, mlflow_uri, pretrained, repo_root):
    tiny_rlhf_project(tmp_path, monkeypatch, pretrained, repo_root, preferences={"start_model": "sft"},
                      rlhf={"steps": 2}, dpo={"ranked_samples": 2, "batch_size": 32})
    paths.PRETRAIN_DIR.rename(paths.SFT_DIR)  # only models/sft exists: a stage that read models/pretrain would fail
    for stage in ("preferences", "reward", "best_of_n", "rlhf", "dpo"):
        run(stage)
    assert io.read_json(paths.metrics_file("dpo"))["steps"] >= 1
    assert io.read_json(paths.metrics_file("rlhf"))["last"]["step"] == 2


def test_the_sentiment_oracle_reports_its_held_out_gold_beside_the_gold(
    tmp_path, monkeypatch, mlflow_uri, pretrained, repo_root
):
    # " good" is the tiny language's one word in both lexicons (VADER and AFINN-165, +3)
    tiny_rlhf_project(tmp_path, monkeypatch, pretrained, repo_root, preferences={"oracle": "sentiment"})
    for stage in ("preferences", "reward", "best_of_n", "rlhf", "dpo", "frontier"):
        run(stage)
    scores = pd.read_csv(paths.BEST_OF_N_SCORES, keep_default_na=False)
    assert (scores["heldout_gold"] == 3.0 * scores["text"].str.count(" good")).all()
    assert io.read_json(paths.metrics_file("best_of_n"))["heldout_gold"] == "afinn"
    for stage in ("rlhf", "dpo"):
        change = io.read_json(paths.metrics_file(stage))["change"]
        assert {"heldout_oracle_mean", "heldout_oracle_se"} <= set(change)
        assert "heldout_gold_gain" in pd.read_csv({"rlhf": paths.RLHF_FRONTIER_CSV, "dpo": paths.DPO_FRONTIER_CSV}[stage])
    summary = io.read_json(paths.metrics_file("frontier"))
    assert summary["heldout_gold"] == "afinn" and "heldout_gold_gain" in summary["best_of_n"]["n8"]
    for method in ("ppo", "dpo"):
        m = summary[method]
        assert "heldout_gold_gain" in m and "heldout_gain_over_best_of_n" in m
        if m["beyond_best_of_n_curve"]:
            assert m["heldout_gain_over_best_of_n"] is None and m["gain_over_best_of_n"] is None
    assert "heldout_gold_gain" in paths.FRONTIER_TABLE_MD.read_text()
    assert "heldout_gold_gain" in pd.read_csv(paths.FRONTIER_POINTS_CSV)
    # text quality beside every point: the tiny language's words are all known, none glued
    curve = pd.read_csv(paths.BEST_OF_N_CURVE_CSV)
    assert (curve["unseen_words"] == 0.0).all() and curve["repeated_words"].between(0, 1).all()
    assert {"distinct_2", "repeated_words", "unseen_words"} <= set(pd.read_csv(paths.DPO_FRONTIER_CSV))
    quality = io.read_json(paths.metrics_file("rlhf"))["quality"]
    assert set(quality) == {"before", "after"} and quality["before"]["unseen_words"] == 0.0
    frontier_table = paths.FRONTIER_TABLE_MD.read_text()
    assert "distinct_2" in frontier_table and "− best-of-n, repeated_words" in frontier_table


def test_brevity_without_end_of_text_ties_every_pair_and_fails_cleanly(
    tmp_path, monkeypatch, mlflow_uri, pretrained, repo_root, capsys
):
    # The tiny language, like Tiny Shakespeare, has no end-of-text: every continuation is full length.
    tiny_rlhf_project(tmp_path, monkeypatch, pretrained, repo_root, preferences={"oracle": "brevity"})
    with pytest.raises(SystemExit) as exit_info:
        run_stage(importlib.import_module("stages.preferences").main)
    assert exit_info.value.code == 1
    assert "tied under oracle 'brevity'" in capsys.readouterr().err
    assert not paths.PREFERENCES_DIR.exists()


def test_dpo_on_reward_ranked_pairs(tmp_path, monkeypatch, mlflow_uri, pretrained, repo_root):
    """dpo.pairs: reward_ranked trains on two pairs per train prompt (the reward model's best sample over
    its worst, the second best over the second worst), with soft labels and DPO-ptx, for two epochs."""
    tiny_rlhf_project(tmp_path, monkeypatch, pretrained, repo_root,
                      dpo={"pairs": "reward_ranked", "ranked_samples": 4, "ranked_pairs": 2, "ptx_coef": 0.5,
                           "epochs": 2})
    for stage in ("preferences", "reward", "best_of_n", "dpo"):
        run(stage)
    metrics = io.read_json(paths.metrics_file("dpo"))
    trained = metrics["training_pairs"]
    assert 32 < trained["pairs"] <= 64  # two per train prompt, less any whose two samples tie
    assert trained["chosen_score_mean"] > trained["rejected_score_mean"]  # reward-model scores
    assert metrics["steps"] == 2 * -(-trained["pairs"] // 12)  # two passes at batch 12
    assert set(pd.read_csv(paths.DPO_STEPS_CSV)["epoch"]) == {0, 1}
    assert metrics["selected_step"] in set(pd.read_csv(paths.DPO_FRONTIER_CSV)["step"])
    assert (pd.read_csv(paths.DPO_STEPS_CSV)["ptx_loss"] > 0).all()
