"""Best-of-n: the baseline any RLHF method has to beat (Stiennon et al. 2020; Gao et al. 2023).

Sample n continuations of a prompt from the reference model and keep the one the reward model scores
highest. It needs no training, and its KL from the reference is known in closed form, log n - (n-1)/n,
so its gold (oracle) score traces a curve of gold against KL that a finetuned policy can be placed on.

From N >= n samples per prompt, every n is estimated at once and without bias: the expected gold score
of the proxy-argmax of a random n-subset is a weighted sum over the samples sorted by proxy score.

Soft best-of-N keeps one of the N samples at random with probability softmax(proxy / beta) instead of the
argmax. As N grows it becomes the tilted reference pi_ref * exp(r / beta) / Z: the policy that maximises
E[r] - beta * KL, the optimum PPO and DPO approach with KL coefficient beta. On the same samples it shows
where a perfectly trained policy for this reward model would sit on the gold-versus-KL figure.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import pandas as pd

from tinygpt.core.stats import sem
from tinygpt.eval.text_quality import QUALITY

# The curve's name (curve.csv's `set`) for best_of_n.deep_n samples of each of the first
# best_of_n.deep_prompts report prompts: fewer prompts, but measured out to the KL the policies reach.
DEEP = "report_deep"


def analytic_kl(n: int) -> float:
    """KL(best-of-n || reference) in nats, for a reward that ties with probability zero."""
    return math.log(n) - (n - 1) / n


def subset_argmax_weights(N: int, n: int) -> np.ndarray:
    """P(the i-th smallest of N items is the largest of a uniformly random n-subset), i = 0..N-1:
    C(i, n-1) / C(N, n)."""
    if not 1 <= n <= N:
        raise ValueError(f"best-of-{n} needs at least {n} samples per prompt, got {N}")
    return np.array([math.comb(i, n - 1) for i in range(N)], dtype=np.float64) / math.comb(N, n)


def best_of_n_values(proxy: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per prompt, the expected `values` of the sample a best-of-n by `proxy` keeps.

    proxy, values: (prompts, N). Of samples with equal proxy, the earliest ranks highest: the rule of
    picking the first maximum in an actual draw.
    """
    last = proxy.shape[1] - 1
    order = last - np.argsort(proxy[:, ::-1], axis=1, kind="stable")  # ascending; ties: later samples first
    ranked = np.take_along_axis(values, order, axis=1)
    return ranked @ subset_argmax_weights(proxy.shape[1], n)


def powers_of_two(max_n: int) -> list[int]:
    return [2**k for k in range(int(math.log2(max_n)) + 1)]


