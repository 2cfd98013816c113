"""What the best_of_n stage writes: every reference sample with its scores (read back by the rlhf and dpo
stages as their baseline), best-of-n per prompt (the frontier's paired comparison and sample table),
and the curve per held-out set."""
from __future__ import annotations

import pandas as pd

from tinygpt.core import io
from tinygpt.pipeline import paths
from tinygpt.pipeline.outputs.samples import write_samples
from tinygpt.rlhf.heldout import HeldOut


def write_outputs(samples: dict[str, HeldOut], curves: dict[str, pd.DataFrame], soft: dict[str, pd.DataFrame],
                  per_prompt: dict[str, pd.DataFrame]) -> None:
    write_samples(paths.BEST_OF_N_SCORES, samples)
    io.write_text(paths.BEST_OF_N_PER_PROMPT, long_table(per_prompt).to_csv(index=False, float_format="%.6g"))
    io.write_text(paths.BEST_OF_N_CURVE_CSV, long_table(curves).to_csv(index=False, float_format="%.6g"))
    io.write_text(paths.SOFT_BEST_OF_N_CSV, long_table(soft).to_csv(index=False, float_format="%.6g"))


def long_table(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One table per set as one, with a `set` column last."""
    return pd.concat([t.assign(set=name) for name, t in tables.items()])

