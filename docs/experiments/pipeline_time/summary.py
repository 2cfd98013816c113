"""Summarise the screens in this folder: each run's selected point (selection and report set) and stage
time, then mean and seed SD per setting. Run: python docs/experiments/pipeline_time/summary.py"""
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).parent
KEYS = ("sel_gain", "sel_afinn", "sel_kl", "sel_ppl", "rep_gain", "rep_afinn", "rep_kl", "total_s", "training_s")


def row(m: dict) -> dict:
    sel, rep = m["selection_change"], m["change"]
    return dict(step=m["selected_step"], sel_gain=sel["oracle_mean"], sel_se=sel["oracle_se"],
                sel_afinn=sel["heldout_oracle_mean"], sel_kl=sel["kl_mean"], sel_ppl=sel["val_perplexity_relative"],
                rep_gain=rep["oracle_mean"], rep_afinn=rep["heldout_oracle_mean"], rep_kl=m["after"]["kl_mean"],
                total_s=m["time"]["total_s"], training_s=m["time"]["training_s"])


groups = defaultdict(list)
for path in sorted(HERE.glob("*_seed*.json")):
    setting, seed = re.fullmatch(r"(.+)_seed(\d+)\.json", path.name).groups()
    r = row(json.loads(path.read_text()))
    groups[setting].append(r)
    print(f"{setting:24s} seed {seed:>4s}", {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()})
for setting, rows in groups.items():
    if len(rows) > 1:
        print(f"{setting} ({len(rows)} seeds):", ", ".join(
            f"{k} {statistics.mean(r[k] for r in rows):.3f} ± {statistics.stdev(r[k] for r in rows):.3f}" for k in KEYS))
