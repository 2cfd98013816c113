"""Stage preferences: prompts cut from the text, continuations sampled from the pretrained model, pairs
labelled chosen/rejected by an oracle. In: models/pretrain/, data/split/{train,val}.bin.
Out: data/preferences/{pairs,prompts}/ (datasets, Arrow), metrics/preferences.json."""
import time

import numpy as np
import torch

from tinygpt import data, io, params, paths, tracking
from tinygpt import preferences as prefs
from tinygpt.cli import run_stage
from tinygpt.device import resolve_device, resolve_precision
from tinygpt.oracles import Oracle
from tinygpt.weights import load_model


def main() -> None:
    start = time.perf_counter()
    p = params.load_sections("preferences", "tracking")
    cfg = p.preferences
    with tracking.stage_run("preferences", params.flatten({"preferences": cfg}), p.tracking.experiment) as run:
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        model = load_model(paths.PRETRAIN_DIR, device)
        prefs.check_fits(model.config, cfg)
        oracle = Oracle(cfg.oracle, cfg.keyword)
        rng, generator = np.random.default_rng(cfg.seed), torch.Generator(device).manual_seed(cfg.seed)
        pairs, prompts, stats = {}, {}, {}
        for split, path, n in (("train", paths.TRAIN_BIN, cfg.train_prompts),
                               ("validation", paths.VAL_BIN, cfg.val_prompts)):
            pairs[split], prompts[split], stats[split] = prefs.build_split(
                model, data.read_tokens(path), n, split, cfg, oracle, rng, generator, precision
            )
        prefs.save(pairs, prompts, paths.PREFERENCE_PAIRS, paths.PREFERENCE_PROMPTS)
        run.log_dict(pairs["train"].select(range(min(20, len(pairs["train"])))).to_list(), "pairs_head.json")
        metrics = {**stats, "precision": precision, "wall_seconds": time.perf_counter() - start}
        io.write_json(paths.metrics_file("preferences"), run.finish(metrics))
        print(f"preferences: {stats['train']['pairs']} train / {stats['validation']['pairs']} validation pairs "
              f"(oracle {cfg.oracle}; {stats['train']['tie_fraction']:.0%} of train pairs tied)")


if __name__ == "__main__":
    run_stage(main)
