"""Sampling continuations of prompts and scoring them token by token.

Shared by the preference data (sample several continuations per prompt), PPO (rollouts, log-probs of the
policy and the reference) and the before/after evaluation. Rollouts sample from the plain softmax at a
temperature, with no top-k or top-p: the log-probs PPO and the KL penalty use must be those of the
distribution the tokens were actually drawn from.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tinygpt.core.device import autocast
from tinygpt.data.tokenizer import EOT_ID, decode
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import FullHead, output_head
from tinygpt.model.sampling import generate


@dataclass
class Rollout:
    """Prompts and their sampled continuations, one row each, padded with end-of-text to one length."""

    sequences: torch.Tensor  # (batch, prompt_len + response_len) ids
    prompt_len: int
    mask: torch.Tensor  # (batch, response_len) 1.0 for response tokens up to and including the first EOT

    @property
    def responses(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_len :]

    @property
    def last_index(self) -> torch.Tensor:
        """Position in `sequences` of each row's last response token (where a reward model reads)."""
        return self.prompt_len + self.mask.sum(dim=1).long() - 1

    def response_ids(self) -> list[list[int]]:
        """Each row's response ids, up to and including the first end-of-text."""
        lengths = self.mask.sum(dim=1).long().tolist()
        return [row[:n] for row, n in zip(self.responses.tolist(), lengths)]

    def texts(self) -> list[str]:
        """Each row's response as text, without the end-of-text token."""
        return [decode([i for i in ids if i != EOT_ID]) for ids in self.response_ids()]


def response_mask(responses: torch.Tensor, eot_id: int = EOT_ID) -> torch.Tensor:
    """1.0 up to and including each row's first end-of-text, 0.0 after it (the padding)."""
    is_eot = (responses == eot_id).long()
    eots_before = is_eot.cumsum(dim=1) - is_eot
    return (eots_before == 0).float()


@torch.no_grad()
def sample(
    model: GPT,
    prompts: torch.Tensor,
    max_new_tokens: int,
    temperature: float,
    generator: torch.Generator,
    precision: str = "fp32",
    head: FullHead | None = None,
    batch_size: int | None = None,
) -> Rollout:
    """Continue every prompt (batch, prompt_len) by `max_new_tokens` ids drawn at `temperature` (through
    `head`, by default the compact head when the model has one: the same distribution for a fraction of
    the work; else the full LM head), `batch_size` prompts at a time (None: all at once). The default
    copies the embedding rows now: a model in training passes its own head (tuning.freeze_embeddings)."""
    head = head or output_head(model, compact=True)
    parts = [sample_batch(model, chunk, max_new_tokens, temperature, generator, precision, head)
             for chunk in prompts.split(batch_size or max(1, len(prompts)))]
    sequences = torch.cat(parts)
    return Rollout(sequences, prompts.size(1), response_mask(sequences[:, prompts.size(1) :]))


def sample_batch(
    model: GPT, prompts: torch.Tensor, max_new_tokens: int, temperature: float, generator: torch.Generator,
    precision: str, head: FullHead,
) -> torch.Tensor:
    """One batch's sequences (batch, prompt_len + max_new_tokens), padded with end-of-text."""
    with autocast(prompts.device, precision):
        sequences = generate(model, prompts, max_new_tokens, temperature, eot_id=EOT_ID, generator=generator,
                             head=head)
    # Decoding stops once every row has ended; pad so every batch has the same shape.
    return F.pad(sequences, (0, prompts.size(1) + max_new_tokens - sequences.size(1)), value=EOT_ID)


def action_hidden(model: GPT, sequences: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Hidden states (batch, response_len, n_embd) at the positions that predict each response token."""
    return model.hidden_states(sequences)[:, prompt_len - 1 : -1, :]


def token_logprobs(
    model: GPT, sequences: torch.Tensor, prompt_len: int, temperature: float = 1.0, precision: str = "fp32",
    head: FullHead | None = None,
) -> torch.Tensor:
    """Log-probs (batch, len - prompt_len) of each row's tokens after its prompt under `model` at
    `temperature` (through `head`, by default its full LM head): the one log-prob of a continuation that PPO,
    DPO and the held-out KL use. Gradients flow unless the caller disables them."""
    head = head or FullHead(model)
    with autocast(sequences.device, precision):
        return head.logprobs(action_hidden(model, sequences, prompt_len), sequences[:, prompt_len:], temperature)
