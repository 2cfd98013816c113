"""Summary statistics the evaluations share."""
from __future__ import annotations

import math

import numpy as np


def sem(per_prompt: np.ndarray) -> float:
    """Standard error of the mean across prompts (NaN for fewer than two)."""
    return float(per_prompt.std(ddof=1) / math.sqrt(len(per_prompt))) if len(per_prompt) > 1 else float("nan")
