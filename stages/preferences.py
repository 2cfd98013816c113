"""Stage preferences: prompts cut from the text, continuations sampled from the pretrained model, pairs
labelled chosen/rejected by an oracle. In: models/pretrain/ (or models/sft/: preferences.start_model), data/split/{train,val}.bin.
Out: data/preferences/{pairs,prompts}/ (datasets, Arrow), metrics/preferences.json."""

import numpy as np
import torch

from tinygpt.core import io, timing
from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.data.tokens import read_tokens
from tinygpt.model.weights import load_model
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.params import TrackingParams
from tinygpt.rlhf import preferences as prefs
from tinygpt.rlhf.config import PreferencesParams
from tinygpt.rlhf.oracles import Oracle


def main() -> None:
    p = params.load_sections(preferences=PreferencesParams, compute=ComputeParams, tracking=TrackingParams)
    preferences_params = p.preferences
    flat = params.flatten({"preferences": preferences_params, "compute": p.compute})
    with tracking.stage_run("preferences", flat, p.tracking) as run:
        run.log_dataset(paths.TRAIN_BIN, "prompts")
        run.log_dataset(paths.VAL_BIN, "prompts")
        device = resolve_device(p.compute.device)
        precision = resolve_precision(p.compute.precision, device)
        with timing.phase("data"):
            model = load_model(paths.start_model_dir(p.preferences.start_model), device)
        prefs.check_fits(model.config, preferences_params)
        oracle = Oracle(preferences_params.oracle, preferences_params.keyword)
        seed = preferences_params.seed
        rng, generator = np.random.default_rng(seed), torch.Generator(device).manual_seed(seed)
        length = preferences_params.prompt_tokens
        prompt_sets = {"train": prefs.cut_prompts(read_tokens(paths.TRAIN_BIN), preferences_params.train_prompts,
                                                  length, rng)}
        val_prompts = prefs.cut_prompts(read_tokens(paths.VAL_BIN), preferences_params.val_prompts, length, rng)
        prompt_sets.update(prefs.heldout_sets(val_prompts, preferences_params.selection_prompts, rng))
        pairs, prompts, stats = {}, {}, {}
        with timing.phase("sampling"):  # and the oracle's scores
            for split, prompt_ids in prompt_sets.items():
                pairs[split], prompts[split], stats[split] = prefs.build_split(
                    model, prompt_ids, split, preferences_params, oracle, generator, precision
                )
        prefs.save(pairs, prompts, paths.PREFERENCE_PAIRS, paths.PREFERENCE_PROMPTS)
        run.log_dict(pairs["train"].select(range(min(20, len(pairs["train"])))).to_list(), "pairs_head.json")
        metrics = {**stats, "precision": precision}
        io.write_json(paths.metrics_file("preferences"), run.finish(metrics))
        print(f"preferences: {stats['train']['pairs']} train / {stats['selection']['pairs']} selection / "
              f"{stats['report']['pairs']} report pairs "
              f"(oracle {preferences_params.oracle}; {stats['train']['tie_fraction']:.0%} of train pairs tied)")


if __name__ == "__main__":
    run_stage(main)
