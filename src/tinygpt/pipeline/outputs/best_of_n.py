"""What the best_of_n stage writes: every reference sample's scores, and the curve per held-out set."""
from __future__ import annotations

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
            "tokens": s.tokens,
        })
        for name, s in samples.items()
    ])
    io.write_text(paths.BEST_OF_N_SCORES, scores.to_csv(index=False, float_format="%.6g"))
    curve = pd.concat([c.assign(set=name) for name, c in curves.items()])
    io.write_text(paths.BEST_OF_N_CURVE_CSV, curve.to_csv(index=False, float_format="%.6g"))
    soft_curve = pd.concat([c.assign(set=name) for name, c in soft.items()])
    io.write_text(paths.SOFT_BEST_OF_N_CSV, soft_curve.to_csv(index=False, float_format="%.6g"))
