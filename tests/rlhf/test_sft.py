"""SFT: the mask covers exactly the reply tokens, the loss is a hand computation's, the held-out numbers
pick the right positions, a short run lowers the held-out reply NLL, and sampled replies are judged right."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinygpt.data.dialogue import Example, dialogue_data
from tinygpt.data.tokenizer import EOT_ID, encode
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.rlhf import sft
from tinygpt.rlhf.sft_config import SftParams

pytestmark = pytest.mark.usefixtures("single_thread")

IGNORE = sft.IGNORE


def tiny_gpt(seed: int = 0, block_size: int = 32) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()


def test_the_mask_covers_exactly_the_reply_tokens():
    examples = [Example(prompt=[11, 12, 13], reply=[21, 22, EOT_ID]), Example(prompt=[31], reply=[41, EOT_ID])]
    batch = sft.reply_batch(examples)
    # position t reads ids[t] and predicts ids[t + 1]; the second row is padded with end-of-text, not trained on
    assert batch.inputs.tolist() == [[11, 12, 13, 21, 22], [31, 41, EOT_ID, EOT_ID, EOT_ID]]
    assert batch.targets.tolist() == [[IGNORE, IGNORE, 21, 22, EOT_ID], [41, EOT_ID, IGNORE, IGNORE, IGNORE]]


def test_the_loss_is_the_hand_computed_mean_over_reply_tokens():
    model = tiny_gpt()
    examples = [Example(prompt=[5, 6, 7, 8], reply=[9, 10, EOT_ID]), Example(prompt=[1, 2], reply=[3, EOT_ID])]
    loss = sft.reply_loss(model, sft.reply_batch(examples), "fp32")
    by_hand = []
    for e in examples:
        ids = torch.tensor([e.ids])
        logp = F.log_softmax(model(ids[:, :-1])[0][0].double(), dim=-1)
        by_hand += [-logp[t - 1, ids[0, t]].item() for t in range(len(e.prompt), len(e.ids))]
    assert len(by_hand) == 5
    assert loss.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)


def test_held_out_numbers_split_the_text_from_the_end_of_text():
    model = tiny_gpt(1)
    examples = [Example(prompt=[5, 6], reply=[9, 10, EOT_ID]), Example(prompt=[1, 2, 3, 4], reply=[3, EOT_ID])]
    result = sft.evaluate_replies(model, examples, batch_size=2, precision="fp32")
    text, end = [], []
    for e in examples:
        ids = torch.tensor([e.ids])
        logp = F.log_softmax(model(ids[:, :-1])[0][0].double(), dim=-1)
        nll = [-logp[t - 1, ids[0, t]].item() for t in range(len(e.prompt), len(e.ids))]
        text += nll[:-1]
        end.append(nll[-1])
    assert result["text_nll"] == pytest.approx(np.mean(text), rel=1e-5)
    assert result["end_nll"] == pytest.approx(np.mean(end), rel=1e-5)
    assert result["nll"] == pytest.approx(np.mean(text + end), rel=1e-5)
    assert result["end_probability"] == pytest.approx(np.mean(np.exp(-np.array(end))), rel=1e-5)
    assert result["reply_tokens"] == 5 and result["pairs"] == 2


def test_a_short_run_lowers_the_held_out_reply_nll(shakespeare_path):
    text = shakespeare_path.read_text(encoding="utf-8")
    tokens = np.asarray(encode(text[:60_000]), dtype=np.uint16)
    held = np.asarray(encode(text[60_000:80_000]), dtype=np.uint16)
    data = dialogue_data(tokens, held, 65, seed=0)
    model = tiny_gpt(block_size=64)
    # a fast logit bias: the random model's frozen embedding leaves the blocks little to move, the bias learns the
    # replies' common words (and where they end) within the few steps
    params = SftParams(learning_rate=3e-3, logit_bias_lr=0.1, epochs=2, batch_size=16, warmup_steps=2, eval_interval=7)
    checkpoints = sft.Checkpoints(data.held_out["selection"], 64, "fp32")
    before = sft.evaluate_replies(model, data.held_out["report"], 64, "fp32")
    history = sft.train_sft(model, data.train, params, "fp32", on_eval=checkpoints)
    after = sft.evaluate_replies(checkpoints.best(model), data.held_out["report"], 64, "fp32")
    steps = 2 * -(-len(data.train) // 16)
    assert len(history) == steps and [r["step"] for r in checkpoints.curve] == list(range(0, steps, 7)) + [steps]
    assert checkpoints.best_step > 0
    assert after["nll"] < before["nll"] - 1.0
    assert after["end_nll"] < before["end_nll"]
    assert not model.transformer.wte.weight.requires_grad  # embeddings frozen, as in PPO and DPO


def test_the_kept_weights_are_the_best_selection_step():
    model = tiny_gpt(2)
    examples = [Example(prompt=[5, 6], reply=[9, EOT_ID])]
    checkpoints = sft.Checkpoints(examples, 4, "fp32")
    checkpoints(0, model)
    kept = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():  # a worse model later: the first weights stay the kept ones
        model.transformer.h[0].mlp.c_fc.weight.mul_(50)
    checkpoints(10, model)
    if checkpoints.curve[1]["nll"] > checkpoints.curve[0]["nll"]:
        assert checkpoints.best_step == 0
        assert all(torch.equal(v, kept[k]) for k, v in checkpoints.best(model).state_dict().items())


def test_sampled_replies_count_as_ended_only_when_closed_before_a_new_speech():
    model = tiny_gpt(3)
    with torch.no_grad():  # end-of-text always wins: every reply closes at once
        model.lm_head.weight.zero_()
        model.lm_head.weight[EOT_ID] = 0  # tied: the row of EOT ...
    bias = model.add_logit_bias()
    with torch.no_grad():
        bias[EOT_ID] = 100.0
    params = SftParams(samples=2, max_new_tokens=5)
    replies = sft.sample_replies(model, [Example([5, 6], [EOT_ID]), Example([7], [EOT_ID])], params)
    assert [(r.text, r.ended, r.tokens) for r in replies] == [("", True, 0), ("", True, 0)]
    summary = sft.ending_summary([sft.SampledReply("p", "a", True, 3), sft.SampledReply("p", "b\n\nX:\nc", False, 9)])
    assert summary["ended_share"] == 0.5 and summary["ran_on_share"] == 0.5 and summary["mean_tokens"] == 6
    assert summary["ended_se"] == pytest.approx(math.sqrt(0.25 / 2))


def shortlisted_gpt(seed: int = 4) -> GPT:
    """A full GPT whose tokens outside 0..299 share one row, as pretraining over a small vocabulary leaves it."""
    from tinygpt.model.shortlist import CompactVocabulary, ShortlistGPT

    torch.manual_seed(seed)
    config = GPTConfig(block_size=32, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    vocab = CompactVocabulary.of_tokens(np.arange(300), config.vocab_size)
    return ShortlistGPT(config, vocab).to_full().eval()


def test_end_of_text_gets_its_own_row_and_half_the_unseen_class():
    from tinygpt.model.heads import CompactHead, FullHead

    model = shortlisted_gpt()
    ids = torch.tensor([[5, 17, 250, 3]])
    before = F.softmax(model(ids)[0].double(), dim=-1)
    sft.own_end_row(model)
    after = F.softmax(model(ids)[0].double(), dim=-1)
    assert model.vocabulary.counts[model.vocabulary.row_of_id[EOT_ID]] == 1
    torch.testing.assert_close(after[..., :300], before[..., :300], rtol=1e-6, atol=0)  # seen tokens unchanged
    torch.testing.assert_close(after[..., 300:].sum(-1), before[..., 300:].sum(-1), rtol=1e-6, atol=0)
    torch.testing.assert_close(after[..., EOT_ID], before[..., 300:].sum(-1) / 2, rtol=1e-6, atol=0)
    head = CompactHead.of(model)  # the compact head still holds, end-of-text a row of its own
    assert head is not None and head.vocab.n_rows == 302
    hidden = model.hidden_states(ids)
    targets = torch.tensor([[EOT_ID, 400, 17, EOT_ID]])
    torch.testing.assert_close(head.logprobs(hidden, targets), FullHead(model).logprobs(hidden, targets),
                               rtol=0, atol=1e-4)


def test_batches_cover_every_pair_once_per_epoch_and_group_similar_lengths():
    lengths = np.random.default_rng(0).integers(10, 130, size=500).tolist()
    steps = sft.sft_batches(lengths, batch_size=16, epochs=2, seed=1)
    first, second = torch.cat(steps[: len(steps) // 2]), torch.cat(steps[len(steps) // 2:])
    assert sorted(first.tolist()) == list(range(500)) and sorted(second.tolist()) == list(range(500))
    padding = sum(16 * max(lengths[i] for i in b.tolist()) - sum(lengths[i] for i in b.tolist()) for b in steps)
    random_padding = sum(16 * max(lengths[i] for i in b.tolist()) - sum(lengths[i] for i in b.tolist())
                         for b in torch.randperm(500).split(16))
    assert padding < 0.25 * 2 * random_padding  # grouped: a fraction of what random batches pad


def sft_project(tmp_path, monkeypatch, repo_root, train_text: str, val_text: str) -> None:
    """A project folder with a split of `*_text`, a small pretrained model over its vocabulary and small params."""
    import yaml

    from tinygpt.data.tokens import write_tokens
    from tinygpt.model.shortlist import CompactVocabulary, ShortlistGPT
    from tinygpt.model.weights import save_model
    from tinygpt.pipeline import paths

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(repo_root))  # for `stages`
    train = np.asarray(encode(train_text), dtype=np.uint16)
    write_tokens(paths.TRAIN_BIN, train)
    write_tokens(paths.VAL_BIN, np.asarray(encode(val_text), dtype=np.uint16))
    torch.manual_seed(0)
    config = GPTConfig(block_size=64, n_layer=1, n_head=2, n_embd=16, dropout=0.0)
    save_model(ShortlistGPT(config, CompactVocabulary.of_tokens(train, config.vocab_size)).to_full(), paths.PRETRAIN_DIR)
    values = yaml.safe_load((repo_root / "params.yaml").read_text())
    values["compute"].update(device="cpu")
    values["sft"].update(batch_size=16, eval_interval=5, samples=3, max_new_tokens=6)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


def test_the_sft_stage_end_to_end(tmp_path, monkeypatch, mlflow_uri, repo_root, shakespeare_path):
    import importlib

    from tinygpt.core import io
    from tinygpt.model.weights import load_model
    from tinygpt.pipeline import paths

    text = shakespeare_path.read_text(encoding="utf-8")
    sft_project(tmp_path, monkeypatch, repo_root, text[:20_000], text[20_000:30_000])
    importlib.import_module("stages.sft").main()

    metrics = io.read_json(paths.metrics_file("sft"))
    pairs = metrics["pairs"]
    assert pairs["train"] > 50 and pairs["selection"] > 5 and pairs["report"] >= pairs["selection"]
    assert metrics["steps"] == -(-pairs["train"] // 16)  # one epoch of 16-pair batches
    assert metrics["selected_step"] % 5 == 0 or metrics["selected_step"] == metrics["steps"]  # an evaluated step
    for when in ("before", "after"):
        assert metrics[when]["report"]["pairs"] == pairs["report"] and metrics[when]["replies"]["samples"] == 3
    assert metrics["after"]["report"]["end_nll"] < metrics["before"]["report"]["end_nll"]
    assert metrics["mlflow_run_id"]
    model = load_model(paths.SFT_DIR)  # the saved map gives end-of-text its own row, and it loads
    assert model.vocabulary.counts[model.vocabulary.row_of_id[EOT_ID]] == 1
    samples = paths.SFT_SAMPLES_MD.read_text()
    assert samples.count("**pretrained**") == 3 and samples.count("**sft**") == 3
    heldout = paths.SFT_HELDOUT_CSV.read_text().splitlines()
    assert heldout[0].startswith("step,nll,text_nll,end_nll") and len(heldout) >= 3


def test_the_sft_stage_refuses_a_corpus_without_dialogue(tmp_path, monkeypatch, mlflow_uri, repo_root):
    import importlib

    from tinygpt.data.dialogue import DialogueDataError
    from tinygpt.pipeline import paths

    prose = "It was a bright cold day in April, and the clocks were striking thirteen. " * 200
    sft_project(tmp_path, monkeypatch, repo_root, prose, prose)
    with pytest.raises(DialogueDataError, match="speaker's name alone on a line"):
        importlib.import_module("stages.sft").main()
    assert not paths.SFT_DIR.exists() and not paths.metrics_file("sft").exists()
