import json
import subprocess
import sys

import tinygpt
from tinygpt.pipeline import cli


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tinygpt.pipeline.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_version(repo_root):
    out = run_cli("--version", cwd=repo_root)
    assert out.returncode == 0 and out.stdout.strip() == f"tinygpt {tinygpt.__version__}"


def test_params_prints_resolved_sections(repo_root):
    out = run_cli("params", cwd=repo_root)
    assert out.returncode == 0, out.stderr
    resolved = json.loads(out.stdout)
    assert resolved["split"] == {"val_fraction": 0.1}
    assert resolved["model"]["vocab_size"] == 50257


def test_bad_params_exit_nonzero_with_one_line(tmp_path):
    (tmp_path / "params.yaml").write_text("split:\n  val_fraction: 2\n")
    out = run_cli("params", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "error: params.yaml: split.val_fraction = 2.0 is invalid; allowed: a fraction strictly between 0 and 1"
    ]


def test_section_filter(repo_root, capsys, monkeypatch):
    monkeypatch.chdir(repo_root)
    cli.main(["params", "--section", "split"])
    assert json.loads(capsys.readouterr().out) == {"split": {"val_fraction": 0.1}}