def best_of_n_curve(proxy: np.ndarray, gold: np.ndarray, max_n: int, heldout_gold: np.ndarray | None = None,
                    quality: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """n = 1, 2, 4, ..., max_n: analytic KL, gold and proxy means, and their gains over n = 1 (the
    reference's own mean on the same samples), with standard errors across prompts (each prompt's
    estimate is one observation: samples of a prompt are not independent); with `heldout_gold` (the
    oracle's second scorer, oracles.HELDOUT_GOLD) its gain too, and with `quality` (name -> per-sample
    values, eval.text_quality) each one's expected value, for the same picks."""
    rows = []
    gold_1, proxy_1 = gold.mean(axis=1), proxy.mean(axis=1)
    for n in powers_of_two(max_n):
        g, p = best_of_n_values(proxy, gold, n), best_of_n_values(proxy, proxy, n)
        row = {"n": n, "prompts": len(proxy), "kl": analytic_kl(n), "gold": g.mean(), "gold_se": sem(g),
               "gold_gain": (g - gold_1).mean(), "gold_gain_se": sem(g - gold_1),
               "proxy": p.mean(), "proxy_gain": (p - proxy_1).mean(), "proxy_gain_se": sem(p - proxy_1)}
        if heldout_gold is not None:
            h = best_of_n_values(proxy, heldout_gold, n) - heldout_gold.mean(axis=1)
            row.update(heldout_gold_gain=h.mean(), heldout_gold_gain_se=sem(h))
        for name, values in (quality or {}).items():
            row[name] = best_of_n_values(proxy, values, n).mean()
        rows.append(row)
    return pd.DataFrame(rows)


def soft_weights(proxy: np.ndarray, beta: float) -> np.ndarray:
    """softmax(proxy / beta) over each prompt's samples (prompts, N)."""
    z = (proxy - proxy.max(axis=1, keepdims=True)) / beta
    w = np.exp(z)
    return w / w.sum(axis=1, keepdims=True)


def soft_kl_bound(weights: np.ndarray) -> np.ndarray:
    """Per prompt, KL(weights || uniform over the N samples) = sum w log(N w).

    The kept sample's distribution is the average, over the reference's N-draws, of each draw's weights,
    and the reference is the same average of uniform weights; KL is jointly convex, so this per-draw KL
    bounds the kept sample's KL to the reference from above, as log n - (n-1)/n does best-of-n's."""
    n = weights.shape[1]
    terms = np.where(weights > 0, weights * np.log(np.maximum(n * weights, 1e-300)), 0.0)
    return terms.sum(axis=1)


def soft_best_of_n_curve(proxy: np.ndarray, gold: np.ndarray, betas: list[float],
                         heldout_gold: np.ndarray | None = None) -> pd.DataFrame:
    """Per beta: soft best-of-N's KL bound, gold and proxy gains over the reference's mean on the same
    samples (and the held-out gold's, if given), with standard errors across prompts."""
    rows = []
    for beta in sorted(betas, reverse=True):  # from the reference's end of the curve outward
        w = soft_weights(proxy, beta)
        kl = soft_kl_bound(w)
        gold_gain = (w * gold).sum(axis=1) - gold.mean(axis=1)
        proxy_gain = (w * proxy).sum(axis=1) - proxy.mean(axis=1)
        row = {"beta": beta, "kl": kl.mean(), "kl_se": sem(kl), "gold_gain": gold_gain.mean(),
               "gold_gain_se": sem(gold_gain), "proxy_gain": proxy_gain.mean(), "proxy_gain_se": sem(proxy_gain)}
        if heldout_gold is not None:
            h = (w * heldout_gold).sum(axis=1) - heldout_gold.mean(axis=1)
            row.update(heldout_gold_gain=h.mean(), heldout_gold_gain_se=sem(h))
        rows.append(row)
    return pd.DataFrame(rows)


def per_prompt_curve(proxy: np.ndarray, gold: np.ndarray, max_n: int, heldout_gold: np.ndarray | None = None,
                     texts: list[str] | None = None, quality: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Per prompt and n = 1, 2, 4, ..., max_n: the expected gold (and held-out gold, and each `quality`
    measure) of best-of-n's pick (best_of_n_values), what the frontier compares a policy with prompt by
    prompt; with `texts` (the samples, prompt-major) also one actual pick, the proxy-argmax of the prompt's
    first n samples (a random n-subset: the samples are independent draws), for the sample tables."""
    prompts, N = proxy.shape
    frames = []
    for n in powers_of_two(max_n):
        frame = {"prompt": np.arange(prompts), "n": n, "kl": analytic_kl(n), "gold": best_of_n_values(proxy, gold, n)}
        if heldout_gold is not None:
            frame["heldout_gold"] = best_of_n_values(proxy, heldout_gold, n)
        for name, values in (quality or {}).items():
            frame[name] = best_of_n_values(proxy, values, n)
        if texts is not None:
            pick = np.arange(prompts) * N + proxy[:, :n].argmax(axis=1)  # first maximum: the same tie rule
            frame.update(pick_text=[texts[i] for i in pick], pick_gold=gold.ravel()[pick])
            if heldout_gold is not None:
                frame["pick_heldout_gold"] = heldout_gold.ravel()[pick]
        frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def bootstrap_se(statistic: Callable[[np.ndarray, np.ndarray], float], seeds: int, prompts: int,
                 draws: int = 2000, seed: int = 0) -> float:
    """Standard error of statistic(seed rows, prompt indices) by a bootstrap over the prompts and, when
    there are several, over the seeds (two-stage: the prompts the report set happened to draw and the
    training runs both vary). Draws where the statistic is undefined (nan) are left out."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(seeds, size=seeds) if seeds > 1 else np.zeros(1, dtype=int),
                        rng.integers(prompts, size=prompts)) for _ in range(draws)]
    return float(np.nanstd(values, ddof=1))


