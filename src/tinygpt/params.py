"""Every hyperparameter as a typed dataclass, one per section of params.yaml, with validation.

Each stage loads only its own sections; dvc.yaml declares exactly the keys those sections hold, so DVC
reruns a stage when, and only when, one of them changes.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tinygpt.config import GPTConfig
from tinygpt.errors import TinyGptError

PARAMS_FILE = Path("params.yaml")


class ParamsError(TinyGptError, ValueError):
    """A problem in params.yaml, with the key at fault and what is allowed."""


# ---------------------------------------------------------------- checks used by the validate() methods


def require(condition: bool, key: str, allowed: str, value: Any) -> None:
    if not condition:
        raise ParamsError(f"params.yaml: {key} = {value!r} is invalid; allowed: {allowed}")


def positive(key: str, value: float) -> None:
    require(value > 0, key, "a number > 0", value)


def non_negative(key: str, value: float) -> None:
    require(value >= 0, key, "a number >= 0", value)


def fraction(key: str, value: float) -> None:
    """Strictly inside (0, 1)."""
    require(0 < value < 1, key, "a fraction strictly between 0 and 1", value)


def unit_interval(key: str, value: float) -> None:
    """Inside [0, 1]."""
    require(0 <= value <= 1, key, "a number in [0, 1]", value)


def one_of(key: str, value: str, choices: tuple[str, ...]) -> None:
    require(value in choices, key, "one of " + ", ".join(choices), value)


# ---------------------------------------------------------------- sections


@dataclass
class TrackingParams:
    """MLflow: which experiment every stage logs its run to."""

    experiment: str = "tinygpt"

    def validate(self) -> None:
        require(bool(self.experiment.strip()), "tracking.experiment", "a non-empty name", self.experiment)


@dataclass
class DataParams:
    """Where the raw corpus comes from and the checksum that pins it."""

    url: str = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    sha256: str = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    mirrors: list[str] = field(default_factory=list)
    timeout_s: float = 30.0

    def validate(self) -> None:
        require(bool(self.url.strip()), "data.url", "a URL (https, http, file) or a local path", self.url)
        is_hex = len(self.sha256) == 64 and all(c in "0123456789abcdef" for c in self.sha256.lower())
        require(is_hex, "data.sha256", "64 hexadecimal characters (sha256sum of the corpus)", self.sha256)
        for i, mirror in enumerate(self.mirrors):
            require(bool(mirror.strip()), f"data.mirrors[{i}]", "a URL or a local path", mirror)
        positive("data.timeout_s", self.timeout_s)


@dataclass
class TokenizeParams:
    """Which tokenizer turns the corpus into ids."""

    encoding: str = "gpt2"

    def validate(self) -> None:
        one_of("tokenize.encoding", self.encoding, ("gpt2",))


@dataclass
class SplitParams:
    """The contiguous train/val split, by characters, cut at a token boundary."""

    val_fraction: float = 0.1

    def validate(self) -> None:
        fraction("split.val_fraction", self.val_fraction)


RLHF_DEVICES = ("auto", "cpu", "cuda", "mps")  # as tinygpt.device, which imports torch
RLHF_PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainParams:
    """Pretraining: AdamW (or Muon + AdamW) on random windows of train.bin, linear warmup then cosine decay
    to a floor."""

    max_steps: int = 2000  # optimizer steps
    batch_size: int = 16  # windows of model.block_size tokens per micro-batch
    grad_accum_steps: int = 1  # micro-batches averaged into one optimizer step
    learning_rate: float = 1e-3  # peak, reached at the end of the warmup
    min_lr: float = 1e-4  # floor of the cosine decay, reached at max_steps
    warmup_steps: int = 100  # linear from learning_rate / warmup_steps
    weight_decay: float = 0.1  # matrices and embeddings only; biases and LayerNorm gains are not decayed
    optimizer: str = "adamw"  # adamw, or muon: Muon on the blocks' matrices, AdamW on the rest
    muon_momentum: float = 0.95  # Muon's (Nesterov) momentum; AdamW's betas are beta1 and beta2
    muon_weight_decay: float = 0.1  # Muon's decoupled weight decay; weight_decay is then AdamW's (embeddings)
    adamw_lr_scale: float = 1.0  # with muon: AdamW's part (embeddings, biases, gains) at this x learning_rate
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 = no clipping
    shortlist_vocab: bool = True  # tokens absent from train.bin share one row; exact softmax over the rest
    unseen_smoothing: float = 0.0  # with shortlist_vocab: target mass moved to "a token never seen in training"
    input_noise: float = 0.0  # fraction of input tokens replaced by unigram draws (targets stay clean)
    eval_interval: int = 250  # steps between estimates of train/val loss on the fixed batches
    eval_batches: int = 4  # fixed batches per split in each estimate
    checkpoint_interval: int = 250  # steps between checkpoints (.cache/pretrain/<config hash>/)
    log_interval: int = 10  # steps between updates of the progress bar's loss and tokens/s
    seed: int = 1337  # initial weights, batches and dropout
    device: str = "auto"  # auto (CUDA, then MPS, then CPU), cpu, cuda, mps
    precision: str = "auto"  # auto (bf16 autocast where measured safe and fast), fp32, bf16
    compile: bool = False  # torch.compile the model (compile time counts toward the stage's wall time)
    threads: int = 0  # CPU threads of torch; 0 = torch's default (one per core)
    sample_prompts: list[str] = field(default_factory=lambda: ["ROMEO:", "To be or not to"])
    sample_tokens: int = 64  # new tokens per prompt after training
    sample_temperature: float = 0.8  # 0 = greedy
    sample_top_k: int | None = 200  # null = no top-k filter

    def validate(self) -> None:
        for key in ("max_steps", "batch_size", "grad_accum_steps", "learning_rate", "eval_interval",
                    "eval_batches", "checkpoint_interval", "log_interval"):
            positive(f"train.{key}", getattr(self, key))
        require(0 <= self.min_lr <= self.learning_rate, "train.min_lr",
                f"a number in [0, train.learning_rate = {self.learning_rate}]", self.min_lr)
        require(0 <= self.warmup_steps <= self.max_steps, "train.warmup_steps",
                f"an integer in [0, train.max_steps = {self.max_steps}]", self.warmup_steps)
        non_negative("train.weight_decay", self.weight_decay)
        one_of("train.optimizer", self.optimizer, ("adamw", "muon"))
        require(0 <= self.muon_momentum < 1, "train.muon_momentum", "a number in [0, 1)", self.muon_momentum)
        non_negative("train.muon_weight_decay", self.muon_weight_decay)
        positive("train.adamw_lr_scale", self.adamw_lr_scale)
        require(self.optimizer == "muon" or self.adamw_lr_scale == 1, "train.adamw_lr_scale",
                "1 unless train.optimizer is muon (it scales the AdamW part beside Muon)", self.adamw_lr_scale)
        for key in ("beta1", "beta2"):
            require(0 <= getattr(self, key) < 1, f"train.{key}", "a number in [0, 1)", getattr(self, key))
        non_negative("train.grad_clip", self.grad_clip)
        require(0 <= self.unseen_smoothing < 1, "train.unseen_smoothing", "a number in [0, 1)", self.unseen_smoothing)
        require(self.shortlist_vocab or self.unseen_smoothing == 0, "train.unseen_smoothing",
                "0 unless train.shortlist_vocab is true (the smoothing targets the shared unseen row)",
                self.unseen_smoothing)
        require(0 <= self.input_noise < 1, "train.input_noise", "a number in [0, 1)", self.input_noise)
        one_of("train.device", self.device, RLHF_DEVICES)
        one_of("train.precision", self.precision, RLHF_PRECISIONS)
        non_negative("train.threads", self.threads)
        for i, prompt in enumerate(self.sample_prompts):
            require(bool(prompt), f"train.sample_prompts[{i}]", "a non-empty string", prompt)
        non_negative("train.sample_tokens", self.sample_tokens)
        non_negative("train.sample_temperature", self.sample_temperature)
        if self.sample_top_k is not None:
            positive("train.sample_top_k", self.sample_top_k)


@dataclass
class PreferencesParams:
    """Preference data: prompts cut from the text, sampled continuations, pairs labelled by an oracle."""

    oracle: str = "sentiment"  # sentiment (VADER compound), brevity (fewer tokens), keyword (word present)
    keyword: str = "love"  # used only by the keyword oracle
    min_margin: float = 0.0  # pairs whose oracle scores differ by no more than this are ties, dropped
    prompt_tokens: int = 8
    continuation_tokens: int = 24  # also the length of PPO's responses, so the reward model sees the same
    train_prompts: int = 768  # from the train split: reward-model pairs and PPO's rollout prompts
    val_prompts: int = 128  # from the val split: held-out pairs and the before/after evaluation
    samples_per_prompt: int = 4  # every two of a prompt's samples form a pair
    temperature: float = 1.0
    batch_size: int = 64  # prompts sampled at once
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        one_of("preferences.oracle", self.oracle, ("sentiment", "brevity", "keyword"))
        if self.oracle == "keyword":
            require(bool(self.keyword.strip()), "preferences.keyword", "a non-empty word", self.keyword)
        non_negative("preferences.min_margin", self.min_margin)
        for key in ("prompt_tokens", "continuation_tokens", "train_prompts", "val_prompts", "batch_size"):
            positive(f"preferences.{key}", getattr(self, key))
        require(self.samples_per_prompt >= 2, "preferences.samples_per_prompt", "an integer >= 2", self.samples_per_prompt)
        positive("preferences.temperature", self.temperature)
        one_of("preferences.device", self.device, RLHF_DEVICES)
        one_of("preferences.precision", self.precision, RLHF_PRECISIONS)


@dataclass
class RewardParams:
    """Reward model: the pretrained transformer plus a scalar head, trained on the pairs (Bradley-Terry)."""

    learning_rate: float = 3e-4
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 16  # pairs per step
    warmup_steps: int = 10  # then linear decay to zero
    grad_clip: float = 1.0
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        for key in ("learning_rate", "epochs", "batch_size", "grad_clip"):
            positive(f"reward.{key}", getattr(self, key))
        non_negative("reward.weight_decay", self.weight_decay)
        non_negative("reward.warmup_steps", self.warmup_steps)
        one_of("reward.device", self.device, RLHF_DEVICES)
        one_of("reward.precision", self.precision, RLHF_PRECISIONS)


@dataclass
class RlhfParams:
    """PPO against the reward model with a per-token KL penalty to the frozen pretrained model."""

    steps: int = 80  # rollout batches
    batch_size: int = 32  # rollouts per step
    minibatch_size: int = 16
    ppo_epochs: int = 2  # passes over each rollout batch
    temperature: float = 1.0  # sampling and log-prob temperature of the rollouts
    learning_rate: float = 2e-4
    train_embeddings: bool = False  # the tied token embedding / LM head and the positions stay frozen
    adaptive_kl: bool = True  # adapt beta toward target_kl (TRL's AdaptiveKLController); else fixed
    init_kl_coef: float = 0.05  # beta at the start
    target_kl: float = 4.0  # nats per sequence
    kl_horizon: int = 500  # rollouts over which beta may change by about 20%
    gamma: float = 1.0
    lam: float = 0.95  # GAE lambda
    cliprange: float = 0.2  # PPO's policy ratio clip
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    ptx_coef: float = 0.5  # weight of the language-modelling loss on the corpus (PPO-ptx); 0 = plain PPO
    ptx_batch_size: int = 16  # corpus windows (of the model's context) per gradient step
    grad_clip: float = 1.0
    eval_samples_per_prompt: int = 2  # continuations per held-out prompt, before and after
    table_samples: int = 8  # rows of the before/after sample table
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        for key in ("steps", "batch_size", "minibatch_size", "ppo_epochs", "temperature", "learning_rate",
                    "target_kl", "kl_horizon", "grad_clip", "eval_samples_per_prompt"):
            positive(f"rlhf.{key}", getattr(self, key))
        require(self.batch_size % self.minibatch_size == 0, "rlhf.minibatch_size",
                f"a divisor of rlhf.batch_size = {self.batch_size}", self.minibatch_size)
        for key in ("init_kl_coef", "vf_coef", "ptx_coef", "table_samples"):
            non_negative(f"rlhf.{key}", getattr(self, key))
        positive("rlhf.ptx_batch_size", self.ptx_batch_size)
        for key in ("gamma", "lam"):
            unit_interval(f"rlhf.{key}", getattr(self, key))
        for key in ("cliprange", "cliprange_value"):
            positive(f"rlhf.{key}", getattr(self, key))
        one_of("rlhf.device", self.device, RLHF_DEVICES)
        one_of("rlhf.precision", self.precision, RLHF_PRECISIONS)


DEFAULT_PROMPTS = ["To be or not to", "ROMEO:", "First Citizen:\nBefore we proceed any further, hear me speak."]


@dataclass
class EvalParams:
    """Evaluation: likelihood in context windows, calibration, next-token inspection and samples."""

    context: int = 0  # tokens per window; 0 = the model's block_size
    stride: int = 64  # new tokens scored per window; stride = context gives non-overlapping windows
    batch_size: int = 16  # windows per forward pass
    train_tokens: int = 32768  # train-split sample scored (0 = the whole split)
    train_segments: int = 8  # the sample is this many evenly spaced runs of the split
    calibration_bins: int = 15
    temperature_max_iter: int = 30  # Newton steps of the temperature fit
    temperature_tol: float = 1e-6  # stop when 1/T changes by less than this, relatively
    prompts: list[str] = field(default_factory=lambda: list(DEFAULT_PROMPTS))
    inspect_top_k: int = 10  # next tokens listed per prompt
    sample_max_new_tokens: int = 100
    sample_temperature: float = 0.8  # 0 = greedy
    sample_top_k: int | None = 200  # null = no top-k filter
    sample_top_p: float | None = None  # null = no nucleus filter
    sample_seed: int = 1337  # prompt i is sampled with seed + i
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        non_negative("eval.context", self.context)
        positive("eval.stride", self.stride)
        if self.context:
            require(self.stride <= self.context, "eval.stride", f"1..eval.context = {self.context}", self.stride)
        for key in ("batch_size", "train_segments", "calibration_bins", "temperature_max_iter",
                    "temperature_tol", "inspect_top_k"):
            positive(f"eval.{key}", getattr(self, key))
        non_negative("eval.train_tokens", self.train_tokens)
        require(len(self.prompts) > 0, "eval.prompts", "a non-empty list of prompts", self.prompts)
        for i, prompt in enumerate(self.prompts):
            require(bool(prompt), f"eval.prompts[{i}]", "a non-empty string", prompt)
        non_negative("eval.sample_max_new_tokens", self.sample_max_new_tokens)
        non_negative("eval.sample_temperature", self.sample_temperature)
        if self.sample_top_k is not None:
            positive("eval.sample_top_k", self.sample_top_k)
        if self.sample_top_p is not None:
            require(0 < self.sample_top_p <= 1, "eval.sample_top_p", "null or a number in (0, 1]", self.sample_top_p)
        one_of("eval.device", self.device, RLHF_DEVICES)
        one_of("eval.precision", self.precision, RLHF_PRECISIONS)


@dataclass
class CompareParams:
    """Our model against Hugging Face's GPT-2: fidelity of the export, a pretrained GPT-2 through the
    evaluate stage's code, and speed of the two implementations side by side."""

    pretrained: str = "openai-community/gpt2"  # a hub id (cache first) or a local directory
    require_pretrained: bool = False  # true: a missing pretrained model fails the stage
    allow_download: bool = True  # try the Hub when the cache misses (never with HF_HUB_OFFLINE=1)
    pretrained_context: int = 0  # GPT-2's evaluation window; 0 = the same as our model's
    fidelity_tokens: int = 0  # val tokens run through both implementations; 0 = the whole split
    fidelity_batch_size: int = 8  # windows per forward pass
    speed_batch_size: int = 8
    speed_seq_len: int = 0  # 0 = our model's block_size (for every model timed)
    speed_warmup: int = 1
    speed_repeats: int = 5
    speed_threads: int = 0  # 0 = torch's default (all cores)
    speed_pretrained: bool = True  # also time the pretrained model's shape, when it is available
    speed_precision: str = "auto"  # autocast of the speed runs; fidelity is always fp32 (device: eval.device)

    def validate(self) -> None:
        require(bool(self.pretrained.strip()), "compare.pretrained", "a hub id or a local directory", self.pretrained)
        for key in ("pretrained_context", "fidelity_tokens", "speed_seq_len", "speed_warmup", "speed_threads"):
            non_negative(f"compare.{key}", getattr(self, key))
        for key in ("fidelity_batch_size", "speed_batch_size", "speed_repeats"):
            positive(f"compare.{key}", getattr(self, key))
        require(self.fidelity_tokens != 1, "compare.fidelity_tokens", "0 (all) or at least 2 tokens", 1)
        one_of("compare.speed_precision", self.speed_precision, RLHF_PRECISIONS)


