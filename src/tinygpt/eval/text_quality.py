"""Text quality of sampled continuations, read beside their rewards: what a policy that games its scorer
gives up in return.

Per continuation, over its words (runs of letters and apostrophes, lower-cased):
- distinct_2: distinct word bigrams over all its word bigrams (Li et al. 2016, per continuation); low
  when a phrase repeats;
- repeated_words: the share of its words that repeat an earlier word of the same continuation
  ("good good my lord good");
- unseen_words: the share of its words that the training split never uses: tokens glued together
  without a space ("wellBaseentle", "Paris:reonMy") and invented words.
Each is a value per continuation, so best-of-n's expectation of it comes from the same estimator as its
gold score (tinygpt.rlhf.best_of_n.best_of_n_values).
"""
from __future__ import annotations

import re
from typing import Iterable

import numpy as np

from tinygpt.data.tokenizer import decode

QUALITY = ("distinct_2", "repeated_words", "unseen_words")
WORD = re.compile(r"[A-Za-z']+")


def words(text: str) -> list[str]:
    return [w.lower() for w in WORD.findall(text)]


def known_words(tokens: np.ndarray) -> frozenset[str]:
    """Every word of the text of GPT-2 `tokens` (the training split's): a word outside it is unseen."""
    return frozenset(words(decode(tokens.tolist())))


def quality(text: str, known: frozenset[str]) -> dict[str, float]:
    """distinct_2, repeated_words and unseen_words of one continuation (a text without words: 1, 0, 0)."""
    ws = words(text)
    bigrams = list(zip(ws, ws[1:]))
    seen: set[str] = set()
    repeats = 0
    for w in ws:
        repeats += w in seen
        seen.add(w)
    return {
        "distinct_2": len(set(bigrams)) / len(bigrams) if bigrams else 1.0,
        "repeated_words": repeats / len(ws) if ws else 0.0,
        "unseen_words": sum(w not in known for w in ws) / len(ws) if ws else 0.0,
    }


def quality_values(texts: Iterable[str], known: frozenset[str]) -> dict[str, np.ndarray]:
    """Each QUALITY measure per continuation, as arrays in the order of `texts`."""
    rows = [quality(text, known) for text in texts]
    return {name: np.asarray([row[name] for row in rows], dtype=np.float64) for name in QUALITY}
