"""Params of the RLHF stages (preferences, reward, best_of_n, rlhf, dpo); torch-free.

Each class is a section of params.yaml: its comments say what the keys mean, and the defaults here are
its values (tests/pipeline/test_params.py checks that they agree)."""
from __future__ import annotations

from dataclasses import dataclass, field

from tinygpt.core.checks import non_negative, one_of, positive, require, unit_interval


@dataclass
class PreferencesParams:
    """params.yaml `preferences`: prompts cut from the text, sampled continuations, pairs labelled by an
    oracle."""

    start_model: str = "pretrain"  # pretrain | sft: the model every RLHF stage starts from (paths.start_model_dir)
    oracle: str = "sentiment"
    keyword: str = "love"
    min_margin: float = 0.0
    prompt_tokens: int = 8
    continuation_tokens: int = 24  # prompt_tokens + this + 1 must fit model.block_size (check_fits)
    train_prompts: int = 1536
    val_prompts: int = 256
    selection_prompts: int = 128  # of val_prompts; the rest are the report set
    samples_per_prompt: int = 4  # >= 2
    temperature: float = 1.0
    batch_size: int = 64
    seed: int = 1337

    def validate(self) -> None:
        one_of("preferences.start_model", self.start_model, ("pretrain", "sft"))
        one_of("preferences.oracle", self.oracle, ("sentiment", "brevity", "keyword"))
        if self.oracle == "keyword":
            require(bool(self.keyword.strip()), "preferences.keyword", "a non-empty word", self.keyword)
        non_negative("preferences.min_margin", self.min_margin)
        for key in ("prompt_tokens", "continuation_tokens", "train_prompts", "val_prompts", "selection_prompts",
                    "batch_size"):
            positive(f"preferences.{key}", getattr(self, key))
        require(self.selection_prompts < self.val_prompts, "preferences.selection_prompts",
                f"fewer than preferences.val_prompts = {self.val_prompts}, so the report set is not empty",
                self.selection_prompts)
        require(self.samples_per_prompt >= 2, "preferences.samples_per_prompt", "an integer >= 2", self.samples_per_prompt)
        positive("preferences.temperature", self.temperature)


@dataclass
class RewardParams:
    """params.yaml `reward`: the pretrained transformer plus a scalar head, trained on the pairs
    (Bradley-Terry)."""

    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 16
    warmup_steps: int = 10
    grad_clip: float = 1.0
    seed: int = 1337

    def validate(self) -> None:
        for key in ("learning_rate", "epochs", "batch_size", "grad_clip"):
            positive(f"reward.{key}", getattr(self, key))
        non_negative("reward.weight_decay", self.weight_decay)
        non_negative("reward.warmup_steps", self.warmup_steps)


@dataclass
class HeldOutParams:
    """params.yaml `heldout`: how best-of-n and every finetuned model are evaluated on the held-out
    prompts, and which evaluated point a finetuning run reports."""

    samples_per_prompt: int = 2
    temperature: float = 1.0
    seed: int = 1337
    batch_size: int = 256
    kl_budget: float = 6.0
    perplexity_budget: float = 0.10

    def validate(self) -> None:
        for key in ("samples_per_prompt", "temperature", "batch_size", "kl_budget", "perplexity_budget"):
            positive(f"heldout.{key}", getattr(self, key))


@dataclass
class BestOfNParams:
    """params.yaml `best_of_n`: the reranking baseline, reference samples picked by the reward model."""

    max_n: int = 64  # samples per held-out prompt; the curve has n = 1, 2, 4, ..., max_n
    # The deep curve, measured as far as the policies go: deep_n samples for each of the first deep_prompts
    # report prompts (best-of-n's KL, log n - (n-1)/n, is 5.24 at n = 512 and 5.93 at 1024); 0 prompts: none
    deep_n: int = 1024
    deep_prompts: int = 32
    # soft best-of-max_n (the tilt pi_ref * exp(r / beta) on the same samples) at these KL coefficients
    soft_betas: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.3, 0.2, 0.15, 0.1])

    def validate(self) -> None:
        require(self.max_n >= 2 and self.max_n & (self.max_n - 1) == 0, "best_of_n.max_n",
                "a power of two >= 2", self.max_n)
        require(self.deep_n >= self.max_n and self.deep_n & (self.deep_n - 1) == 0, "best_of_n.deep_n",
                f"a power of two >= best_of_n.max_n ({self.max_n})", self.deep_n)
        non_negative("best_of_n.deep_prompts", self.deep_prompts)
        require(isinstance(self.soft_betas, list) and len(self.soft_betas) > 0, "best_of_n.soft_betas",
                "a non-empty list of numbers > 0", self.soft_betas)
        for i, beta in enumerate(self.soft_betas):
            require(isinstance(beta, (int, float)) and not isinstance(beta, bool) and beta > 0,
                    f"best_of_n.soft_betas[{i}]", "a number > 0", beta)


