"""The output layer as log-probs: the plain LM head, and an exact compact one for frozen embeddings.

RLHF needs the log-prob of a taken token and the entropy of the next-token distribution, not the logits
themselves. A model pretrained over the training vocabulary (tinygpt.model.shortlist) has 39,022 identical
rows in its 50,257-row tied embedding: every token the training split never uses shares one row. While
that embedding is frozen (PPO's and DPO's default), the full softmax is exactly a softmax over the 11,235
distinct rows, each row's logit raised by log(how many tokens share it). That makes the LM head, its
softmax and its backward 4.5 times smaller, with the same numbers as the full head up to rounding.
A per-token logit bias (GPT.add_logit_bias) enters each row as the mean of its tokens' biases; started
equal, the tokens of a row then get equal gradients and stay equal, so the two heads go on agreeing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tinygpt.model.gpt import GPT
from tinygpt.model.vocabulary import CompactVocabulary


# How far a logit bias may differ within a row and still count as equal (nats). CPU fused Adam updates a
# tensor's last (length mod vector width) entries in scalar code, which rounds differently from the vector
# lanes: the bias of id 50256, alone in that tail and in the shared row, drifts from its row-mates by
# ~1e-7 over a finetuning run. Without this the trained policies fell back to the full head (4.5x the work).
BIAS_ROUNDING = 1e-4


def sample_softmax(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row from softmax(logits / temperature), by inverting the CDF at a uniform draw.

    torch.multinomial draws an exponential variate for every one of the 50,257 entries of every row,
    which takes longer than the LM head itself; one uniform per row and a binary search do not.
    """
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum(dim=-1)
    u = torch.rand(logits.size(0), 1, generator=generator, device=logits.device) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max(logits.size(-1) - 1).squeeze(-1)


class FullHead:
    """Log-probs through the model's own LM head over the whole vocabulary."""

    def __init__(self, model: GPT):
        self.model = model

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits over the head's output rows (here every id): the softmax runs in fp32, whatever the
        matmul precision."""
        return self.model.lm_head(hidden).float()

    def _scaled(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        logits = self.logits(hidden)
        return logits if temperature == 1.0 else logits / temperature

    def logprobs(self, hidden: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Log-prob of each id (batch, seq) under softmax(logits / temperature)."""
        logits = self._scaled(hidden, temperature)
        # cross_entropy fuses log-softmax and the pick, forward and backward: no (batch, seq, vocab) log-probs kept
        nll = F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="none")
        return -nll.view(ids.shape)

    def entropy(self, hidden: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """Entropy (batch, seq) of the next-token distribution, in nats."""
        logp = F.log_softmax(self._scaled(hidden, temperature), dim=-1)
        return -(logp.exp() * logp).sum(dim=-1)

    def sample(self, hidden: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
        """One id per row of `hidden` (batch, n_embd) from softmax(logits / temperature)."""
        return sample_softmax(self.model.lm_head(hidden), temperature, generator)


class CompactHead(FullHead):
    """The same log-probs over the distinct rows of a frozen tied embedding, by the map the model was
    pretrained and saved with (GPT.vocabulary).

    A row shared by n tokens enters the softmax once with log(n) added to its logit (n equal terms
    exp(z) sum to exp(z + log n)); one of those tokens then has that row's probability divided by n. The
    same holds with a logit bias that is equal across each row's tokens (`of` checks, to BIAS_ROUNDING):
    the row adds their mean.
    """

    def __init__(self, model: GPT, vocab: CompactVocabulary):
        super().__init__(model)
        self.vocab = vocab = CompactVocabulary(vocab.row_of_id.to(model.lm_head.weight.device))
        self.rows = model.lm_head.weight[vocab.representatives()].detach().clone()  # (rows, n_embd), frozen

    @classmethod
    @torch.no_grad()
    def of(cls, model: GPT, min_saving: float = 2.0) -> "CompactHead | None":
        """The compact head of `model`, or None without a saved map (GPT-2) or when too few rows repeat.

        The rows are copied now: the caller must keep the embedding frozen (tuning.freeze_embeddings),
        or the compact head would go on scoring the old rows.
        """
        vocab = model.vocabulary
        if vocab is None or vocab.n_rows * min_saving > vocab.vocab_size:
            return None
        bias = model.lm_head.bias
        if not vocab.holds_for(model.lm_head.weight) or (
                bias is not None and not vocab.holds_for(bias, atol=BIAS_ROUNDING)):
            return None  # the embedding or a bias differs within a row: only the full head is exact
        return cls(model, vocab)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """fp32 logits over the distinct rows: each is the logit of every one of the row's tokens."""
        logits = F.linear(hidden, self.rows.to(hidden.dtype)).float()
        bias = self.row_bias()
        return logits if bias is None else logits + bias

    def _scaled(self, hidden: torch.Tensor, temperature: float) -> torch.Tensor:
        """Logits over the distinct rows, log-counts added: their logsumexp is the full vocabulary's."""
        return super()._scaled(hidden, temperature) + self.vocab.log_counts

    def row_bias(self) -> torch.Tensor | None:
        """Each row's logit bias (fp32): the mean over its tokens, so each of them gets 1/n of the row's
        gradient and, starting equal, they stay equal. None without a bias."""
        bias = self.model.lm_head.bias
        if bias is None:
            return None
        summed = torch.zeros(self.vocab.n_rows, device=bias.device).index_add(0, self.vocab.row_of_id, bias.float())
        return summed / self.vocab.counts

    def logprobs(self, hidden: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        rows = self.vocab.row_of_id[ids]
        return super().logprobs(hidden, rows, temperature) - self.vocab.log_counts[rows]

    def entropy(self, hidden: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        logp_rows = F.log_softmax(self._scaled(hidden, temperature), dim=-1)
        # each of a row's n tokens has log-prob logp_row - log n, and together they carry p_row
        return -(logp_rows.exp() * (logp_rows - self.vocab.log_counts)).sum(dim=-1)

    def sample(self, hidden: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
        """Inverse-CDF sampling over the rows with one uniform per row of `hidden`, as sample_softmax does;
        where the draw falls inside a shared row's interval picks one of its tokens, uniformly."""
        cdf = torch.softmax(self._scaled(hidden, temperature), dim=-1).cumsum(dim=-1)
        u = torch.rand(hidden.size(0), 1, generator=generator, device=hidden.device) * cdf[:, -1:]
        row = torch.searchsorted(cdf, u, right=True).clamp_max(cdf.size(-1) - 1)
        low = torch.where(row > 0, cdf.gather(1, (row - 1).clamp_min(0)), torch.zeros_like(u))
        within = (u - low) / (cdf.gather(1, row) - low).clamp_min(1e-30)  # uniform in [0, 1) inside the row
        count = self.vocab.counts[row]
        member = torch.minimum((within.clamp_min(0) * count).long(), count - 1)
        return self.vocab.ids_by_row[self.vocab.first_of_row[row] + member].squeeze(-1)


def output_head(model: GPT, compact: bool) -> FullHead:
    """The compact head when asked for and the embedding has enough repeated rows, else the full one."""
    head = CompactHead.of(model) if compact else None
    return head or FullHead(model)
