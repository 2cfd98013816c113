"""One CSV format for scored continuations (one row per sample: set, prompt, sample, text, scores), written
and read back as one heldout.HeldOut per held-out set: the best_of_n stage's reference samples (the
baseline of every method) and each policy's samples at its reported point (the frontier's paired,
per-prompt comparison)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tinygpt.core import io
from tinygpt.rlhf.heldout import HeldOut


def samples_frame(samples: dict[str, HeldOut]) -> pd.DataFrame:
    """Every sample of every set, prompt-major. A `kl` column only where some sample has KL (a policy's):
    the reference's is zero by definition, and read_samples reads it back as zeros."""
    frames = []
    for name, s in samples.items():
        index = np.arange(len(s.gold))
        frames.append(pd.DataFrame({
            "set": name, "prompt": index // s.samples_per_prompt, "sample": index % s.samples_per_prompt,
            "gold": s.gold, "proxy": s.reward, "tokens": s.tokens, "text": s.texts,
            **({} if s.heldout_gold is None else {"heldout_gold": s.heldout_gold}),
            **({"kl": s.kl} if np.any(s.kl != 0) else {}),
        }))
    return pd.concat(frames)


def write_samples(path: Path, samples: dict[str, HeldOut]) -> None:
    io.write_text(path, samples_frame(samples).to_csv(index=False, float_format="%.6g"))


def read_samples(path: Path) -> dict[str, HeldOut]:
    """A file of write_samples back as one HeldOut per set."""
    table = pd.read_csv(path, keep_default_na=False)  # an empty continuation stays "", not NaN
    samples = {}
    for name, rows in table.groupby("set", sort=False):
        rows = rows.sort_values(["prompt", "sample"])
        samples[name] = HeldOut(
            texts=rows["text"].astype(str).tolist(), gold=rows["gold"].to_numpy(np.float64),
            reward=rows["proxy"].to_numpy(np.float32),
            kl=rows["kl"].to_numpy(np.float32) if "kl" in rows else np.zeros(len(rows), np.float32),
            tokens=rows["tokens"].to_numpy(np.int64), samples_per_prompt=int(rows["sample"].max()) + 1,
            heldout_gold=rows["heldout_gold"].to_numpy(np.float64) if "heldout_gold" in rows else None,
        )
    return samples
