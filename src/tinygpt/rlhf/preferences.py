"""Preference data for RLHF: prompts cut from the corpus, continuations sampled from the pretrained model,
and every two continuations of a prompt labelled chosen/rejected by an oracle (ties dropped).

Saved with the `datasets` library (Arrow, `save_to_disk`): `pairs` holds prompt, chosen, rejected, both
oracle scores and the token ids; `prompts` holds every prompt, for PPO's rollouts (train) and the
held-out evaluations: the val split's prompts are dealt into a `selection` set, on which settings and
checkpoints are chosen, and a `report` set for the headline numbers.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch
from datasets import (Dataset, DatasetDict, Features, List, Value,
                      load_from_disk)

from tinygpt.core import io
from tinygpt.core.errors import TinyGptError
from tinygpt.data.tokenizer import decode
from tinygpt.model.config import GPTConfig
from tinygpt.model.gpt import GPT
from tinygpt.rlhf.config import PreferencesParams
from tinygpt.rlhf.oracles import Oracle, prefer
from tinygpt.rlhf.rollout import sample

LINE_BREAKS = (198, 628)  # GPT-2 ids of "\n" and "\n\n": prompts start where a line starts

PAIR_FEATURES = Features(
    {
        "prompt": Value("string"),
        "chosen": Value("string"),
        "rejected": Value("string"),
        "chosen_score": Value("float64"),
        "rejected_score": Value("float64"),
        "prompt_ids": List(Value("int32")),
        "chosen_ids": List(Value("int32")),
        "rejected_ids": List(Value("int32")),
    }
)
PROMPT_FEATURES = Features({"prompt": Value("string"), "prompt_ids": List(Value("int32"))})


class PreferenceDataError(TinyGptError):
    pass


def cut_prompts(tokens: np.ndarray, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """`n` prompts of `length` tokens (n, length), each starting at a distinct line start of `tokens`."""
    starts = np.flatnonzero(np.isin(tokens[: len(tokens) - length], LINE_BREAKS)) + 1
    if len(starts) < n:
        raise PreferenceDataError(
            f"only {len(starts)} line starts leave room for {length}-token prompts, {n} were asked for; "
            "lower preferences.train_prompts / val_prompts or preferences.prompt_tokens"
        )
    chosen = np.sort(rng.choice(starts, size=n, replace=False))
    return np.stack([np.asarray(tokens[s : s + length], dtype=np.int64) for s in chosen])


@dataclass
class Continuations:
    """`samples` continuations of every prompt, prompt-major (rows p*samples ... p*samples + samples-1)."""

    prompt_ids: np.ndarray  # (n_prompts, prompt_len)
    samples: int
    ids: list[list[int]]  # continuation ids, up to and including an end-of-text
    texts: list[str]
    scores: list[float]


def sample_continuations(
    model: GPT, prompt_ids: np.ndarray, samples: int, max_new_tokens: int, temperature: float,
    oracle: Oracle, generator: torch.Generator, precision: str, batch_size: int,
) -> Continuations:
    """Sample `samples` continuations per prompt and score each with the oracle."""
    device = next(model.parameters()).device
    prompts = torch.as_tensor(prompt_ids, device=device).repeat_interleave(samples, dim=0)
    rollout = sample(model, prompts, max_new_tokens, temperature, generator, precision, batch_size=batch_size)
    ids, texts = rollout.response_ids(), rollout.texts()
    return Continuations(prompt_ids, samples, ids, texts, oracle.scores(texts, ids))


def label_pairs(cont: Continuations, min_margin: float) -> tuple[dict[str, list], int]:
    """Every two continuations of a prompt as a chosen/rejected row; returns (columns, ties dropped)."""
    rows: dict[str, list] = {name: [] for name in PAIR_FEATURES}
    ties = 0
    for p, prompt in enumerate(cont.prompt_ids.tolist()):
        for a, b in itertools.combinations(range(p * cont.samples, (p + 1) * cont.samples), 2):
            winner = prefer(cont.scores[a], cont.scores[b], min_margin)
            if winner is None:
                ties += 1
                continue
            chosen, rejected = (a, b) if winner == 0 else (b, a)
            for column, value in (
                ("prompt", decode(prompt)), ("prompt_ids", prompt),
                ("chosen", cont.texts[chosen]), ("chosen_ids", cont.ids[chosen]),
                ("chosen_score", cont.scores[chosen]),
                ("rejected", cont.texts[rejected]), ("rejected_ids", cont.ids[rejected]),
                ("rejected_score", cont.scores[rejected]),
            ):
                rows[column].append(value)
    return rows, ties


def pair_stats(cont: Continuations, pairs: Dataset, ties: int) -> dict[str, float]:
    """Counts and oracle-score summaries of one split's preference data."""
    chosen = np.asarray(pairs["chosen_score"], dtype=float)
    rejected = np.asarray(pairs["rejected_score"], dtype=float)
    return {
        "prompts": len(cont.prompt_ids),
        "continuations": len(cont.ids),
        "pairs": len(pairs),
        "ties_dropped": ties,
        "tie_fraction": ties / max(1, ties + len(pairs)),
        "oracle_mean": float(np.mean(cont.scores)),
        "oracle_std": float(np.std(cont.scores)),
        "chosen_score_mean": float(chosen.mean()) if len(chosen) else float("nan"),
        "rejected_score_mean": float(rejected.mean()) if len(rejected) else float("nan"),
    }