# Section name in params.yaml -> its dataclass. Later stages add theirs here.
SECTIONS: dict[str, type] = {
    "tracking": TrackingParams,
    "data": DataParams,
    "tokenize": TokenizeParams,
    "split": SplitParams,
    "model": GPTConfig,
    "train": TrainParams,
    "eval": EvalParams,
    "compare": CompareParams,
    "preferences": PreferencesParams,
    "reward": RewardParams,
    "rlhf": RlhfParams,
}


# ---------------------------------------------------------------- loading


def read_yaml(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found; run from the repository root (where params.yaml lives)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections at the top level")
    return raw


def build_section(name: str, values: Any) -> Any:
    """Turn one mapping from params.yaml into its validated dataclass."""
    if name not in SECTIONS:
        raise ParamsError(f"params.yaml: unknown section '{name}'; known sections: {', '.join(SECTIONS)}")
    cls = SECTIONS[name]
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise ParamsError(f"params.yaml: section '{name}' must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise ParamsError(
                f"params.yaml: unknown key '{name}.{key}'; keys of '{name}': {', '.join(known)}"
            )
    kwargs = {key: coerce(f"{name}.{key}", value, hints[key]) for key, value in values.items()}
    section = cls(**kwargs)
    section.validate()
    return section


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against a type hint; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(key, value, inner[0])
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"params.yaml: {key} must be a list, got {type(value).__name__} {value!r}")
        return [coerce(f"{key}[{i}]", item, args[0]) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"params.yaml: {key} must be a mapping, got {value!r}")
        return {k: coerce(f"{key}.{k}", v, args[1]) for k, v in value.items()}
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"params.yaml: {key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ParamsError(f"params.yaml: {key} must be finite, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"params.yaml: {key} must be an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"params.yaml: {key} must be true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"params.yaml: {key} must be a string, got {value!r}")
        return value
    return value


