"""Negative log-likelihood of a token split in windows of the model's context.

Every token after the first is scored exactly once. Window k feeds tokens [k*stride, k*stride + context)
and scores only the targets no earlier window scored (the Hugging Face perplexity guide's sliding
window): with stride < context each scored token sees at least context - stride tokens of history;
with stride == context the windows do not overlap and every target of a window is scored.

The LM head runs only on the scored positions, in row chunks, and the log-softmax is taken in fp32.
The final hidden states of the scored positions can be kept: they are n_embd numbers per position
instead of vocab_size logits, and the exact logits are recomputed from them (temperature fitting).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from tinygpt.core.device import autocast
from tinygpt.core.modes import eval_mode
from tinygpt.model.gpt import GPT
from tinygpt.model.heads import CompactHead, output_head
from tinygpt.model.vocabulary import CompactVocabulary

# Rows of fp32 logits formed at once, whatever the batch and context: 256 x 50257 x 4 bytes ~ 51 MB.
# Small enough that the allocator reuses the buffers; chunks of 400 MB+ came fresh from the OS each time
# and page faults cost more than the arithmetic.
LOGIT_ROWS = 256


@dataclass(frozen=True)
class Window:
    start: int  # first input token; the targets are tokens[start + 1 : start + length + 1]
    length: int  # input tokens (<= context)
    n_new: int  # the last n_new targets of the window are scored; earlier ones were scored before


def windows(n_tokens: int, context: int, stride: int, offset: int = 0) -> list[Window]:
    """The windows that score targets 1..n_tokens-1 of a run of tokens (starting at `offset`) once each."""
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}")
    last_target = n_tokens - 1
    out: list[Window] = []
    scored_until, start = 0, 0  # targets 1..scored_until are done
    while scored_until < last_target:
        end = min(start + context, last_target)
        out.append(Window(offset + start, end - start, end - scored_until))
        scored_until = end
        start += stride
    return out


@dataclass
class PositionStats:
    """Per scored position, in text order."""

    nll: np.ndarray  # float32, nats
    confidence: np.ndarray  # float32, top-1 probability
    correct: np.ndarray  # bool, top-1 token == target


@dataclass
class NllResult:
    total_nll: float  # nats, summed over scored tokens
    n_tokens: int  # scored tokens
    positions: PositionStats  # per scored position, in text order
    hidden: torch.Tensor | None = None  # (n_tokens, n_embd) fp32 on CPU, with keep_hidden
    targets: torch.Tensor | None = None  # (n_tokens,) int64 on CPU, with keep_hidden

    @property
    def mean_nll(self) -> float:
        return self.total_nll / self.n_tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll)

    def bits_per_byte(self, n_bytes: int) -> float:
        """Total NLL in bits over the UTF-8 bytes of the text: comparable across tokenizers."""
        return bits_per_byte(self.total_nll, n_bytes)

    @property
    def accuracy(self) -> float:
        """Fraction of scored positions whose most likely token was the right one."""
        return float(self.positions.correct.mean())

    def metrics(self, n_bytes: int) -> dict:
        """The split's numbers as the metrics files hold them; `n_bytes`: UTF-8 bytes of its text."""
        return {
            "loss": self.mean_nll,
            "perplexity": self.perplexity,
            "bits_per_byte": self.bits_per_byte(n_bytes),
            "accuracy": self.accuracy,
            "tokens": self.n_tokens,
            "bytes": int(n_bytes),
        }


def bits_per_byte(total_nll: float, n_bytes: int) -> float:
    if n_bytes <= 0:
        raise ValueError(f"bits per byte needs a positive byte count, got {n_bytes}")
    return total_nll / (math.log(2) * n_bytes)


