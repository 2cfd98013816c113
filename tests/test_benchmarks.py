"""Every benchmark script still imports against the library it measures (a renamed class broke
rollout_speed.py once, unnoticed until someone ran it), and the cheapest one runs end to end."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))


def load(path: Path, monkeypatch: pytest.MonkeyPatch):
    name = f"benchmark_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # a dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_every_benchmark_imports_and_has_a_main(path, monkeypatch):
    assert callable(load(path, monkeypatch).main)


def test_rollout_speed_runs_on_random_weights(monkeypatch, capsys):
    module = load(Path(__file__).parents[1] / "benchmarks" / "rollout_speed.py", monkeypatch)
    monkeypatch.setattr(sys, "argv", ["rollout_speed.py", "--batch", "2", "--new", "3", "--repeats", "1",
                                      "--precision", "fp32"])
    module.main()
    lines = capsys.readouterr().out.splitlines()
    assert len([line for line in lines if "tokens/s" in line]) == 3  # multinomial, full head, compact head
