"""DPO: the loss and gradients are TRL's on the same pairs, policy == reference gives log 2, a few dozen
steps learn a synthetic preference, the labels follow the pairs, and the loop's evaluation schedule and params
behave."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from datasets import Dataset

from tinygpt.core.errors import ParamsError
from tinygpt.data.tokenizer import EOT_ID
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import CompactHead, output_head
from tinygpt.model.hf import hf_from_gpt, is_conv1d, write_tokenizer
from tinygpt.model.vocabulary import CompactVocabulary
from tinygpt.rlhf import dpo
from tinygpt.rlhf.config import DpoParams
from tinygpt.rlhf.tuning import frozen_copy
from tinygpt.rlhf.rollout import response_mask

pytestmark = pytest.mark.usefixtures("single_thread")

MARK = 77  # the token that makes a continuation preferred in the synthetic pairs


def tiny_gpt(vocab_size: int = 1024, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16, dropout=0.0)).eval()


def perturbed(model: GPT, scale: float, seed: int) -> GPT:
    """A reference that differs from the policy, so that the log-ratios are not all zero."""
    ref = frozen_copy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in ref.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return ref


def pairs_of(prompts, chosen, rejected) -> Dataset:
    """A pairs dataset in preferences.py's layout (texts and oracle scores are not read by DPO)."""
    n = len(prompts)
    return Dataset.from_dict({"prompt_ids": prompts, "chosen_ids": chosen, "rejected_ids": rejected,
                              "chosen_score": [1.0] * n, "rejected_score": [0.0] * n})


def synthetic_pairs(n: int, seed: int) -> Dataset:
    """Chosen continuations contain MARK twice, rejected ones never; all else random ids below 50."""
    rng = np.random.default_rng(seed)
    prompts, chosen, rejected = [], [], []
    for _ in range(n):
        good = rng.integers(0, 50, 6).tolist()
        for i in rng.choice(6, size=2, replace=False):
            good[i] = MARK
        prompts.append(rng.integers(0, 50, 4).tolist())
        chosen.append(good)
        rejected.append(rng.integers(0, 50, 6).tolist())
    return pairs_of(prompts, chosen, rejected)


# Three pairs with one prompt length and continuations of unequal lengths, as preferences.py stores them:
# a sample that stopped early ends with its end-of-text, the others ran to the limit of 6 tokens.
PROMPTS = [[464, 3290, 318, 257], [40, 588, 262, 3290], [1532, 345, 467, 284]]
CHOSEN = [[922, 1110, 290, 340, 373, 13], [11, 484, EOT_ID], [262, 3290, 11, 262, 3797, 13]]
REJECTED = [[2089, EOT_ID], [257, 1256, 286, 1243, 287, 262], [307, 640, 13, EOT_ID]]


def trl_trainer(tmp_path, policy: GPT, ref: GPT, pairs: Dataset, beta: float):
    trl = pytest.importorskip("trl")
    tokenizer = write_tokenizer(tmp_path, model_max_length=policy.config.block_size)
    texts = pairs.map(lambda row: {key: tokenizer.decode([i for i in row[f"{key}_ids"] if i != EOT_ID])
                                   for key in ("prompt", "chosen", "rejected")})
    args = trl.DPOConfig(
        output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, beta=beta,
        loss_type=["sigmoid"], label_smoothing=0.0,  # the plain DPO loss
        max_length=None,  # no truncation
        bf16=False,  # TRL defaults to True: its reference forward would run in bf16 autocast
        precompute_ref_log_probs=False, disable_dropout=True, dataset_num_proc=None,
    )
    return trl.DPOTrainer(model=hf_from_gpt(policy), ref_model=hf_from_gpt(ref), args=args,
                          train_dataset=texts.select_columns(["prompt", "chosen", "rejected"]),
                          processing_class=tokenizer)


