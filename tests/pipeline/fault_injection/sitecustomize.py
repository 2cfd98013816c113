"""Fault injection for tests/pipeline/test_faults.py: on PYTHONPATH, Python imports this in every process it
starts (dvc's stages too). With TINYGPT_KILL_BEFORE=metrics/<stage>.json set, the process kills itself with
SIGKILL the moment it is about to write that file: a crash between a stage's outputs and its metrics."""
import os

if os.environ.get("TINYGPT_KILL_BEFORE"):
    import signal
    from pathlib import Path

    from tinygpt.core import io

    target = Path(os.environ["TINYGPT_KILL_BEFORE"])
    write_json = io.write_json

    def write_json_or_die(path, obj):
        if Path(path) == target:
            os.kill(os.getpid(), signal.SIGKILL)
        write_json(path, obj)

    io.write_json = write_json_or_die
