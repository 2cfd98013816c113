"""Text quality per continuation: distinct bigrams, repeated words, words the training split never uses."""
import numpy as np
import pytest

from tinygpt.data.tokenizer import encode
from tinygpt.eval.text_quality import known_words, quality, quality_values, words
from tinygpt.rlhf.best_of_n import best_of_n_curve

KNOWN = known_words(np.asarray(encode("I'll be good, my lord; full of heart and well met."), dtype=np.uint16))


def test_known_words_are_the_lower_cased_words_of_the_decoded_tokens():
    assert KNOWN == {"i'll", "be", "good", "my", "lord", "full", "of", "heart", "and", "well", "met"}
    assert words("Paris:reonMy lord") == ["paris", "reonmy", "lord"]


def test_a_repeated_phrase_lowers_distinct_bigrams_and_counts_its_repeats():
    q = quality("good my lord good my lord", KNOWN)  # bigrams: good-my, my-lord, lord-good, good-my, my-lord
    assert q["distinct_2"] == pytest.approx(3 / 5)
    assert q["repeated_words"] == pytest.approx(3 / 6) and q["unseen_words"] == 0.0


def test_glued_tokens_are_unseen_words():
    q = quality("I'll good!\nBe full of, my heart.And wellBaseentle", KNOWN)  # a sample of a gamed policy
    assert q["unseen_words"] == pytest.approx(1 / 9)  # "wellbaseentle"; "heart.And" splits at the stop
    assert q["distinct_2"] == 1.0 and q["repeated_words"] == 0.0
    assert quality("", KNOWN) == {"distinct_2": 1.0, "repeated_words": 0.0, "unseen_words": 0.0}


def test_best_of_n_reports_the_expected_quality_of_its_picks():
    texts = ["good good good good", "my lord is well", "heart and lord"] * 2  # 2 prompts x 3 samples
    values = {name: v.reshape(2, 3) for name, v in quality_values(texts, KNOWN).items()}
    proxy = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]])  # the reward model prefers the repetitive sample
    curve = best_of_n_curve(proxy, np.zeros((2, 3)), 2, quality=values).set_index("n")
    assert curve.loc[1, "repeated_words"] == pytest.approx(np.mean([3 / 4, 0.0, 0.0]))
    # best-of-2 keeps the repetitive sample whenever it is drawn: in 2 of the 3 pairs
    assert curve.loc[2, "repeated_words"] == pytest.approx(2 / 3 * 3 / 4)
    # the one unseen word ("is") is in the sample the reward model likes least: best-of-2 never keeps it
    assert curve.loc[1, "unseen_words"] == pytest.approx(1 / 12) and curve.loc[2, "unseen_words"] == 0.0
