"""The files the stages write: the pretrain stage's figures draw perplexity on a log axis."""
import json
import math

from tinygpt.core.figures import pyplot
from tinygpt.pipeline.outputs import curves
from tinygpt.pipeline.outputs import pretrain as pretrain_outputs
from tinygpt.train.loop import TrainResult


def test_pretrain_figures_draw_every_perplexity_on_a_log_axis(tmp_path, monkeypatch):
    """The first evaluation's perplexity is ~50,000 (exp ln 50257); linearly, the rest is a flat line."""
    figures = []
    monkeypatch.setattr(curves, "write_figure", lambda fig, path: figures.append(fig))
    evals = [{"step": s, "train_loss": loss, "val_loss": loss + 0.1, "train_perplexity": math.exp(loss),
              "val_perplexity": math.exp(loss + 0.1)} for s, loss in ((0, 10.8), (10, 6.0), (20, 5.0))]
    history = [{"step": s, "loss": 10.0 - s, "lr": 1e-3, "grad_norm": 1.0, "tokens_per_s": 100.0} for s in range(3)]
    result = TrainResult(model=None, history=history, evals=evals, metrics={}, checkpoint_dir=tmp_path, resumed_from=0)
    pretrain_outputs.write_plots(result, tmp_path)
    panels = {ax.get_title(): ax.get_yscale() for fig in figures for ax in fig.axes if ax.get_title()}
    for fig in figures:
        pyplot().close(fig)
    assert {t for t, scale in panels.items() if "perplexity" in t} == {"train_perplexity", "val_perplexity"}
    assert all((scale == "log") == ("perplexity" in t) for t, scale in panels.items()), panels


def test_dvc_draws_every_perplexity_plot_on_a_log_axis(repo_root):
    import yaml

    spec = yaml.safe_load((repo_root / "dvc.yaml").read_text())
    top_level = {next(iter(p)): next(iter(p.values())) for p in spec["plots"]}
    stage_level = {next(iter(e)): next(iter(e.values())) for e in spec["stages"]["pretrain"]["plots"]
                   if isinstance(e, dict)}
    assert top_level["pretrain/perplexity"]["template"] == "log_y"
    assert stage_level["plots/pretrain/eval.csv"] == {"x": "step", "y": "val_perplexity", "template": "log_y"}
    template = json.loads((repo_root / ".dvc" / "plots" / "log_y.json").read_text())
    y_scales = [layer["encoding"]["y"]["scale"] for layer in template["layer"] if "y" in layer.get("encoding", {})]
    assert y_scales and all(scale == {"type": "log"} for scale in y_scales)
