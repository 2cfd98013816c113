"""Where a stage's wall time goes: its start-up (the interpreter and its imports), then named phases
(data, training, evaluation, logging, registration). Phases nest and are exclusive: a second spent in an
evaluation inside training counts toward evaluation only, so the parts add up to the total.

A stage process has one profile (`profile()`); library code marks its own phases with `phase(name)`, so
the stage scripts need not thread a timer through every call."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import psutil

UNMARKED = "other"  # time in no named phase: the stage's glue, writing its output files


def seconds_since_process_start() -> float:
    """Wall time since this process was created (psutil: the OS's start time of the process)."""
    return max(0.0, time.time() - psutil.Process().create_time())


class Profile:
    """Exclusive wall-clock seconds per phase since the profile was made, plus the start-up before it."""

    def __init__(self) -> None:
        self.startup = seconds_since_process_start()
        self.seconds: dict[str, float] = {}
        self._stack = [UNMARKED]
        self._mark = time.perf_counter()

    def _charge(self) -> None:
        now = time.perf_counter()
        name = self._stack[-1]
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._mark
        self._mark = now

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._charge()
        self._stack.append(name)
        try:
            yield
        finally:
            self._charge()
            self._stack.pop()

    def summary(self) -> dict[str, float]:
        """{startup_s, <phase>_s ..., total_s}, seconds so far; the phases in the order first entered."""
        self._charge()
        parts = {"startup_s": self.startup, **{f"{name}_s": s for name, s in self.seconds.items()}}
        return {**parts, "total_s": sum(parts.values())}


_profile: Profile | None = None


def profile() -> Profile:
    """This process's profile, made on first use (a stage makes it before its main(): start-up ends there)."""
    global _profile
    if _profile is None:
        _profile = Profile()
    return _profile


def phase(name: str):
    """Charge the wall time of a `with` block to `name` in this process's profile."""
    return profile().phase(name)
