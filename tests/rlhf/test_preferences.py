import numpy as np
import pytest

from tinygpt.core.errors import ParamsError
from tinygpt.model.config import GPTConfig
from tinygpt.rlhf import preferences as prefs
from tinygpt.rlhf.config import PreferencesParams
from tinygpt.rlhf.oracles import Oracle

NL = 198


def continuations(scores: list[float], samples: int) -> prefs.Continuations:
    n_prompts = len(scores) // samples
    return prefs.Continuations(
        prompt_ids=np.arange(n_prompts * 2).reshape(n_prompts, 2) + 100,
        samples=samples,
        ids=[[i] for i in range(len(scores))],
        texts=[f"text {i}" for i in range(len(scores))],
        scores=scores,
    )


def test_prompts_start_at_line_starts_and_are_distinct():
    tokens = np.array([5, NL, 10, 11, 12, 628, 20, 21, 22, NL, 30, 31, 32, 33, NL, 40], dtype=np.uint16)
    prompts = prefs.cut_prompts(tokens, 3, 3, np.random.default_rng(0))
    assert sorted(map(tuple, prompts.tolist())) == [(10, 11, 12), (20, 21, 22), (30, 31, 32)]
    with pytest.raises(prefs.PreferenceDataError, match="preferences.train_prompts"):
        prefs.cut_prompts(tokens, 4, 3, np.random.default_rng(0))  # the start before 40 lacks room


def test_every_two_samples_of_a_prompt_form_a_pair_and_ties_are_dropped():
    cont = continuations([0.5, 0.5, 0.1, 0.0, 0.9, 0.9], samples=3)
    rows, ties = prefs.label_pairs(cont, min_margin=0.0)
    assert ties == 2  # (0, 1) and (4, 5)
    pairs = list(zip(rows["chosen"], rows["rejected"]))
    assert pairs == [("text 0", "text 2"), ("text 1", "text 2"), ("text 4", "text 3"), ("text 5", "text 3")]
    assert rows["chosen_score"] == [0.5, 0.5, 0.9, 0.9] and rows["rejected_score"] == [0.1, 0.1, 0.0, 0.0]
    assert rows["prompt_ids"][0] == [100, 101] and rows["prompt_ids"][2] == [102, 103]
    rows, ties = prefs.label_pairs(cont, min_margin=0.4)
    assert ties == 4 and rows["chosen"] == ["text 4", "text 5"]


def test_all_ties_is_an_error_naming_the_oracle(tmp_path):
    with pytest.raises(prefs.PreferenceDataError, match=r"all 3 pairs tied under oracle 'brevity'.*-24"):
        prefs.build_pairs(continuations([-24.0] * 3, samples=3), 0.0, "train", Oracle("brevity"))


def test_pairs_round_trip_through_disk(tmp_path):
    cont = continuations([0.1, 0.7, 0.3, 0.2], samples=2)
    pairs, stats = prefs.build_pairs(cont, 0.0, "train", Oracle("sentiment"))
    assert stats["pairs"] == 2 and stats["ties_dropped"] == 0 and stats["oracle_mean"] == pytest.approx(0.325)
    prompts = prefs.prompts_dataset(cont.prompt_ids)
    prefs.save({"train": pairs}, {"train": prompts}, tmp_path / "pairs", tmp_path / "prompts")
    loaded = prefs.load_pairs(tmp_path / "pairs")["train"]
    assert loaded["chosen_ids"] == [[1], [2]] and loaded["chosen_score"] == [0.7, 0.3]
    assert prefs.load_prompts(tmp_path / "prompts", "train").tolist() == [[100, 101], [102, 103]]
    with pytest.raises(FileNotFoundError, match="dvc repro preferences"):
        prefs.load_pairs(tmp_path / "absent")


def test_prompt_and_continuation_must_fit_the_context():
    p = PreferencesParams(prompt_tokens=8, continuation_tokens=24)
    prefs.check_fits(GPTConfig(block_size=33), p)
    with pytest.raises(prefs.PreferenceDataError, match="= 33 exceeds the model's context of 32"):
        prefs.check_fits(GPTConfig(block_size=32), p)


def test_held_out_prompts_are_dealt_into_disjoint_seeded_selection_and_report_sets():
    prompts = np.arange(40).reshape(20, 2)
    sets = prefs.heldout_sets(prompts, 8, np.random.default_rng(3))
    assert len(sets["selection"]) == 8 and len(sets["report"]) == 12
    rows = lambda a: {tuple(r) for r in a.tolist()}  # noqa: E731
    assert rows(sets["selection"]).isdisjoint(rows(sets["report"]))
    assert rows(sets["selection"]) | rows(sets["report"]) == rows(prompts)
    assert sets["report"][:, 0].tolist() == sorted(sets["report"][:, 0].tolist())  # text order kept
    again = prefs.heldout_sets(prompts, 8, np.random.default_rng(3))
    assert np.array_equal(again["selection"], sets["selection"])
    assert not np.array_equal(prefs.heldout_sets(prompts, 8, np.random.default_rng(4))["selection"], sets["selection"])


def test_selection_set_must_leave_a_report_set():
    with pytest.raises(ParamsError, match="preferences.selection_prompts"):
        PreferencesParams(val_prompts=8, selection_prompts=8).validate()
