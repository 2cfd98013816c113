"""A change costs what it touches: on a finished copy of the tiny pipeline, real `dvc status` after a
one-line edit lists only the stages that use the edited file; a queued experiment runs its own copy's code."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support import REPO_ROOT, commit_all, copy_finished, dvc, run_queue

DATA_STAGES = ("download", "tokenize", "split")
RLHF_CONFIG_READERS = {"check_params", "preferences", "reward", "best_of_n", "rlhf", "dpo", "frontier", "report"}


def stale_stages(project: Path) -> set[str]:
    """The stages `dvc status` reports as changed (each is a line 'name:' at the start)."""
    out = dvc(project, "status").stdout
    return set(re.findall(r"^(\w+):", out, flags=re.MULTILINE))


def touch(project: Path, relative: str) -> None:
    with (project / relative).open("a") as f:
        f.write("\n# a comment: changes no number, only the file's hash\n")


@pytest.mark.slow
@pytest.mark.parametrize("edited, expected", [
    ("src/tinygpt/rlhf/dpo.py", {"dpo"}),
    ("src/tinygpt/rlhf/config.py", RLHF_CONFIG_READERS),
    ("src/tinygpt/eval/calibration.py", {"evaluate", "compare"}),
    ("src/tinygpt/pipeline/outputs/frontier.py", {"frontier"}),  # the figure: no finetuning reruns for it
    ("src/tinygpt/rlhf/best_of_n.py", {"best_of_n", "frontier"}),  # PPO and DPO read its samples, not its code
    ("src/tinygpt/pipeline/outputs/best_of_n.py", {"best_of_n"}),  # ... nor how it writes them
    ("src/tinygpt/pipeline/registry.py", set()),  # MLflow model logging: no stage's outputs depend on it
])
def test_an_edit_stales_only_the_stages_that_use_the_file(finished_project, tmp_path, edited, expected):
    project = copy_finished(finished_project, tmp_path / "project")
    assert stale_stages(project) == set()
    touch(project, edited)
    assert stale_stages(project) == expected


def test_data_stages_use_no_model_code_and_pretrain_no_rlhf_code():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    for name in DATA_STAGES:
        heavy = [d for d in stages[name]["deps"] if d.startswith(("src/tinygpt/model/", "src/tinygpt/train/",
                                                                 "src/tinygpt/eval/", "src/tinygpt/rlhf/"))]
        assert not heavy, f"stage {name} depends on {heavy}"
    assert not [d for d in stages["pretrain"]["deps"] if d.startswith("src/tinygpt/rlhf/")]
    assert "src/tinygpt/eval/calibration.py" not in stages["pretrain"]["deps"]


def test_the_frontier_stage_reads_tables_and_the_finetuning_stages_not_its_report_code():
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    assert not [d for d in stages["frontier"]["deps"] if d.startswith(("src/tinygpt/model/", "src/tinygpt/train/"))]
    for name in ("rlhf", "dpo"):
        assert "src/tinygpt/pipeline/outputs/frontier.py" not in stages[name]["deps"]


PROBE_STAGE = '''"""A stage that records which tinygpt it imported."""
import json
import tinygpt.probe as probe
json.dump({"value": probe.VALUE, "file": probe.__file__}, open("probe.json", "w"))
'''


@pytest.mark.slow
def test_a_queued_experiment_runs_its_own_copy_of_the_code(tmp_path):
    """An experiment queued with a code change runs that change, even when the workspace has been changed
    back before the queue runs (without stages/__init__.py it imported the installed package's code)."""
    project = tmp_path / "project"
    (project / "stages").mkdir(parents=True)
    (project / "src/tinygpt").mkdir(parents=True)
    shutil.copy2(REPO_ROOT / "stages/__init__.py", project / "stages/__init__.py")
    shutil.copy2(REPO_ROOT / "src/tinygpt/__init__.py", project / "src/tinygpt/__init__.py")
    (project / "stages/probe.py").write_text(PROBE_STAGE)
    (project / "src/tinygpt/probe.py").write_text('VALUE = "committed"\n')
    (project / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"probe": {
        "cmd": "python -m stages.probe", "deps": ["stages/probe.py", "src/tinygpt/probe.py"],
        "metrics": [{"probe.json": {"cache": False}}]}}}))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    dvc(project, "init", "-q")
    commit_all(project, "probe project")

    (project / "src/tinygpt/probe.py").write_text('VALUE = "queued"\n')
    dvc(project, "exp", "run", "--queue", "-n", "queued-probe")
    (project / "src/tinygpt/probe.py").write_text('VALUE = "committed"\n')  # the workspace changes back
    status = run_queue(project, timeout_s=300)
    assert "Success" in status, status
    dvc(project, "exp", "apply", "queued-probe")
    probe = json.loads((project / "probe.json").read_text())
    assert probe["value"] == "queued"
    assert ".dvc/tmp/exps" in probe["file"] and str(REPO_ROOT) not in probe["file"]
