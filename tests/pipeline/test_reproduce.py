"""CI's comparison of a rerun with the committed metrics, and the stage-output hashes it compares."""
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tinygpt.pipeline import reproduce
from tinygpt.pipeline.reproduce import Check, compare, stage_out_hashes, table

CHECKS = (Check("loss", "pretrain", "whole_val.loss", 0.03), Check("tokens", "split", "train.tokens", 0))
COMMITTED = {"pretrain": {"whole_val": {"loss": 4.54}}, "split": {"train": {"tokens": 301_966}}}


def test_within_tolerance_passes_and_outside_fails():
    same = compare(COMMITTED, {"pretrain": {"whole_val": {"loss": 4.569}}, "split": {"train": {"tokens": 301_966}}}, CHECKS)
    assert [r.ok for r in same] == [True, True]
    moved = compare(COMMITTED, {"pretrain": {"whole_val": {"loss": 4.58}}, "split": {"train": {"tokens": 301_965}}}, CHECKS)
    assert [r.ok for r in moved] == [False, False]  # 0.04 > 0.03; a count must match exactly
    missing = compare(COMMITTED, {"pretrain": {}}, CHECKS)
    assert [r.ok for r in missing] == [False, False]
    text = table(moved)
    assert "| loss | metrics/pretrain.json: whole_val.loss | 4.54 | 4.58 | +0.04 | ±0.03 | NO |" in text
    assert "missing" in table(missing)


def test_every_check_names_a_metric_the_stage_writes(repo_root):
    """The keys exist in the committed metrics (a renamed metric must not silently drop a check)."""
    for check in reproduce.CHECKS:
        metrics = json.loads((repo_root / f"metrics/{check.stage}.json").read_text())
        assert isinstance(reproduce.lookup(metrics, check.key), (int, float)), f"{check.stage}: {check.key}"


