"""The map of vocabulary ids onto shared embedding rows, saved with a model's weights."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch


@dataclass(frozen=True)
class CompactVocabulary:
    """Which embedding row each vocabulary id uses when ids share rows: the one map that pretraining
    (ShortlistGPT) and the finetuning heads (tinygpt.model.heads.CompactHead) take their softmax over."""

    row_of_id: torch.Tensor  # (vocab_size,) int64: id -> its row, rows numbered from 0

    @classmethod
    def of_tokens(cls, tokens: np.ndarray, vocab_size: int) -> "CompactVocabulary":
        """A row per id the training split uses, in id order, and one last row shared by all the others."""
        used = np.bincount(np.asarray(tokens, dtype=np.int64), minlength=vocab_size)
        if len(used) > vocab_size:
            raise ValueError(f"token id {len(used) - 1} is outside the vocabulary of {vocab_size}; "
                             "the token file does not match model.vocab_size")
        seen = torch.from_numpy(np.flatnonzero(used))
        row_of_id = torch.full((vocab_size,), len(seen), dtype=torch.long)
        row_of_id[seen] = torch.arange(len(seen))
        return cls(row_of_id)

    def with_own_row(self, token: int) -> "CompactVocabulary":
        """The same map with `token` moved out of the row it shares into a new last row (a token that
        finetuning must tell apart from its row-mates, such as end-of-text, which pretraining never saw)."""
        if self.counts[self.row_of_id[token]] == 1:
            return self
        row_of_id = self.row_of_id.clone()
        row_of_id[token] = self.n_rows
        return CompactVocabulary(row_of_id)

    @cached_property
    def counts(self) -> torch.Tensor:
        """How many ids share each row (int64)."""
        return torch.bincount(self.row_of_id)

    @property
    def vocab_size(self) -> int:
        return len(self.row_of_id)

    @property
    def n_rows(self) -> int:
        return len(self.counts)

    @property
    def n_shared(self) -> int:
        """Ids in rows that more than one id uses (the tokens training never saw)."""
        return int(self.counts[self.counts > 1].sum())

    @cached_property
    def log_counts(self) -> torch.Tensor:
        """log(ids sharing each row), fp32: the amount a row's logit stands for in the full softmax."""
        return self.counts.double().log().float()

    @cached_property
    def ids_by_row(self) -> torch.Tensor:
        """Every id, grouped by row in row order (each row's ids in id order)."""
        return torch.argsort(self.row_of_id, stable=True)

    @cached_property
    def first_of_row(self) -> torch.Tensor:
        """Where each row's ids start in ids_by_row."""
        return self.counts.cumsum(0) - self.counts

    def representatives(self) -> torch.Tensor:
        """One id per row (its smallest), to read each row's embedding from the full table."""
        return self.ids_by_row[self.first_of_row]

    @torch.no_grad()
    def holds_for(self, values: torch.Tensor, atol: float = 0.0) -> bool:
        """Whether the ids of each row have equal entries in `values` (vocab_size, ...), an embedding or a
        logit bias (to within `atol`): true after pretraining and while finetuning keeps the embedding frozen."""
        if len(values) != self.vocab_size:
            return False
        tied = values[self.representatives().to(values.device)][self.row_of_id.to(values.device)]
        return torch.equal(values, tied) if atol == 0 else torch.allclose(values, tied, rtol=0.0, atol=atol)
