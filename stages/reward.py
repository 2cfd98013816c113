"""Stage reward: the pretrained transformer plus a scalar head on the last token, trained on the
preference pairs with the Bradley-Terry loss, its rewards normalised on the training pairs.
In: models/pretrain/, data/preferences/pairs/. Out: models/reward/, metrics/reward.json, plots/reward/."""
import time

import torch

from tinygpt import io, params, paths, tracking
from tinygpt import reward_model as rm
from tinygpt.cli import run_stage
from tinygpt.device import resolve_device, resolve_precision
from tinygpt.preferences import load_pairs
from tinygpt.rlhf_plots import write_curves
from tinygpt.weights import load_model


def main() -> None:
    start = time.perf_counter()
    p = params.load_sections("reward", "tracking")
    cfg = p.reward
    with tracking.stage_run("reward", params.flatten({"reward": cfg}), p.tracking.experiment) as run:
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        pairs = load_pairs(paths.PREFERENCE_PAIRS)
        train, val = rm.pair_tensors(pairs["train"], device), rm.pair_tensors(pairs["validation"], device)
        torch.manual_seed(cfg.seed)
        model = rm.RewardModel(load_model(paths.PRETRAIN_DIR, device)).to(device)
        history = rm.train_reward_model(
            model, train, cfg.learning_rate, cfg.weight_decay, cfg.epochs, cfg.batch_size, cfg.warmup_steps,
            cfg.grad_clip, cfg.seed, precision, on_step=run.log_step,
        )
        rm.fit_normalisation(model, train, 4 * cfg.batch_size, precision)
        rm.save_reward_model(model, paths.REWARD_DIR)
        write_curves(history, paths.REWARD_STEPS_CSV, paths.REWARD_STEPS_PNG,
                     ["loss", "accuracy", "grad_norm", "lr"], "reward model: Bradley-Terry training")
        metrics = {
            "train": rm.evaluate_pairs(model, train, 4 * cfg.batch_size, precision),
            "validation": rm.evaluate_pairs(model, val, 4 * cfg.batch_size, precision),
            "normalisation": {"offset": model.offset.item(), "scale": model.scale.item()},
            "steps": len(history), "precision": precision, "wall_seconds": time.perf_counter() - start,
        }
        io.write_json(paths.metrics_file("reward"), run.finish(metrics, artifacts=[paths.REWARD_PLOTS]))
        v = metrics["validation"]
        print(f"reward: held-out pair accuracy {v['accuracy']:.3f}, "
              f"Spearman with the oracle {v['oracle_spearman']:.3f} ({len(val)} pairs)")


if __name__ == "__main__":
    run_stage(main)