@dataclass
class LogitHead:
    """hidden rows -> fp32 logits over the output's rows, and what keeps statistics over those rows exact
    for the whole vocabulary. The rows are every id (`vocab` None), or the compact head's distinct
    embedding rows (tinygpt.model.heads.CompactHead, 4.5x fewer): a row's logit is then the logit of each of
    its tokens, and it enters a softmax's normaliser once per token (log-count added)."""

    logits: Callable[[torch.Tensor], torch.Tensor]
    vocab: CompactVocabulary | None = None

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.logits(hidden)

    def counted(self, z: torch.Tensor) -> torch.Tensor:
        """Logits `z` (already divided by any temperature) plus each row's log multiplicity: their softmax
        is the full vocabulary's, each row carrying its tokens' total probability."""
        return z if self.vocab is None else z + self.vocab.log_counts

    def normaliser(self, z: torch.Tensor) -> torch.Tensor:
        """The full vocabulary's logsumexp of logits `z`."""
        return torch.logsumexp(self.counted(z), dim=-1)

    def row_of(self, ids: torch.Tensor) -> torch.Tensor:
        return ids if self.vocab is None else self.vocab.row_of_id[ids]

    def id_of(self, rows: torch.Tensor) -> torch.Tensor:
        """The id the full head's argmax gives for a row: its smallest (ties go to the first index)."""
        return rows if self.vocab is None else self.vocab.representatives()[rows]


def position_stats(head: LogitHead, logits: torch.Tensor, targets: torch.Tensor,
                   temperature: float = 1.0) -> PositionStats:
    """NLL, top-1 probability and top-1 correctness of `head`'s logits (rows, head rows) at a temperature,
    in fp32. From logsumexp, max and a gather, without materialising the log-probabilities."""
    z = logits.float() if temperature == 1.0 else logits.float() / temperature
    targets = targets.to(z.device)
    lse = head.normaliser(z)
    top_z, top_row = z.max(dim=-1)
    nll = lse - z.gather(-1, head.row_of(targets)[:, None]).squeeze(-1)
    return PositionStats(
        nll=nll.cpu().numpy().astype(np.float32),
        confidence=torch.exp(top_z - lse).cpu().numpy().astype(np.float32),
        correct=(head.id_of(top_row) == targets).cpu().numpy(),
    )


def concat_stats(parts: Sequence[PositionStats]) -> PositionStats:
    return PositionStats(
        nll=np.concatenate([p.nll for p in parts]),
        confidence=np.concatenate([p.confidence for p in parts]),
        correct=np.concatenate([p.correct for p in parts]),
    )


