"""Calibration of top-1 predictions: reliability bins, ECE, MCE, equal-mass ECE, Brier score, and
temperature scaling.

Bins are equal-width: bin m of M covers ((m-1)/M, m/M], except that the first also takes confidence 0,
so confidence 1.0 lands in the last bin and nothing is dropped.

Temperature scaling is fitted exactly. The NLL of logits z at inverse temperature b = 1/T,
    f(b) = mean_i [logsumexp(b z_i) - b z_i,y_i],
is convex in b, with f'(b) = mean_i [E_p[z_i] - z_i,y_i] and f''(b) = mean_i Var_p[z_i] under
p = softmax(b z_i). Newton's method on b (kept inside a shrinking bracket) converges in a handful of
passes. Each pass recomputes the logits from the cached final hidden states (n_embd numbers per
position, not vocab_size), so no top-k truncation or approximation enters the fit; over the compact
head's rows where the model has them (likelihood.LogitHead: the same numbers, 4.5x less work).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tinygpt.eval.likelihood import LogitHead, PositionStats, concat_stats, position_stats, row_chunks

# Search range of the temperature; a fit at a bound means the model is far from calibrated.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
# Newton's steps on 1/T: the fit converges in 5-10, so 30 only bounds a pathological case; it stops when
# 1/T moves by less than this relative amount, far below what changes any reported digit.
TEMPERATURE_MAX_ITER = 30
TEMPERATURE_TOL = 1e-6


# ---------------------------------------------------------------- reliability bins


def bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: ((m-1)/M, m/M] -> m-1; 0 goes to bin 0, 1 to bin M-1."""
    inner_edges = np.arange(1, n_bins) / n_bins
    # side="left": a confidence equal to an edge belongs to the bin that edge closes.
    return np.searchsorted(inner_edges, np.asarray(confidence, dtype=np.float64), side="left")


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> pd.DataFrame:
    """One row per bin: bounds, count, mean confidence, accuracy and gap (empty bins: NaN)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    index = bin_index(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=correct, minlength=n_bins) / count
    return pd.DataFrame(
        {
            "bin": np.arange(1, n_bins + 1),
            "lower": np.arange(n_bins) / n_bins,
            "upper": np.arange(1, n_bins + 1) / n_bins,
            "count": count,
            "confidence": mean_conf,
            "accuracy": accuracy,
            "gap": accuracy - mean_conf,
        }
    )


def expected_calibration_error(bins: pd.DataFrame) -> float:
    """Count-weighted mean of |accuracy - confidence| over the bins."""
    filled = bins[bins["count"] > 0]
    return float((filled["count"] * filled["gap"].abs()).sum() / filled["count"].sum())


def max_calibration_error(bins: pd.DataFrame) -> float:
    """Largest |accuracy - confidence| over the non-empty bins."""
    return float(bins.loc[bins["count"] > 0, "gap"].abs().max())


def adaptive_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> float:
    """ECE over equal-mass bins (sorted by confidence, split into n_bins runs of near-equal size)."""
    order = np.argsort(confidence, kind="stable")
    conf = np.asarray(confidence, dtype=np.float64)[order]
    hits = np.asarray(correct, dtype=np.float64)[order]
    total = 0.0
    for part in np.array_split(np.arange(len(conf)), min(n_bins, len(conf))):
        total += len(part) * abs(hits[part].mean() - conf[part].mean())
    return total / len(conf)


def brier_score(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Mean squared error of the top-1 probability against whether the top-1 token was right."""
    return float(np.mean((np.asarray(confidence, np.float64) - np.asarray(correct, np.float64)) ** 2))


@dataclass
class Calibration:
    bins: pd.DataFrame
    ece: float
    mce: float
    adaptive_ece: float
    brier: float
    accuracy: float
    confidence: float  # mean top-1 probability

    def summary(self) -> dict[str, float]:
        return {
            "ece": self.ece,
            "mce": self.mce,
            "adaptive_ece": self.adaptive_ece,
            "brier": self.brier,
            "accuracy": self.accuracy,
            "confidence": self.confidence,
        }


def calibrate(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> Calibration:
    if len(confidence) == 0:
        raise ValueError("calibration needs at least one scored position")
    bins = reliability_bins(confidence, correct, n_bins)
    return Calibration(
        bins=bins,
        ece=expected_calibration_error(bins),
        mce=max_calibration_error(bins),
        adaptive_ece=adaptive_calibration_error(confidence, correct, n_bins),
        brier=brier_score(confidence, correct),
        accuracy=float(np.mean(correct)),
        confidence=float(np.mean(confidence)),
    )


# ---------------------------------------------------------------- temperature scaling

def row_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot products (rows, vocab) x (rows, vocab) -> (rows,), without a rows x vocab temporary."""
    return torch.bmm(a[:, None, :], b[:, :, None]).view(-1)


def nll_derivatives(head: LogitHead, hidden: torch.Tensor, targets: torch.Tensor,
                    beta: float) -> tuple[float, float, float]:
    """Mean NLL at inverse temperature `beta`, and its first and second derivatives in beta. `head` returns
    a fresh logits tensor per call: it is reused in place."""
    f = g = h = 0.0
    for rows in row_chunks(len(targets)):
        with torch.inference_mode():
            z = head(hidden[rows])
            y = head.row_of(targets[rows].to(z.device))
            z_y = z.gather(-1, y[:, None]).squeeze(-1)
            p = head.counted(z * beta)
            lse = torch.logsumexp(p, dim=-1)
            p.sub_(lse[:, None]).exp_()  # softmax(beta z) per row of the head, in place: rows x vocab buffers
            mean_z = row_dot(p, z)
            var_z = row_dot(p, z.sub_(mean_z[:, None]).square_())  # centred (no cancellation); z is spent
        f += float((lse - beta * z_y).double().sum())
        g += float((mean_z - z_y).double().sum())
        h += float(var_z.double().sum())
    n = len(targets)
    return f / n, g / n, h / n


@dataclass
class TemperatureFit:
    temperature: float
    iterations: int
    nll: float  # mean NLL on the fitting positions at the fitted temperature
    converged: bool


def fit_temperature(
    head: LogitHead, hidden: torch.Tensor, targets: torch.Tensor, max_iter: int = TEMPERATURE_MAX_ITER,
    tol: float = TEMPERATURE_TOL) -> TemperatureFit:
    """The temperature minimising mean NLL of head(hidden) against targets (safeguarded Newton on 1/T)."""
    lo, hi = 1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE  # bracket on beta = 1/T
    beta, converged = 1.0, False
    for iteration in range(1, max_iter + 1):
        f, g, h = nll_derivatives(head, hidden, targets, beta)
        if g > 0:  # NLL rising: the minimum lies at smaller beta
            hi = beta
        else:
            lo = beta
        newton = beta - g / h if h > 0 else math.nan
        proposal = newton if lo < newton < hi else math.sqrt(lo * hi)  # bisect (in log) when Newton leaves
        if abs(proposal - beta) <= tol * beta:
            converged = True
            break
        beta = proposal
    return TemperatureFit(temperature=1 / beta, iterations=iteration, nll=f, converged=converged)


def scaled_stats(head: LogitHead, hidden: torch.Tensor, targets: torch.Tensor, temperature: float) -> PositionStats:
    """Per-position NLL, confidence and correctness of head(hidden) divided by a temperature."""
    return concat_stats(
        [position_stats(head, head(hidden[rows]), targets[rows], temperature)
         for rows in row_chunks(len(targets))]
    )
