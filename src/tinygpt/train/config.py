"""Params of pretraining (the train section of params.yaml); torch-free."""
from __future__ import annotations

from dataclasses import dataclass

from tinygpt.core.checks import non_negative, one_of, positive, require

SCRATCH = "scratch"  # train.init_from: random initial weights


@dataclass
class TrainParams:
    """Pretraining: AdamW (or Muon + AdamW) on random windows of train.bin, linear warmup then cosine decay
    to a floor. The `train` section of params.yaml, whose comments say what the keys mean; the defaults
    are its values (tests/pipeline/test_params.py checks)."""

    max_steps: int = 1050
    batch_size: int = 16
    grad_accum_steps: int = 1
    learning_rate: float = 3e-3
    min_lr: float = 3e-4  # <= learning_rate
    warmup_steps: int = 60  # <= max_steps
    weight_decay: float = 0.5
    optimizer: str = "muon"
    muon_momentum: float = 0.95
    muon_weight_decay: float = 2.0
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    shortlist_vocab: bool = True
    unseen_smoothing: float = 0.02  # 0 unless shortlist_vocab
    input_noise: float = 0.1
    eval_interval: int = 150
    eval_batches: int = 4
    checkpoint_interval: int = 350
    seed: int = 1337
    init_from: str = SCRATCH  # or a model directory or a Hugging Face hub id: its weights are the start
    compile: bool = True
    threads: int = 0
    nproc_per_node: int = 1

    def validate(self) -> None:
        for key in ("max_steps", "batch_size", "grad_accum_steps", "learning_rate", "eval_interval",
                    "eval_batches", "checkpoint_interval", "nproc_per_node"):
            positive(f"train.{key}", getattr(self, key))
        require(self.batch_size % self.nproc_per_node == 0, "train.batch_size",
                f"a multiple of train.nproc_per_node = {self.nproc_per_node} (each process takes an equal share)",
                self.batch_size)
        require(0 <= self.min_lr <= self.learning_rate, "train.min_lr",
                f"a number in [0, train.learning_rate = {self.learning_rate}]", self.min_lr)
        require(0 <= self.warmup_steps <= self.max_steps, "train.warmup_steps",
                f"an integer in [0, train.max_steps = {self.max_steps}]", self.warmup_steps)
        non_negative("train.weight_decay", self.weight_decay)
        one_of("train.optimizer", self.optimizer, ("adamw", "muon"))
        require(0 <= self.muon_momentum < 1, "train.muon_momentum", "a number in [0, 1)", self.muon_momentum)
        non_negative("train.muon_weight_decay", self.muon_weight_decay)
        for key in ("beta1", "beta2"):
            require(0 <= getattr(self, key) < 1, f"train.{key}", "a number in [0, 1)", getattr(self, key))
        non_negative("train.grad_clip", self.grad_clip)
        require(0 <= self.unseen_smoothing < 1, "train.unseen_smoothing", "a number in [0, 1)", self.unseen_smoothing)
        require(self.shortlist_vocab or self.unseen_smoothing == 0, "train.unseen_smoothing",
                "0 unless train.shortlist_vocab is true (the smoothing targets the shared unseen row)",
                self.unseen_smoothing)
        require(0 <= self.input_noise < 1, "train.input_noise", "a number in [0, 1)", self.input_noise)
        non_negative("train.threads", self.threads)
        require(isinstance(self.init_from, str) and self.init_from.strip() != "", "train.init_from",
                f"{SCRATCH}, a model directory or a Hugging Face hub id", self.init_from)
