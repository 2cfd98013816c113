"""What the best_of_n stage writes: every reference sample with its scores (read back by the rlhf and dpo
stages as their baseline), and the curve per held-out set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tinygpt.core import io
from tinygpt.pipeline import paths
from tinygpt.rlhf.heldout import HeldOut


def write_outputs(samples: dict[str, HeldOut], curves: dict[str, pd.DataFrame], soft: dict[str, pd.DataFrame]) -> None:
    scores = pd.concat([
        pd.DataFrame({
            "set": name, "prompt": np.arange(len(s.gold)) // s.samples_per_prompt,
            "sample": np.arange(len(s.gold)) % s.samples_per_prompt, "gold": s.gold, "proxy": s.reward,
            "tokens": s.tokens, "text": s.texts,
            **({} if s.heldout_gold is None else {"heldout_gold": s.heldout_gold}),
        })
        for name, s in samples.items()
    ])
    io.write_text(paths.BEST_OF_N_SCORES, scores.to_csv(index=False, float_format="%.6g"))
    curve = pd.concat([c.assign(set=name) for name, c in curves.items()])
    io.write_text(paths.BEST_OF_N_CURVE_CSV, curve.to_csv(index=False, float_format="%.6g"))
    soft_curve = pd.concat([c.assign(set=name) for name, c in soft.items()])
    io.write_text(paths.SOFT_BEST_OF_N_CSV, soft_curve.to_csv(index=False, float_format="%.6g"))


def read_samples(path: Path) -> dict[str, HeldOut]:
    """data/best_of_n/scores.csv back as one HeldOut per held-out set (the reference's, so KL 0)."""
    table = pd.read_csv(path, keep_default_na=False)  # an empty continuation stays "", not NaN
    samples = {}
    for name, rows in table.groupby("set", sort=False):
        rows = rows.sort_values(["prompt", "sample"])
        samples[name] = HeldOut(
            texts=rows["text"].astype(str).tolist(), gold=rows["gold"].to_numpy(np.float64),
            reward=rows["proxy"].to_numpy(np.float32), kl=np.zeros(len(rows), np.float32),
            tokens=rows["tokens"].to_numpy(np.int64), samples_per_prompt=int(rows["sample"].max()) + 1,
            heldout_gold=rows["heldout_gold"].to_numpy(np.float64) if "heldout_gold" in rows else None,
        )
    return samples
