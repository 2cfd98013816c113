import time

import pytest

from tinygpt.core import timing


def test_nested_phases_count_toward_the_innermost_and_add_up_to_the_total():
    profile = timing.Profile()
    with profile.phase("training"):
        time.sleep(0.02)
        with profile.phase("evaluation"):
            time.sleep(0.3)
        time.sleep(0.02)
    with profile.phase("evaluation"):
        time.sleep(0.01)
    summary = profile.summary()
    assert list(summary) == ["startup_s", "other_s", "training_s", "evaluation_s", "total_s"]
    assert 0.04 <= summary["training_s"] < 0.3  # its own 40 ms, not the nested 300
    assert summary["evaluation_s"] >= 0.31
    assert summary["startup_s"] > 0  # this process started before the profile (pytest's imports)
    assert sum(v for k, v in summary.items() if k != "total_s") == pytest.approx(summary["total_s"])


def test_a_phase_that_raises_is_still_charged_and_closed():
    profile = timing.Profile()
    with pytest.raises(ValueError):
        with profile.phase("data"):
            time.sleep(0.01)
            raise ValueError
    time.sleep(0.01)
    summary = profile.summary()
    assert summary["data_s"] >= 0.01 and summary["other_s"] >= 0.01
