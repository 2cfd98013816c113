"""The pretrain stage as one process of an external torchrun, each process in a project folder of its own
(argv[1]/rank<RANK>), so a test can see what each process wrote. Started by tests/train/test_distributed.py."""
import os
import runpy
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

if __name__ == "__main__":
    os.chdir(Path(sys.argv[1]) / f"rank{os.environ['RANK']}")
    sys.path.insert(0, str(REPO_ROOT))  # the stages package
    runpy.run_module("stages.pretrain", run_name="__main__", alter_sys=True)