def bootstrap_mean_se(values: np.ndarray, draws: int = 2000, seed: int = 0) -> float:
    """bootstrap_se of values.mean() for values (seeds, prompts)."""
    return bootstrap_se(lambda rows, idx: values[np.ix_(rows, idx)].mean(), *values.shape, draws=draws, seed=seed)


# What a policy is compared with best-of-n on: column -> (best-of-n's change at the policy's KL, the
# policy's change minus it). The golds' changes are gains; text quality's (eval.text_quality) are changes
# of a share, e.g. repeated_words: +0.01 = one word in a hundred more repeats than best-of-n's picks.
COMPARED = {"gold": ("best_of_n_gold_gain_at_kl", "gain_over_best_of_n"),
            "heldout_gold": ("best_of_n_heldout_gold_gain_at_kl", "heldout_gain_over_best_of_n"),
            **{q: (f"best_of_n_{q}_change_at_kl", f"{q}_change_over_best_of_n") for q in QUALITY}}


def against_best_of_n(kl: float | np.ndarray, policy: dict[str, np.ndarray], curves: dict[str, pd.DataFrame],
                      ) -> dict[str, float | int | str | bool | None]:
    """The policy's change minus best-of-n's at the policy's KL, for each COMPARED column the two share
    (both golds; text quality), each change against the reference's mean on its own prompt. `policy`:
    column -> each report prompt's mean over the policy's samples, (seeds, prompts), and `kl` each seed's
    KL (one number: one seed); `curves`: name -> per_prompt_curve of the report set, the most precise
    first, the first on every prompt (its n = 1 is the reference the policy's change is measured from).
    The first curve whose measured KL reaches every seed's is used (`best_of_n_curve`), per prompt linear
    in KL between the measured n. The policy's change is averaged over every report prompt, best-of-n's
    over the prompts its curve has (the deep curve: the first few); the error is one bootstrap over the
    report prompts for both (so the prompts they share count once) and over the seeds. Past the end of
    every measured curve there is no comparison (None): `best_of_n_max_kl` says how far it went, and
    nothing is extrapolated."""
    kls = np.atleast_1d(np.asarray(kl, dtype=np.float64))
    reach = max(float(curve["kl"].max()) for curve in curves.values())
    name = next((name for name, curve in curves.items() if kls.max() <= curve["kl"].max()), None)
    out: dict[str, float | int | str | bool | None] = {
        "best_of_n_max_kl": reach, "beyond_best_of_n_curve": name is None, "best_of_n_curve": name,
        "best_of_n_prompts": None if name is None else int(curves[name]["prompt"].nunique())}
    first = next(iter(curves.values()))
    for column, (at_key, over_key) in COMPARED.items():
        if column not in policy or any(column not in curve for curve in curves.values()):
            continue
        keys = (at_key, over_key, f"{over_key}_se")
        out.update(dict.fromkeys(keys))
        if name is None:
            continue
        reference = first[first["n"] == 1].set_index("prompt")[column].sort_index().to_numpy()
        change = policy[column] - reference  # (seeds, prompts)
        table = curves[name].pivot(index="prompt", columns="n", values=column)  # (curve prompts, n)
        measured = curves[name].groupby("n")["kl"].first().loc[table.columns].to_numpy()
        at = np.array([[np.interp(k, measured, row) for row in table.to_numpy()] for k in kls])
        bo_change = at - table[1].to_numpy()  # (seeds, curve prompts)
        column_of = np.full(len(reference), -1)
        column_of[table.index.to_numpy()] = np.arange(len(table))

        def difference(rows: np.ndarray, idx: np.ndarray) -> float:
            kept = column_of[idx][column_of[idx] >= 0]
            return change[np.ix_(rows, idx)].mean() - (bo_change[np.ix_(rows, kept)].mean() if len(kept) else np.nan)

        every = np.arange(len(kls)), np.arange(len(reference))
        out.update(zip(keys, (float(bo_change.mean()), float(difference(*every)),
                              bootstrap_se(difference, len(kls), len(reference)))))
    return out