def lm_head_logits(model: GPT, device: torch.device, precision: str) -> LogitHead:
    """The model's output layer as a LogitHead, with the same device and autocast as the evaluation pass:
    over the compact rows when the model has a saved map (tinygpt.model.heads.output_head), else every id."""
    head = output_head(model, compact=True)

    def logits(hidden: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast(device, precision):
            return head.logits(hidden.to(device))

    return LogitHead(logits, head.vocab if isinstance(head, CompactHead) else None)


def row_chunks(n_rows: int, rows: int | None = None) -> Iterator[slice]:
    rows = rows or LOGIT_ROWS
    for begin in range(0, n_rows, rows):
        yield slice(begin, min(begin + rows, n_rows))


def window_batches(all_windows: list[Window], batch_size: int) -> Iterator[list[Window]]:
    """Consecutive windows of equal length, at most batch_size at a time (a batch is one tensor)."""
    batch: list[Window] = []
    for window in all_windows:
        if batch and (len(batch) == batch_size or window.length != batch[0].length):
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


def window_tensors(tokens: np.ndarray, batch: list[Window], device: torch.device):
    """Inputs (B, L), targets (B, L) and the mask (B, L) of positions scored for the first time."""
    length = batch[0].length
    rows = np.stack([np.asarray(tokens[w.start : w.start + length + 1], dtype=np.int64) for w in batch])
    x = torch.from_numpy(rows[:, :-1]).to(device)
    y = torch.from_numpy(rows[:, 1:]).to(device)
    first_new = torch.tensor([length - w.n_new for w in batch], device=device)
    mask = torch.arange(length, device=device)[None, :] >= first_new[:, None]
    return x, y, mask


def split_nll(
    model: GPT,
    tokens: np.ndarray,
    context: int,
    stride: int,
    batch_size: int,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool | str = False,
    segments: Sequence[tuple[int, int]] | None = None,
    keep_hidden: bool = False,
) -> NllResult:
    """Score `tokens` (or the [begin, end) `segments` of it, each on its own) with the model.

    `progress` shows a tqdm bar (a string is its label). The result holds per-position NLL, top-1
    confidence and correctness; with `keep_hidden` also the scored positions' final hidden states.
    """
    device = torch.device(device)
    if context > model.config.block_size:
        raise ValueError(f"context {context} exceeds the model's block_size {model.config.block_size}")
    segments = [(0, len(tokens))] if segments is None else list(segments)
    all_windows = [w for a, b in segments if b - a >= 2 for w in windows(b - a, context, stride, offset=a)]
    n_scored = sum(w.n_new for w in all_windows)
    if n_scored == 0:
        raise ValueError("nothing to score: every segment has fewer than 2 tokens")
    head = lm_head_logits(model, device, precision)
    stats, hidden_parts, target_parts = [], [], []
    bar = tqdm(total=n_scored, unit="tok", desc=progress if isinstance(progress, str) else "nll",
               disable=not progress, leave=False)
    with eval_mode(model), torch.inference_mode():
        for batch in window_batches(all_windows, batch_size):
            x, y, mask = window_tensors(tokens, batch, device)
            with autocast(device, precision):
                hidden = model.hidden_states(x)[mask]  # (scored rows, n_embd), in text order
            targets = y[mask]
            for rows in row_chunks(len(targets)):
                stats.append(position_stats(head, head(hidden[rows]), targets[rows]))
            if keep_hidden:
                hidden_parts.append(hidden.float().cpu())
                target_parts.append(targets.cpu())
            bar.update(len(targets))
    bar.close()
    positions = concat_stats(stats)
    return NllResult(
        total_nll=float(positions.nll.sum(dtype=np.float64)),
        n_tokens=n_scored,
        positions=positions,
        hidden=torch.cat(hidden_parts) if keep_hidden else None,
        targets=torch.cat(target_parts) if keep_hidden else None,
    )


@torch.no_grad()
def val_nll(model: GPT, tokens: np.ndarray, precision: str, batch_size: int = 16) -> float:
    """Mean NLL of `tokens` in non-overlapping windows of the model's context: split_nll's mean without its
    per-position statistics, through the compact output head where the embedding allows (15x cheaper, so
    the RLHF stages can evaluate it at every point)."""
    device = next(model.parameters()).device
    head = output_head(model, compact=True)
    all_windows = windows(len(tokens), model.config.block_size, model.config.block_size)
    total = 0.0
    with eval_mode(model):
        for batch in window_batches(all_windows, batch_size):
            x, y, _ = window_tensors(tokens, batch, device)  # non-overlapping: every target is scored
            with autocast(device, precision):
                total -= head.logprobs(model.hidden_states(x), y).sum().item()
    return total / sum(w.n_new for w in all_windows)


def even_segments(n_tokens: int, sample_tokens: int, n_segments: int) -> list[tuple[int, int]]:
    """`n_segments` evenly spaced [begin, end) runs totalling ~`sample_tokens`; the whole run if that is
    0 or covers it. A fixed sample (no randomness) keeps a train-split estimate reproducible."""
    if sample_tokens == 0 or sample_tokens >= n_tokens:
        return [(0, n_tokens)]
    n_segments = max(1, min(n_segments, sample_tokens // 2))
    length = sample_tokens // n_segments
    starts = np.linspace(0, n_tokens - length, n_segments).round().astype(int)
    return [(int(s), int(s) + length) for s in starts]
