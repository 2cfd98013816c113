"""Preference oracles: programs that stand in for the human labeller of RLHF.

Each oracle scores one continuation (its text and token ids); the higher score is preferred, and a pair
whose scores differ by no more than a margin is a tie and is dropped, as Stiennon et al. drop pairs their
labellers could not tell apart.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from tinygpt.data.tokenizer import EOT_ID, decode

ORACLES = ("sentiment", "brevity", "keyword")
# Each oracle's held-out gold: a second scorer of the same preference that nothing in the pipeline trains
# on, ranks by or selects by. A policy that learned the preference gains on both golds; one that learned
# the first gold's word list gains on that one only. None: the oracle has no second scorer.
HELDOUT_GOLD = {"sentiment": "afinn", "brevity": None, "keyword": None}


@functools.lru_cache(maxsize=1)
def _vader():
    # Loading VADER's lexicon takes ~0.1 s; do it once per process.
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def sentiment_score(text: str) -> float:
    """VADER's compound score in [-1, 1]: the normalised sum of the lexicon valences in the text."""
    return float(_vader().polarity_scores(text)["compound"])


@functools.lru_cache(maxsize=1)
def _afinn():
    from afinn import Afinn

    return Afinn(language="en")  # the AFINN-165 word list, shipped inside the package


def afinn_score(text: str) -> float:
    """AFINN-165's valence sum over the text's words (each from -5 to +5): a sentiment lexicon rated
    apart from VADER's, and unbounded where VADER's compound is squashed into [-1, 1]."""
    return float(_afinn().score(text))


def brevity_score(ids: Sequence[int], eot_id: int = EOT_ID) -> float:
    """Minus the number of tokens before the reply ends: shorter continuations score higher.

    A reply ends at the first end-of-text or at the first blank line, the end of a speech in a play
    script. Tiny Shakespeare contains no end-of-text, so a model trained on it never emits one; with
    end-of-text alone every continuation would be full length and every pair a tie. The blank line is
    found in the decoded text, so it counts however the tokenizer split the newlines."""
    ids = list(ids)
    end = ids.index(eot_id) if eot_id in ids else len(ids)
    text = ""
    for position, token in enumerate(ids[:end]):
        text += decode([token])
        if "\n\n" in text:
            return -float(position)  # the tokens before the one that completed the blank line
    return -float(end)


def keyword_score(text: str, keyword: str) -> float:
    """1 when `keyword` occurs in the text as a whole word (any case), else 0."""
    return float(re.search(rf"\b{re.escape(keyword)}\b", text, flags=re.IGNORECASE) is not None)


@dataclass(frozen=True)
class Oracle:
    """A named oracle; `keyword` is used only by the keyword oracle."""

    name: str = "sentiment"
    keyword: str = ""

    def __post_init__(self) -> None:
        if self.name not in ORACLES:
            raise ValueError(f"oracle '{self.name}' is unknown; known: {', '.join(ORACLES)}")
        if self.name == "keyword" and not self.keyword.strip():
            raise ValueError("the keyword oracle needs a non-empty keyword")

    def score(self, text: str, ids: Sequence[int]) -> float:
        if self.name == "sentiment":
            return sentiment_score(text)
        if self.name == "brevity":
            return brevity_score(ids)
        return keyword_score(text, self.keyword)

    def scores(self, texts: Sequence[str], ids: Sequence[Sequence[int]]) -> list[float]:
        return [self.score(text, row) for text, row in zip(texts, ids, strict=True)]

    @property
    def heldout_name(self) -> str | None:
        """The held-out gold's name (HELDOUT_GOLD), or None."""
        return HELDOUT_GOLD[self.name]

    def heldout_scores(self, texts: Sequence[str]) -> np.ndarray | None:
        """The held-out gold of each text, or None when this oracle has none."""
        return None if self.heldout_name is None else np.asarray([afinn_score(t) for t in texts])


def prefer(score_a: float, score_b: float, min_margin: float = 0.0) -> int | None:
    """0 if a is preferred, 1 if b is, None for a tie (the scores differ by `min_margin` or less)."""
    if abs(score_a - score_b) <= min_margin:
        return None
    return 0 if score_a > score_b else 1
