"""Training over the vocabulary the training split actually uses, exactly.

Tiny Shakespeare uses 11,234 of GPT-2's 50,257 tokens. The other 39,023 never occur as an input or a
target, so training only ever pushes their logits down and nothing tells them apart. Here they share
one embedding row (the "unseen" row). The model is still a full GPT-2: expanding the shared row back to
39,023 identical rows gives the 50,257-row tied embedding, and its full-vocabulary softmax is computed
exactly over the 11,235 distinct rows, because n identical logits z contribute n * exp(z), i.e. one
logit z + log(n). The LM head, its softmax and its gradient, ~80% of a CPU step at 128 wide, shrink
4.5-fold.

Tying the unseen rows also lets the model put a sensible probability on a token it has never seen:
held-out text has them (2.1% of the val split's tokens), and an untied model drives them to ~18 nats
each. `unseen_smoothing` trains the shared row towards that mass: in training, that fraction of each
target's weight goes to "some unseen token" (label smoothing aimed at the unseen class only).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn as nn

from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT, ParamCounts
from tinygpt.model.vocabulary import CompactVocabulary


def good_turing_unseen_mass(tokens: np.ndarray) -> float:
    """Good-Turing's estimate of the probability that the next token is one never seen before: the
    fraction of the tokens whose type occurs exactly once (1.2% of Tiny Shakespeare's train split)."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64))
    return float((counts == 1).sum() / max(1, len(tokens)))


class ShortlistGPT(nn.Module):
    """A GPT over the compact vocabulary that scores full-vocabulary ids exactly as its expansion would.

    forward(idx, targets) takes and returns full-vocabulary ids and losses; only the logits are over the
    compact rows. In training mode the loss is the smoothed objective; in eval mode, the plain NLL.
    """

    def __init__(self, config: GPTConfig, vocab: CompactVocabulary, unseen_smoothing: float = 0.0):
        super().__init__()
        if vocab.vocab_size != config.vocab_size:
            raise ValueError(f"vocabulary of {vocab.vocab_size} tokens for a model of {config.vocab_size}")
        self.config = config  # the full model's: block size, vocabulary, width
        self.vocab = vocab
        shared = vocab.n_shared > 0
        self.unseen_smoothing = unseen_smoothing if shared else 0.0
        self.gpt = GPT(replace(config, vocab_size=vocab.n_rows))
        self.register_buffer("compact_ids", vocab.row_of_id.clone(), persistent=False)
        # log(n) on the shared row's logit stands for its n identical copies in the full softmax.
        self.register_buffer("logit_offset", vocab.log_counts, persistent=False)
        self.unseen_row = vocab.n_rows - 1 if shared else -1  # of_tokens puts the shared row last
        if shared:
            # The shared row's gradient is the sum of n identical per-row gradients, sqrt(n) times the
            # norm those rows would add to the full model's global gradient norm. Scaled back, clipping
            # sees the full model's norm and AdamW (blind to a tensor's scale) takes the full model's
            # step: training follows the full GPT whose unseen rows start equal, step for step.
            self.register_buffer("grad_scale", (1 / vocab.counts.double().sqrt()).float()[:, None], persistent=False)
            self.gpt.transformer.wte.weight.register_hook(lambda grad: grad * self.grad_scale)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Compact logits (batch, seq, compact rows; the shared row's is the whole unseen class) and the
        mean loss over targets >= 0, in nats per full-vocabulary token."""
        logits = self.gpt.lm_head(self.gpt.hidden_states(self.compact_ids[idx])) + self.logit_offset
        if targets is None:
            return logits, None
        flat, targets = logits.flatten(0, 1).float(), targets.flatten()
        keep = targets >= 0
        rows = self.compact_ids[targets.clamp(min=0)]
        log_z = torch.logsumexp(flat, dim=-1)
        nll = log_z - flat.gather(1, rows[:, None]).squeeze(1)
        if self.unseen_row >= 0:
            # An unseen target is one of n equally likely tokens of its class: log(n) more than the class.
            nll = nll + self.logit_offset[rows]
            if self.training and self.unseen_smoothing > 0:
                class_nll = log_z - flat[:, self.unseen_row]
                nll = (1 - self.unseen_smoothing) * nll + self.unseen_smoothing * class_nll
        keep = keep.to(nll.dtype)
        return logits, (nll * keep).sum() / keep.sum().clamp(min=1)

    def param_counts(self) -> ParamCounts:
        """The expanded GPT's counts: each unseen token adds one embedding row (and logit bias)."""
        compact = self.gpt.param_counts()
        per_token = self.config.n_embd + (1 if self.config.logit_bias else 0)  # its embedding row and bias
        extra_rows = (self.config.vocab_size - self.vocab.n_rows) * per_token
        return ParamCounts(total=compact.total + extra_rows, non_embedding=compact.non_embedding)

    @classmethod
    @torch.no_grad()
    def from_full(cls, gpt: GPT, vocab: CompactVocabulary, unseen_smoothing: float = 0.0) -> "ShortlistGPT":
        """The compact model of a full GPT, the inverse of to_full: the blocks, position embedding and
        LayerNorms copied, each seen token's embedding row (and logit bias) its own, the shared row the mean
        of the unseen tokens' rows: exactly theirs when they are equal, as in a GPT that to_full expanded."""
        model = cls(gpt.config, vocab, unseen_smoothing).to(gpt.transformer.wte.weight.device)
        state = dict(gpt.state_dict())
        state["transformer.wte.weight"] = state["lm_head.weight"] = row_means(state["transformer.wte.weight"], vocab)
        if "lm_head.bias" in state:
            state["lm_head.bias"] = row_means(state["lm_head.bias"], vocab)
        model.gpt.load_state_dict(state)
        model.train(gpt.training)
        return model

    @torch.no_grad()
    def to_full(self) -> GPT:
        """The equivalent 50,257-row GPT: every unseen token gets a copy of the shared row."""
        full = GPT(self.config).to(self.logit_offset.device)
        state = dict(self.gpt.state_dict())
        wte = state["transformer.wte.weight"][self.compact_ids]
        state["transformer.wte.weight"] = state["lm_head.weight"] = wte
        if "lm_head.bias" in state:  # model.logit_bias: the unseen tokens share their row's bias as its weights
            state["lm_head.bias"] = state["lm_head.bias"][self.compact_ids]
        full.load_state_dict(state)
        full.vocabulary = self.vocab
        full.train(self.training)
        return full


def row_means(values: torch.Tensor, vocab: CompactVocabulary) -> torch.Tensor:
    """Each compact row's mean of the full-vocabulary `values` (vocab_size, ...) of its ids. Summed in
    float64, n equal float32 values sum to exactly n times one, so equal rows give back that row exactly."""
    rows = vocab.row_of_id.to(values.device)
    sums = torch.zeros((vocab.n_rows, *values.shape[1:]), dtype=torch.float64, device=values.device)
    sums.index_add_(0, rows, values.double())
    counts = vocab.counts.to(values.device).double().reshape(-1, *[1] * (values.dim() - 1))
    return (sums / counts).to(values.dtype)