def test_loss_and_gradients_are_trls(tmp_path):
    policy = tiny_gpt(vocab_size=50257)
    ref = perturbed(policy, 0.05, seed=1)
    pairs = pairs_of(PROMPTS, CHOSEN, REJECTED)
    trainer = trl_trainer(tmp_path, policy, ref, pairs, beta=0.3)

    # TRL tokenizes the texts itself and appends an end-of-text to every continuation; ours carry one
    # only when the sample ended early (a continuation cut at the length limit did not choose to stop).
    # So its own dataset differs exactly there, and the batch is built by its collator from our ids.
    tokenized = trainer.train_dataset
    for i, (chosen, rejected) in enumerate(zip(CHOSEN, REJECTED)):
        assert tokenized[i]["prompt_ids"] == PROMPTS[i]
        assert tokenized[i]["chosen_ids"] == chosen + [EOT_ID] * (chosen[-1] != EOT_ID)
        assert tokenized[i]["rejected_ids"] == rejected + [EOT_ID] * (rejected[-1] != EOT_ID)
    batch = trainer.data_collator(
        [{key: pairs[i][key] for key in ("prompt_ids", "chosen_ids", "rejected_ids")} for i in range(len(pairs))])

    # The same padded sequences (TRL pads with the tokenizer's pad = end-of-text) and the same tokens scored.
    data = dpo.preference_tensors(pairs)
    assert torch.equal(batch["input_ids"], torch.cat([data.chosen, data.rejected]))
    scored = batch["completion_mask"][:, data.prompt_len :].float()
    assert torch.equal(scored, torch.cat([data.chosen_mask, data.rejected_mask]))
    assert not batch["completion_mask"][:, : data.prompt_len].any()

    trl_loss = trainer.compute_loss(trainer.model, batch)
    trl_loss.backward()
    loss, _ = dpo.dpo_loss(*dpo.pair_logprobs(policy, data, "fp32"), *dpo.all_logprobs(ref, data, 8, "fp32"),
                           beta=0.3)
    loss.backward()
    assert loss.item() == pytest.approx(trl_loss.item(), rel=1e-5)
    assert abs(loss.item() - math.log(2)) > 0.01  # the policy and the reference do differ

    hf_params = dict(trainer.model.named_parameters())  # the tied head is wte's tensor on both sides
    for name, param in policy.named_parameters():
        hf_grad = hf_params[name].grad
        hf_grad = hf_grad.t() if is_conv1d(name) else hf_grad
        scale = param.grad.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(param.grad, hf_grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


def test_masks_are_the_rollout_response_masks_and_prompts_must_share_a_length():
    data = dpo.preference_tensors(pairs_of(PROMPTS, CHOSEN, REJECTED))
    assert data.prompt_len == 4 and data.chosen.shape == data.rejected.shape == (3, 4 + 6)
    # For preference data (continuations cut after their first end-of-text) the mask is PPO's.
    assert torch.equal(data.chosen_mask, response_mask(data.chosen[:, 4:]))
    assert torch.equal(data.rejected_mask, response_mask(data.rejected[:, 4:]))
    assert data.chosen_mask.sum(dim=1).tolist() == [6, 3, 6]
    assert data.rejected_mask.sum(dim=1).tolist() == [2, 6, 4]
    with pytest.raises(dpo.PairDataError, match="prompts of one length"):
        dpo.preference_tensors(pairs_of([[1, 2], [3]], [[4], [5]], [[6], [7]]))


def test_dpo_loss_by_hand_and_log_2_when_the_policy_is_the_reference():
    loss, stats = dpo.dpo_loss(torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0]),
                               torch.tensor([-3.5, -4.0]), torch.tensor([-3.0, -3.0]), beta=0.5)
    margins = [0.5 * ((-3.0 + 3.5) - (-4.0 + 3.0)), 0.5 * ((-5.0 + 4.0) - (-2.0 + 3.0))]  # 0.75, -1.0
    assert loss.item() == pytest.approx(np.mean([math.log1p(math.exp(-m)) for m in margins]))
    assert stats["accuracy"] == 0.5 and stats["margin"] == pytest.approx(np.mean(margins))
    assert stats["chosen_reward"] == pytest.approx(0.5 * (0.5 - 1.0) / 2)

    policy = tiny_gpt()
    data = dpo.preference_tensors(synthetic_pairs(8, seed=0))
    reference = dpo.all_logprobs(frozen_copy(policy), data, 8, "fp32")
    loss, stats = dpo.dpo_loss(*dpo.pair_logprobs(policy, data, "fp32"), *reference, beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert stats["accuracy"] == 0.0 and stats["margin"] == 0.0


def test_dpo_learns_the_preference_on_held_out_pairs():
    policy = tiny_gpt(seed=1)
    ref = frozen_copy(policy)
    held_out = dpo.preference_tensors(synthetic_pairs(64, seed=2))
    held_out_ref = dpo.all_logprobs(ref, held_out, 64, "fp32")
    before = dpo.evaluate_dpo(policy, held_out, held_out_ref, 0.5, 64, "fp32")
    params = DpoParams(pairs="preferences", beta=0.5, learning_rate=1e-2, epochs=6, batch_size=16, warmup_steps=2)
    history = dpo.train_dpo(policy, ref, synthetic_pairs(128, seed=1), params, "fp32")
    after = dpo.evaluate_dpo(policy, held_out, held_out_ref, 0.5, 64, "fp32")

    assert len(history) == 6 * 8 and history[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert before["loss"] == pytest.approx(math.log(2), abs=1e-6) and before["accuracy"] == 0.0
    assert after["accuracy"] > 0.9 and after["margin"] > 0.3 and after["loss"] < 0.6  # log 2 = 0.69
    assert after["chosen_reward"] > 0.2  # it raised the chosen continuations' likelihood (MARK)
    assert np.mean([row["loss"] for row in history[-8:]]) < 0.6
    # warmup over 2 steps, then a linear decay to 0 after the 48th
    assert [row["lr"] for row in (history[0], history[1], history[-1])] == pytest.approx([5e-3, 1e-2, 1e-2 / 46])


def test_eval_schedule_and_frozen_embeddings():
    policy, pairs = tiny_gpt(), synthetic_pairs(10, seed=3)
    ref = frozen_copy(policy)
    wte = policy.transformer.wte.weight.detach().clone()
    ref_state = {k: v.clone() for k, v in ref.state_dict().items()}
    evals, steps = [], []
    params = DpoParams(learning_rate=1e-3, epochs=2, batch_size=4, warmup_steps=1, eval_interval=2)
    history = dpo.train_dpo(policy, ref, pairs, params, "fp32", on_step=lambda step, row: steps.append(step),
                            on_eval=lambda step, model: evals.append((step, model is policy, model.training)))

    assert len(history) == 2 * 3 and [row["step"] for row in history] == steps == list(range(6))
    assert evals == [(s, True, False) for s in (0, 2, 4, 6)]  # at the start, every 2 steps, after the last
    assert eval_calls(pairs, dataclasses.replace(params, eval_interval=4)) == [0, 4, 6]
    assert eval_calls(pairs, dataclasses.replace(params, eval_interval=0)) == [0, 6]
    assert torch.equal(policy.transformer.wte.weight, wte)  # the embedding (and so the LM head) stayed put
    assert not torch.equal(policy.transformer.h[0].attn.c_attn.weight, ref.transformer.h[0].attn.c_attn.weight)
    assert all(torch.equal(v, ref_state[k]) for k, v in ref.state_dict().items())


def eval_calls(pairs: Dataset, params: DpoParams) -> list[int]:
    """The steps at which train_dpo calls on_eval."""
    steps: list[int] = []
    policy = tiny_gpt()
    dpo.train_dpo(policy, frozen_copy(policy), pairs, params, "fp32", on_eval=lambda step, _: steps.append(step))
    return steps


def test_the_compact_head_gives_the_full_heads_numbers():
    """A model whose unused tokens share one embedding row (as after pretraining on a small vocabulary)
    trains through the compact head; its first step scores as the full head does."""
    policy = tiny_gpt()
    with torch.no_grad():
        policy.transformer.wte.weight[100:] = policy.transformer.wte.weight[100]
    policy.vocabulary = CompactVocabulary.of_tokens(np.arange(100), policy.config.vocab_size)
    ref = perturbed(policy, 0.01, seed=2)
    with torch.no_grad():
        ref.transformer.wte.weight.copy_(policy.transformer.wte.weight)
    assert isinstance(output_head(policy, compact=True), CompactHead)
    pairs = synthetic_pairs(12, seed=4)
    data = dpo.preference_tensors(pairs)
    loss, _ = dpo.dpo_loss(*dpo.pair_logprobs(policy, data, "fp32"), *dpo.all_logprobs(ref, data, 12, "fp32"), 0.1)
    history = dpo.train_dpo(policy, ref, pairs, DpoParams(pairs="preferences", beta=0.1, batch_size=12), "fp32")
    assert history[0]["loss"] == pytest.approx(loss.item(), rel=1e-5) and loss.item() != pytest.approx(math.log(2))


def test_the_labels_follow_the_pairs():
    """The labelled pairs train on hard labels (chosen wins), reward-ranked pairs on the reward model's
    sigmoid(chosen_score - rejected_score): the first step's loss, against a reference that differs, says which."""
    policy = tiny_gpt()
    ref = perturbed(policy, 0.05, seed=4)
    pairs = synthetic_pairs(8, seed=9).map(lambda row, i: {"chosen_score": 0.3 * i - 1.0, "rejected_score": 0.5},
                                           with_indices=True)
    data = dpo.preference_tensors(pairs)
    logps = (*dpo.pair_logprobs(policy, data, "fp32"), *dpo.all_logprobs(ref, data, 8, "fp32"))
    soft = torch.sigmoid(torch.tensor([0.3 * i - 1.5 for i in range(8)]))
    hard_loss, soft_loss = (dpo.dpo_loss(*logps, 1.0, label)[0].item() for label in (None, soft))
    assert abs(hard_loss - soft_loss) > 1e-3
    for mode, expected in (("preferences", hard_loss), ("reward_ranked", soft_loss)):
        history = dpo.train_dpo(tiny_gpt(), ref, pairs, DpoParams(pairs=mode, beta=1.0, batch_size=8), "fp32")
        assert history[0]["loss"] == pytest.approx(expected, rel=1e-5), mode


def test_soft_labels_stop_the_margin_at_the_reward_difference():
    """With labels sigmoid(reward difference) the loss is smallest, and its gradient zero, where the margin
    beta * (log-ratio of chosen - log-ratio of rejected) equals the reward difference; hard labels keep
    pushing the margin up."""
    pairs = pairs_of(PROMPTS, CHOSEN, REJECTED).map(
        lambda row, i: {"chosen_score": [1.5, 0.2, 3.0][i], "rejected_score": [-0.5, 0.0, 1.0][i]},
        with_indices=True)
    data = dpo.preference_tensors(pairs, soft_labels=True)
    assert data.label.tolist() == pytest.approx(torch.sigmoid(torch.tensor([2.0, 0.2, 2.0])).tolist())
    assert dpo.preference_tensors(pairs).label.tolist() == [1.0, 1.0, 1.0]
    assert data.rows(torch.tensor([2])).label.tolist() == pytest.approx([data.label[2].item()])

    p, m = 0.8, 0.3  # by hand: -(p log sigmoid(m) + (1 - p) log sigmoid(-m))
    by_hand = -(p * math.log(1 / (1 + math.exp(-m))) + (1 - p) * math.log(1 / (1 + math.exp(m))))
    one, _ = dpo.dpo_loss(torch.tensor([m]), torch.zeros(1), torch.zeros(1), torch.zeros(1), 1.0, torch.tensor([p]))
    assert one.item() == pytest.approx(by_hand)

    beta, ref = 0.5, torch.zeros(3)
    target = torch.tensor([2.0, 0.2, 2.0]) / beta  # chosen log-ratio that makes the margin the reward gap
    chosen = target.clone().requires_grad_(True)
    loss, _ = dpo.dpo_loss(chosen, torch.zeros(3), ref, ref, beta, data.label)
    loss.backward()
    assert chosen.grad.abs().max().item() < 1e-6
    for step in (-0.5, 0.5):  # either way off the target costs more
        worse, _ = dpo.dpo_loss(target + step, torch.zeros(3), ref, ref, beta, data.label)
        assert worse.item() > loss.item()
    hard = target.clone().requires_grad_(True)
    dpo.dpo_loss(hard, torch.zeros(3), ref, ref, beta)[0].backward()
    assert (hard.grad < 0).all()  # descent still raises every margin


def test_ptx_adds_the_corpus_loss():
    policy, pairs = tiny_gpt(), synthetic_pairs(16, seed=5)
    corpus = np.random.default_rng(0).integers(0, 50, 400).astype(np.uint16)
    params = DpoParams(learning_rate=1e-3, batch_size=8, warmup_steps=0, ptx_coef=0.5, ptx_batch_size=2,
                       logit_bias_lr=0.0)
    history = dpo.train_dpo(policy, frozen_copy(policy), pairs, params, "fp32", corpus=corpus)
    assert len(history) == 2 and all(row["ptx_loss"] > 0 for row in history)
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # the DPO loss alone, logged apart
    assert "ptx_loss" not in dpo.train_dpo(tiny_gpt(), frozen_copy(tiny_gpt()), pairs, params, "fp32")[0]


def test_a_logit_bias_trains_at_its_own_rate_and_learns_the_preferred_token():
    """With logit_bias_lr the policy gains a logit bias in an optimizer group of its own; trained on pairs
    whose chosen side holds MARK, that token's bias rises above those of the pairs' other tokens; with 0
    there is no bias."""
    pairs = synthetic_pairs(32, seed=8)
    policy = tiny_gpt()
    optimizer = dpo.dpo_optimizer(policy, 1e-4, logit_bias_lr=5e-2)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-4, 5e-2]
    assert optimizer.param_groups[1]["params"] == [policy.lm_head.bias] and policy.config.logit_bias
    policy = tiny_gpt()
    params = DpoParams(pairs="preferences", beta=0.1, learning_rate=1e-4, logit_bias_lr=5e-2, batch_size=8,
                       epochs=2, warmup_steps=0)
    dpo.train_dpo(policy, frozen_copy(tiny_gpt()), pairs, params, "fp32")
    bias = policy.lm_head.bias.detach()
    assert bias[MARK].item() > 0.1 and bias[MARK].item() > bias[:50].max().item()  # the pairs' other tokens: 0..49
    plain = tiny_gpt()
    dpo.train_dpo(plain, frozen_copy(tiny_gpt()), pairs, dataclasses.replace(params, logit_bias_lr=0.0), "fp32")
    assert plain.lm_head.bias is None and not plain.config.logit_bias


@pytest.mark.parametrize("key, value", [("beta", 0.0), ("beta", -0.1), ("learning_rate", 0.0), ("epochs", 0),
                                        ("batch_size", 0), ("grad_clip", 0.0), ("warmup_steps", -1),
                                        ("eval_interval", -5), ("ptx_coef", -0.1), ("ptx_batch_size", 0),
                                        ("pairs", "ranked"), ("ranked_pairs", 9), ("ranked_pairs", 0),
                                        ("logit_bias_lr", -1e-3)])
def test_params_reject_bad_values_naming_the_key(key, value):
    DpoParams().validate()
    with pytest.raises(ParamsError, match=rf"dpo\.{key} = "):
        DpoParams(**{key: value}).validate()


def test_ranked_pairs_are_at_most_half_the_samples():
    DpoParams(pairs="preferences").validate()
    with pytest.raises(ParamsError, match=r"dpo\.ranked_pairs = 3 is invalid; allowed: an integer from 1 to .* = 2"):
        DpoParams(ranked_samples=4, ranked_pairs=3).validate()
