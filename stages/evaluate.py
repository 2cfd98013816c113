"""Stage evaluate: loss, perplexity, bits per byte, calibration and next-token inspection of the
pretrained model. In: models/pretrain/, data/split/. Out: metrics/evaluate.json, plots/evaluate/,
reports/evaluate/."""
from tinygpt.core import io, timing
from tinygpt.core.compute import ComputeParams
from tinygpt.data.tokens import read_tokens
from tinygpt.eval.config import EvalParams
from tinygpt.eval.evaluate import evaluate_model, summary_line
from tinygpt.model import weights
from tinygpt.pipeline import params, paths, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs.evaluate import write_evaluation
from tinygpt.pipeline.params import TrackingParams


def main() -> None:
    p = params.load_sections(eval=EvalParams, compute=ComputeParams, tracking=TrackingParams)
    with tracking.stage_run("evaluate", params.flatten({"eval": p.eval, "compute": p.compute}), p.tracking) as run:
        run.log_dataset(paths.TRAIN_BIN, "evaluation")
        run.log_dataset(paths.VAL_BIN, "evaluation")
        model = weights.load_model(paths.PRETRAIN_DIR)
        run.log_params({f"model.{k}": v for k, v in model.config.to_dict().items()})
        split = io.read_json(paths.SPLIT_META)
        with timing.phase("evaluation"):
            result = evaluate_model(
                model, p.eval,
                val_tokens=read_tokens(paths.VAL_BIN), val_bytes=split["val"]["bytes"],
                train_tokens=read_tokens(paths.TRAIN_BIN), train_bytes=split["train"]["bytes"],
                compute=p.compute, progress=True,
            )
        written = write_evaluation(result, paths.EVALUATE_PLOTS, paths.EVALUATE_REPORTS, title="pretrain")
        metrics = run.finish(result.metrics, artifacts=written)
        io.write_json(paths.metrics_file("evaluate"), metrics)
        print(f"evaluate: {summary_line(result.metrics)}")


if __name__ == "__main__":
    run_stage(main)