def test_stage_out_hashes_leave_out_the_metrics(tmp_path):
    lock = {"schema": "2.0", "stages": {"evaluate": {"cmd": "x", "outs": [
        {"path": "reports/evaluate", "md5": "a.dir"}, {"path": "metrics/evaluate.json", "md5": "b"},
        {"path": "plots/evaluate/reliability.png", "md5": "c"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert stage_out_hashes("evaluate", tmp_path / "dvc.lock") == {"reports/evaluate": "a.dir",
                                                                   "plots/evaluate/reliability.png": "c"}


def test_metrics_are_committed_and_not_cached_by_dvc(repo_root):
    stages = yaml.safe_load((repo_root / "dvc.yaml").read_text())["stages"]
    tracked = subprocess.run(["git", "ls-files", "metrics"], cwd=repo_root, capture_output=True, text=True).stdout.split()
    for name, stage in stages.items():
        for entry in stage.get("metrics", []):
            path, options = next(iter(entry.items()))
            assert options.get("cache") is False, f"stage {name}: {path} must have cache: false (it lives in git)"
            assert path in tracked, f"{path} is not committed"


def test_the_committed_sample_table_is_the_committed_runs(repo_root, monkeypatch):
    """docs/frontier_samples.md is the committed run's reports/frontier/samples.md (a stage out in DVC's
    cache, so copied into git with the metrics): its policies are at the steps the committed metrics report."""
    import re

    monkeypatch.chdir(repo_root)  # committed_metrics asks git in the working directory
    table = (repo_root / "docs/frontier_samples.md").read_text()
    frontier = reproduce.committed_metrics("frontier", "HEAD")
    for method in ("PPO", "DPO"):
        steps = set(re.findall(rf"^\| {method}, step (\d+) ", table, flags=re.MULTILINE))
        assert steps == {str(frontier[method.lower()]["selected_step"])}, (method, steps)


@pytest.mark.parametrize("document, heading", [("README.md", "## Measured"),
                                               ("docs/experiments.md", "## The committed run")])
def test_the_docs_quote_their_measured_numbers_from_the_committed_metrics(repo_root, document, heading,
                                                                        monkeypatch):
    """Every row of README's "Measured" table (and of the full table in docs/experiments.md) names a
    metrics file and key; the number shown must be that value as committed at HEAD (rounded to the digits
    shown), so a `dvc repro` or `dvc exp run` in this checkout, which rewrites metrics/, does not fail it."""
    import re

    monkeypatch.chdir(repo_root)  # committed_metrics asks git in the working directory

    text = (repo_root / document).read_text()
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| [^|]+ \| \*{0,2}([-+−]?[\d,]*\.?\d+)\*{0,2}[^|]* \| `(metrics/\w+\.json)`: `([\w.]+)` \|$",
                      section, flags=re.MULTILINE)
    assert len(rows) >= 8, f"the Measured table has {len(rows)} rows that name a file and key"
    for shown, path, key in rows:
        value = reproduce.lookup(reproduce.committed_metrics(Path(path).stem, "HEAD"), key)
        assert isinstance(value, (int, float)), f"{path}: {key} is not a number"
        digits = len(shown.split(".")[1]) if "." in shown else 0
        assert f"{value:.{digits}f}" == f"{float(shown.replace(',', '').replace('−', '-')):.{digits}f}", \
            f"{document} shows {shown} for {path}: {key}, the file has {value}"


def test_ci_runs_the_readme_commands_the_whole_pipeline_and_its_checks(repo_root):
    """.ci/run is what lands a change: it must run the README's test command, the whole pipeline (no
    stage named), and the checks against the committed metrics."""
    ci = [line.strip() for line in (repo_root / ".ci/run").read_text().splitlines() if not line.strip().startswith("#")]
    readme = (repo_root / "README.md").read_text()
    for command in ("make test", "make test-slow", "make repro"):
        assert command in ci and command in readme, command
    makefile = (repo_root / "Makefile").read_text()
    repro_recipe = makefile.split("\nrepro:", 1)[1].split("\n\n", 1)[0]
    assert repro_recipe.rstrip().endswith("dvc repro"), "make repro must run the whole pipeline"
    assert "-m pytest -q" in makefile.split("\nPYTEST :=", 1)[1].split("\n", 1)[0]
    # the two tiers are every test: one marker splits them
    assert '$(PYTEST) -m "not slow"' in makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "$(PYTEST) -m slow" in makefile.split("\ntest-slow:", 1)[1].split("\n\n", 1)[0]
    assert "python -m tinygpt.pipeline.reproduce metrics --against HEAD" in ci
    assert "dvc repro --force --single-item evaluate" in ci
    assert ci.index("make test") < ci.index("make test-slow") < ci.index("make repro") \
        < ci.index("python -m tinygpt.pipeline.reproduce metrics --against HEAD")


def test_the_metrics_command_compares_the_workspace_with_a_commit(tmp_path, monkeypatch, capsys):
    """End to end as CI calls it: committed metrics in a git repository, a rerun's files in the workspace."""
    import shutil

    from support import REPO_ROOT

    shutil.copytree(REPO_ROOT / "metrics", tmp_path / "metrics")
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "metrics"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "metrics"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    assert reproduce.main(["metrics", "--against", "HEAD"]) == 0
    assert "| RLHF gold (VADER) gain |" in capsys.readouterr().out

    pretrain = json.loads((tmp_path / "metrics/pretrain.json").read_text())
    pretrain["whole_val"]["loss"] += 0.05  # a rerun 0.05 nats worse: outside the 0.03 tolerance
    (tmp_path / "metrics/pretrain.json").write_text(json.dumps(pretrain))
    assert reproduce.main(["metrics", "--against", "HEAD"]) == 1
    captured = capsys.readouterr()
    assert "| NO |" in captured.out and "pretrain whole-val loss" in captured.err
    assert reproduce.main(["metrics", "--against", "no-such-revision"]) == 1
    assert "is not committed at no-such-revision" in capsys.readouterr().err


def test_the_times_table_lines_up_phases_and_the_baseline_totals():
    profiles = {"pretrain": {"startup": 4.0, "training": 90.0, "total": 100.0},
                "frontier": {"startup": 3.0, "other": 1.0, "total": 4.0}}
    baseline = {"pretrain": {"total": 200.0}, "frontier": {}}  # frontier's old metrics had no time
    lines = reproduce.times_table(profiles, baseline).splitlines()
    assert lines[0] == "| stage | startup | training | other | total | baseline total | ratio |"
    assert lines[2] == "| pretrain | 4.0 | 90.0 |  | 100.0 | 200.0 | 0.50 |"
    assert lines[3] == "| frontier | 3.0 |  | 1.0 | 4.0 |  |  |"
    assert lines[4] == "| all |  |  |  | 104.0 | 200.0 | 0.52 |"
    assert reproduce.stage_times({"wall_seconds": 5.0}) == {"total": 5.0}
    assert reproduce.stage_times({"time": {"startup_s": 1.0, "total_s": 2.0}}) == {"startup": 1.0, "total": 2.0}