@dataclass
class RlhfParams:
    """params.yaml `rlhf`: PPO against the reward model with a per-token KL penalty to the frozen
    pretrained model."""

    steps: int = 80
    batch_size: int = 32
    minibatch_size: int = 16  # divides batch_size
    ppo_epochs: int = 2
    temperature: float = 1.0
    learning_rate: float = 5e-5
    logit_bias_lr: float = 1e-2  # learning rate of a per-token logit bias the policy gains (GPT.add_logit_bias); 0 = none
    adaptive_kl: bool = True
    init_kl_coef: float = 0.05
    target_kl: float = 4.0
    kl_horizon: int = 500
    advantage: str = "gae"
    samples_per_prompt: int = 1
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ptx_coef: float = 0.5
    ptx_batch_size: int = 4
    grad_clip: float = 1.0
    eval_interval: int = 20
    seed: int = 1337

    def validate(self) -> None:
        for key in ("steps", "batch_size", "minibatch_size", "ppo_epochs", "temperature", "learning_rate",
                    "target_kl", "kl_horizon", "grad_clip", "eval_interval"):
            positive(f"rlhf.{key}", getattr(self, key))
        require(self.batch_size % self.minibatch_size == 0, "rlhf.minibatch_size",
                f"a divisor of rlhf.batch_size = {self.batch_size}", self.minibatch_size)
        one_of("rlhf.advantage", self.advantage, ("gae", "rloo"))
        positive("rlhf.samples_per_prompt", self.samples_per_prompt)
        require(self.batch_size % self.samples_per_prompt == 0, "rlhf.samples_per_prompt",
                f"a divisor of rlhf.batch_size = {self.batch_size}", self.samples_per_prompt)
        if self.advantage == "rloo":
            require(self.samples_per_prompt >= 2, "rlhf.samples_per_prompt",
                    "at least 2 with rlhf.advantage: rloo (the baseline is the other samples' mean)",
                    self.samples_per_prompt)
        for key in ("init_kl_coef", "vf_coef", "ptx_coef", "logit_bias_lr"):
            non_negative(f"rlhf.{key}", getattr(self, key))
        positive("rlhf.ptx_batch_size", self.ptx_batch_size)
        for key in ("gamma", "lam"):
            unit_interval(f"rlhf.{key}", getattr(self, key))
        for key in ("cliprange", "cliprange_value"):
            positive(f"rlhf.{key}", getattr(self, key))


@dataclass
class DpoParams:
    """params.yaml `dpo`: Direct Preference Optimization of the pretrained model on the preference pairs,
    against a frozen copy of it (the reference); with `pairs: reward_ranked`, on pairs of its own samples
    that the reward model ranked (tinygpt.rlhf.ranked_pairs)."""

    # preferences: the labelled pairs, hard labels (chosen wins); reward_ranked: reference samples ranked by the
    # reward model, soft labels (sigmoid of the reward difference)
    pairs: str = "reward_ranked"
    ranked_samples: int = 16  # reward_ranked: continuations per train prompt; the best and the worst form its pair
    ranked_pairs: int = 8  # reward_ranked: pairs per prompt (best/worst, 2nd best/2nd worst, ...), <= ranked_samples / 2
    # reward_ranked: ranking score = reward - this * repeated-word share (tinygpt.rlhf.ranked_pairs); 0 = the reward
    repetition_penalty: float = 4.0
    beta: float = 0.2  # strength of the implicit KL to the reference: reward = beta * log(policy / ref)
    learning_rate: float = 2e-5
    epochs: int = 1
    batch_size: int = 16  # pairs per step
    warmup_steps: int = 10
    grad_clip: float = 1.0
    ptx_coef: float = 0.1  # weight of the next-token loss on train-split windows (as rlhf.ptx_coef); 0 = off
    ptx_batch_size: int = 2
    logit_bias_lr: float = 1e-2  # learning rate of a per-token logit bias the policy gains (GPT.add_logit_bias); 0 = none
    eval_interval: int = 96  # steps between held-out evaluations; 0 = only at the start and the end
    seed: int = 1337

    def validate(self) -> None:
        for key in ("beta", "learning_rate", "epochs", "batch_size", "grad_clip"):
            positive(f"dpo.{key}", getattr(self, key))
        positive("dpo.ptx_batch_size", self.ptx_batch_size)
        for key in ("warmup_steps", "eval_interval", "ptx_coef", "logit_bias_lr", "repetition_penalty"):
            non_negative(f"dpo.{key}", getattr(self, key))
        one_of("dpo.pairs", self.pairs, ("preferences", "reward_ranked"))
        require(self.ranked_samples >= 2, "dpo.ranked_samples", "an integer >= 2 (a best and a worst)",
                self.ranked_samples)
        require(1 <= self.ranked_pairs <= self.ranked_samples // 2, "dpo.ranked_pairs",
                f"an integer from 1 to dpo.ranked_samples / 2 = {self.ranked_samples // 2} (no sample in two pairs)",
                self.ranked_pairs)