def build_pairs(cont: Continuations, min_margin: float, split: str, oracle: Oracle) -> tuple[Dataset, dict]:
    """The split's pairs as a Dataset, and its stats; an error when every pair tied."""
    rows, ties = label_pairs(cont, min_margin)
    pairs = Dataset.from_dict(rows, features=PAIR_FEATURES)
    if len(pairs) == 0:
        raise PreferenceDataError(
            f"preferences ({split}): all {ties} pairs tied under oracle '{oracle.name}' "
            f"(every continuation scored {cont.scores[0]:g}); nothing to learn from. Pick another "
            "preferences.oracle, or lower preferences.min_margin"
        )
    return pairs, pair_stats(cont, pairs, ties)


def check_fits(config: GPTConfig, preferences_params: PreferencesParams) -> None:
    """Prompt, continuation and the reward model's summary token must fit the model's context."""
    needed = preferences_params.prompt_tokens + preferences_params.continuation_tokens + 1
    if needed > config.block_size:
        raise PreferenceDataError(
            f"preferences.prompt_tokens + preferences.continuation_tokens + 1 = "
            f"{needed} exceeds the model's context of {config.block_size} "
            "tokens (the reward model appends one token); shorten them"
        )


def heldout_sets(prompt_ids: np.ndarray, n_selection: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The val split's prompts dealt at random into a `selection` set (anything tuned, including which
    checkpoint to report, is chosen on it) and a `report` set (the headline numbers; nothing looks at it
    before). Each keeps the text order of its prompts."""
    picked = np.zeros(len(prompt_ids), dtype=bool)
    picked[rng.permutation(len(prompt_ids))[:n_selection]] = True
    return {"selection": prompt_ids[picked], "report": prompt_ids[~picked]}


def build_split(
    model: GPT, prompt_ids: np.ndarray, split: str, preferences_params: PreferencesParams,
    oracle: Oracle, generator: torch.Generator, precision: str,
) -> tuple[Dataset, Dataset, dict]:
    """One split's (pairs, prompts, stats): sample and score continuations of its prompts, label pairs."""
    cont = sample_continuations(
        model, prompt_ids, preferences_params.samples_per_prompt, preferences_params.continuation_tokens,
        preferences_params.temperature, oracle, generator, precision, preferences_params.batch_size,
    )
    pairs, stats = build_pairs(cont, preferences_params.min_margin, split, oracle)
    return pairs, prompts_dataset(prompt_ids), stats


def prompts_dataset(prompt_ids: np.ndarray) -> Dataset:
    rows = {"prompt": [decode(p) for p in prompt_ids.tolist()], "prompt_ids": prompt_ids.tolist()}
    return Dataset.from_dict(rows, features=PROMPT_FEATURES)


def save(pairs: dict[str, Dataset], prompts: dict[str, Dataset], pairs_dir: Path, prompts_dir: Path) -> None:
    save_atomic(DatasetDict(pairs), Path(pairs_dir))
    save_atomic(DatasetDict(prompts), Path(prompts_dir))


def save_atomic(data: DatasetDict, out_dir: Path) -> None:
    """save_to_disk into a temp folder beside `out_dir`, then swap it in: no half-written dataset."""
    datasets.disable_progress_bars()  # a bar per shard and split says nothing here
    with io.atomic_dir(out_dir) as tmp:
        data.save_to_disk(str(tmp))


def load_pairs(pairs_dir: Path) -> DatasetDict:
    return _load(pairs_dir, PAIR_FEATURES)


def load_prompts(prompts_dir: Path, split: str) -> np.ndarray:
    """The split's prompts as an (n, prompt_len) int64 array."""
    return np.asarray(_load(prompts_dir, PROMPT_FEATURES)[split]["prompt_ids"], dtype=np.int64)


def _load(path: Path, features: Features) -> DatasetDict:
    """A saved DatasetDict whose every split has at least `features`' columns, or a PreferenceDataError."""
    rebuild = "rerun `dvc repro preferences` to write it again"
    if not Path(path).exists():
        raise FileNotFoundError(f"{path}: not found; run `dvc repro preferences` to produce it")
    try:
        data = load_from_disk(str(path))
    except (OSError, ValueError) as err:  # missing state/arrow files, a folder that is no dataset
        raise PreferenceDataError(f"{path}: not a readable dataset ({type(err).__name__}: {err}); {rebuild}") from err
    for split, table in (data.items() if isinstance(data, DatasetDict) else [("(none)", data)]):
        missing = [name for name in features if name not in table.column_names]
        if missing:
            raise PreferenceDataError(f"{path}: split '{split}' lacks the column(s) {', '.join(missing)} "
                                      f"(it has {', '.join(table.column_names)}); {rebuild}")
    return data