def load_sections(*names: str, path: str | Path = PARAMS_FILE) -> types.SimpleNamespace:
    """Load and validate only the named sections (a stage reads only its own keys)."""
    raw = read_yaml(path)
    return types.SimpleNamespace(**{name: build_section(name, raw.get(name)) for name in names})


def load_all(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """Every section of params.yaml, validated; unknown sections are errors."""
    raw = read_yaml(path)
    for name in raw:
        if name not in SECTIONS:
            raise ParamsError(f"params.yaml: unknown section '{name}'; known sections: {', '.join(SECTIONS)}")
    return {name: build_section(name, raw.get(name)) for name in SECTIONS}


def as_dict(section: Any) -> dict[str, Any]:
    return dataclasses.asdict(section)


def flatten(sections: dict[str, Any] | types.SimpleNamespace) -> dict[str, Any]:
    """{'train.learning_rate': 0.001, ...}: the dotted keys DVC and MLflow use."""
    items = vars(sections) if isinstance(sections, types.SimpleNamespace) else sections
    flat: dict[str, Any] = {}
    for name, section in items.items():
        for key, value in as_dict(section).items():
            flat[f"{name}.{key}"] = value
    return flat


def dvc_keys(*names: str) -> list[str]:
    """The dotted keys of these sections, as dvc.yaml must list them (checked by a test)."""
    return [f"{name}.{f.name}" for name in names for f in dataclasses.fields(SECTIONS[name])]
