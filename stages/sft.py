"""Stage sft: supervised finetuning of the pretrained model on dialogue, a speech and the next speaker's reply
cut from the train split, the loss on the replies only; the kept step is the one with the lowest reply NLL
on the selection half of the val split's pairs, and the numbers are the report half's.
In: models/pretrain/, data/split/train.bin, val.bin. Out: models/sft/, metrics/sft.json, plots/sft/,
reports/sft/samples.md."""

from tinygpt.core import io, timing
from tinygpt.core.compute import ComputeParams
from tinygpt.core.device import resolve_device, resolve_precision
from tinygpt.data.dialogue import dialogue_data
from tinygpt.data.tokens import read_tokens
from tinygpt.model.weights import load_model, save_model
from tinygpt.pipeline import params, paths, registry, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs.sft import write_outputs
from tinygpt.pipeline.params import TrackingParams
from tinygpt.rlhf import sft
from tinygpt.rlhf.sft_config import SftParams
from tinygpt.rlhf.tuning import frozen_copy


def main() -> None:
    p = params.load_sections(sft=SftParams, compute=ComputeParams, tracking=TrackingParams)
    sft_params = p.sft
    with tracking.stage_run("sft", params.flatten({"sft": sft_params, "compute": p.compute}), p.tracking,
                            system_metrics=True) as run:
        run.log_dataset(paths.TRAIN_BIN, "training")
        run.log_dataset(paths.VAL_BIN, "evaluation")
        device = resolve_device(p.compute.device)
        precision = resolve_precision(p.compute.precision, device)
        with timing.phase("data"):
            model = load_model(paths.PRETRAIN_DIR, device)
            data = dialogue_data(read_tokens(paths.TRAIN_BIN), read_tokens(paths.VAL_BIN), model.config.block_size + 1,
                                 sft_params.seed)
        pretrained = frozen_copy(model)
        batch = 4 * sft_params.batch_size
        with timing.phase("evaluation"):
            before = {name: sft.evaluate_replies(pretrained, data.held_out[name], batch, precision)
                      for name in ("selection", "report")}
            asked = data.held_out["report"][: sft_params.samples]
            before_samples = sft.sample_replies(pretrained, asked, sft_params)
        checkpoints = sft.Checkpoints(data.held_out["selection"], batch, precision)
        with timing.phase("training"):  # its held-out evaluations included
            history = sft.train_sft(model, data.train, sft_params, precision, on_step=run.log_step,
                                    on_eval=checkpoints)
        model = checkpoints.best(model)
        save_model(model, paths.SFT_DIR)
        with timing.phase("evaluation"):
            after = {name: sft.evaluate_replies(model, data.held_out[name], batch, precision)
                     for name in ("selection", "report")}
            after_samples = sft.sample_replies(model, asked, sft_params)
        written = write_outputs(history, checkpoints.curve, before_samples, after_samples)
        metrics = {"pairs": data.counts(), "selected_step": checkpoints.best_step, "steps": len(history),
                   "before": {**before, "replies": sft.ending_summary(before_samples)},
                   "after": {**after, "replies": sft.ending_summary(after_samples)},
                   "precision": precision}
        registry.log_stage_model("sft", p.tracking.experiment, paths.SFT_DIR, metrics)
        io.write_json(paths.metrics_file("sft"), run.finish(metrics, artifacts=written))
        b, a = metrics["before"], metrics["after"]
        print(f"sft: step {checkpoints.best_step} of {len(history)} kept; report set: reply NLL "
              f"{b['report']['nll']:.3f} -> {a['report']['nll']:.3f} nats/token (text alone "
              f"{b['report']['text_nll']:.3f} -> {a['report']['text_nll']:.3f}); replies that end where a speech "
              f"ends {b['replies']['ended_share']:.0%} -> {a['replies']['ended_share']:.0%}")


if __name__ == "__main__":
    run_stage(main)
