import pytest

from tinygpt.data.tokenizer import EOT_ID
from tinygpt.rlhf.oracles import (Oracle, afinn_score, brevity_score, keyword_score, prefer,
                                  sentiment_score)


def test_sentiment_is_vader_compound():
    assert sentiment_score("Good morrow, neighbour Baptista.") == pytest.approx(0.4404)
    assert sentiment_score("I hate thee, vile wretch") == pytest.approx(-0.8316)
    assert sentiment_score("") == 0.0


def test_brevity_counts_tokens_before_end_of_text():
    assert brevity_score([5, 6, 7, EOT_ID, EOT_ID]) == -3.0
    assert brevity_score([EOT_ID]) == 0.0
    assert brevity_score([5, 6, 7, 8]) == -4.0  # never ended: the whole length


def test_brevity_ends_a_reply_at_a_blank_line_however_it_is_tokenized():
    from tinygpt.data.tokenizer import encode

    speech = encode("ROMEO:\nI love thee.")  # 5+ tokens, no blank line
    assert brevity_score(speech + encode("\n\n") + encode("JULIET:\nAy.")) == -float(len(speech))
    newline = encode("\n")
    assert len(newline) == 1  # two single newlines are two tokens; the second completes the blank line
    assert brevity_score(speech + newline + newline + [EOT_ID]) == -float(len(speech) + 1)
    assert brevity_score(speech + [EOT_ID] + encode("\n\n")) == -float(len(speech))  # end-of-text first


def test_keyword_matches_whole_words_in_any_case():
    assert keyword_score("My LOVE is true", "love") == 1.0
    assert keyword_score("she is lovely", "love") == 0.0
    assert keyword_score("love, love", "love") == 1.0


def test_oracle_dispatches_on_its_name():
    texts, ids = ["good day", "bad day"], [[1, 2], [1, EOT_ID]]
    assert Oracle("sentiment").scores(texts, ids) == [sentiment_score("good day"), sentiment_score("bad day")]
    assert Oracle("brevity").scores(texts, ids) == [-2.0, -1.0]
    assert Oracle("keyword", "bad").scores(texts, ids) == [0.0, 1.0]
    with pytest.raises(ValueError, match="unknown"):
        Oracle("length")
    with pytest.raises(ValueError, match="keyword"):
        Oracle("keyword", " ")


def test_prefer_drops_ties_and_pairs_within_the_margin():
    assert prefer(0.5, 0.2) == 0
    assert prefer(0.2, 0.5) == 1
    assert prefer(0.3, 0.3) is None
    assert prefer(0.30, 0.35, min_margin=0.05) is None
    assert prefer(0.30, 0.36, min_margin=0.05) == 1


def test_the_sentiment_oracle_has_a_held_out_gold_the_others_have_none():
    assert afinn_score("I love thee, good my lord") == 6.0  # AFINN-165: love +3, good +3
    assert afinn_score("villain, die") < 0 and afinn_score("the table") == 0.0
    texts = ["I love thee", "I hate thee", ""]
    assert Oracle("sentiment").heldout_name == "afinn"
    assert Oracle("sentiment").heldout_scores(texts).tolist() == [3.0, -3.0, 0.0]
    assert Oracle("keyword", "love").heldout_scores(texts) is None and Oracle("brevity").heldout_name is None
