"""The queue helper's reading of `dvc queue status` and of a failed experiment's log (tests/support.py)."""
from support import failed_in_a_stage, failed_names

STATUS = """Task     Name    Created    Status
4283ebf  load-1  11:56 PM   Failed
e3a22f9  load-0  11:56 PM   Success
0da8f1b  load-3  11:56 PM   Success

Worker status: 0 active, 1 idle
"""


def test_failed_names_are_read_from_the_status_table():
    assert failed_names(STATUS) == ["load-1"]
    assert failed_names(STATUS.replace("Failed", "Success")) == []


def test_a_stage_failure_is_told_from_a_failure_of_the_queue():
    stage = ("Running stage 'rlhf':\n> python -m stages.rlhf\nerror: ...\n"
             "ERROR: failed to reproduce 'rlhf': failed to run: python -m stages.rlhf, exited with 1")
    assert failed_in_a_stage(stage)
    assert failed_in_a_stage("Running stage 'reward':\nTraceback (most recent call last):\n  ...")
    assert not failed_in_a_stage("ERROR: No output logs found for experiment 'load-1'\n"
                                 "Experiment likely failed during setup.")
    assert not failed_in_a_stage("Running stage 'rlhf':\n...\nUpdating lock file 'dvc.lock'\n")
