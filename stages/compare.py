"""Stage compare: our trained GPT against Hugging Face's GPT-2 — fidelity of the export, a pretrained
GPT-2 through the evaluate stage's code, speed of both implementations.
In: models/pretrain/, data/split/{val.bin, split.json}. Out: models/hf/, metrics/compare.json,
reports/compare/, plots/compare/."""
import sys

from tinygpt.core import io, timing
from tinygpt.core.compute import ComputeParams
from tinygpt.data.tokens import read_tokens
from tinygpt.eval.compare import UNAVAILABLE, run_compare, summary_lines
from tinygpt.eval.config import CompareParams, EvalParams
from tinygpt.model import weights
from tinygpt.model.hf import PretrainedUnavailable
from tinygpt.pipeline import params, paths, registry, tracking
from tinygpt.pipeline.cli import run_stage
from tinygpt.pipeline.outputs.compare import write_compare
from tinygpt.pipeline.params import TrackingParams


def main() -> None:
    p = params.load_sections(compare=CompareParams, eval=EvalParams, compute=ComputeParams, tracking=TrackingParams)
    flat = params.flatten({"compare": p.compare, "eval": p.eval, "compute": p.compute})
    with tracking.stage_run("compare", flat, p.tracking) as run:
        run.log_dataset(paths.VAL_BIN, "evaluation")
        model = weights.load_model(paths.PRETRAIN_DIR)
        split = io.read_json(paths.SPLIT_META)
        with timing.phase("evaluation"):  # loading GPT-2 and exporting ours included
            result = run_compare(model, p.compare, p.eval, read_tokens(paths.VAL_BIN), split["val"]["bytes"],
                                 paths.HF_DIR, progress=True, compute=p.compute)
        status = result.pretrained
        run.set_tags({"pretrained_status": status.status, "pretrained": status.name,
                      "pretrained_reason": status.reason or "-"})
        if status.status == UNAVAILABLE:
            print(f"warning: {PretrainedUnavailable(status.name, status.reason)}; "
                  "compared our model with its export only", file=sys.stderr)
        write_compare(result, paths.COMPARE_PLOTS, paths.COMPARE_REPORTS)
        # Folders keep their layout in MLflow (both models write files of the same names).
        run.log_artifact(paths.COMPARE_REPORTS, "reports")
        run.log_artifact(paths.COMPARE_PLOTS, "plots")
        with timing.phase("registration"):
            registry.log_hf_model(paths.HF_DIR, registry.registered_name(p.tracking.experiment, "hf"))
        metrics = run.finish(result.metrics())
        io.write_json(paths.metrics_file("compare"), metrics)
        print("compare:\n  " + "\n  ".join(summary_lines(result)))


if __name__ == "__main__":
    run_stage(main)
