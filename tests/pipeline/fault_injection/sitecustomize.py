"""Fault injection for tests/pipeline/test_faults.py: on PYTHONPATH, Python imports this in every process it
starts (dvc's stages too). Each fault is off unless its variable is set:

- TINYGPT_KILL_BEFORE=metrics/<stage>.json: the process kills itself with SIGKILL the moment it is about
  to write that file (a crash between a stage's outputs and its metrics).
- TINYGPT_HOLD_AT_STEP=N with TINYGPT_HOLD_MARKER=<file>: after logging training step N the stage writes
  its pid to the marker and waits, so that a test can `kill -9` it at a known point mid-training, however
  fast the machine (a kill timed by the clock once landed after training on a faster CI machine)."""
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

if os.environ.get("TINYGPT_HOLD_AT_STEP"):
    import time
    from pathlib import Path

    from tinygpt.pipeline import tracking

    hold_step, marker = int(os.environ["TINYGPT_HOLD_AT_STEP"]), Path(os.environ["TINYGPT_HOLD_MARKER"])
    log_step = tracking.StageRun.log_step

    def log_step_then_hold(self, step, metrics):
        log_step(self, step, metrics)
        if step == hold_step:
            marker.write_text(str(os.getpid()))
            while True:  # until the test's SIGKILL
                time.sleep(1)

    tracking.StageRun.log_step = log_step_then_hold
