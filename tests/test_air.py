"""AIR ranking (train_scripts/common/air.py): hand-computed selections, ties, both IR measures."""

import math

import numpy as np
import pytest

from train_scripts.common.air import (
    air_ranks,
    informativeness,
    rank,
    select_top_k,
    sentence_length,
    word_entropy,
    words,
)

# Four comments of one image, worked by hand:
#   s_A    = 0.1  0.5  0.3  0.2   -> AR = 1 4 3 2
#   length = 5    2    8    3     -> IR = 3 1 4 2
#   AR+IR  = 4    5    7    4     -> AIR = 1 3 4 2 (comments 0 and 3 tie at 4; comment 3 has the higher AR)
COMMENTS = [
    "one two three four five",
    "two words",
    "a much longer comment about light and colour",
    "three short words",
]
RELEVANCE = [0.1, 0.5, 0.3, 0.2]


def test_words_and_measures():
    assert words("Nice light, isn't it? :-) 10/10") == ["nice", "light", "isn't", "it", "10", "10"]
    assert [sentence_length(c) for c in COMMENTS] == [5, 2, 8, 3]
    assert word_entropy("") == 0.0
    assert word_entropy("nice nice nice") == 0.0
    assert word_entropy("a b") == pytest.approx(1.0)
    assert word_entropy("a b c d") == pytest.approx(2.0)
    assert word_entropy("the the cat") == pytest.approx(-(2 / 3) * math.log2(2 / 3) - (1 / 3) * math.log2(1 / 3))
    with pytest.raises(ValueError, match="informativeness must be one of"):
        informativeness(["x"], "syllables")


def test_rank_higher_is_better_and_ties_go_to_the_earlier_item():
    assert rank([0.1, 0.5, 0.3]).tolist() == [1, 3, 2]
    assert rank([0.5, 0.5, 0.5]).tolist() == [3, 2, 1]
    assert rank([2, 1, 2, 1]).tolist() == [4, 2, 3, 1]
    # a tie breaker decides before the position does
    assert rank([1, 1, 1], [0, 5, 2]).tolist() == [1, 3, 2]
    assert rank([]).tolist() == []
    with pytest.raises(ValueError, match="NaN"):
        rank([0.1, float("nan")])


def test_air_hand_computed():
    ar, ir, air = air_ranks(RELEVANCE, informativeness(COMMENTS, "length"))
    assert ar.tolist() == [1, 4, 3, 2]
    assert ir.tolist() == [3, 1, 4, 2]
    assert air.tolist() == [1, 3, 4, 2]
    assert select_top_k(RELEVANCE, informativeness(COMMENTS), top_k=2).indices == [2, 1]
    assert select_top_k(RELEVANCE, informativeness(COMMENTS), top_k=3).indices == [2, 1, 3]


def test_k_larger_than_the_number_of_comments_keeps_all_best_first():
    selection = select_top_k(RELEVANCE, informativeness(COMMENTS), top_k=10)
    assert selection.indices == [2, 1, 3, 0]


def test_alpha_zero_is_pure_informativeness_and_beta_zero_pure_relevance():
    info = informativeness(COMMENTS)
    assert select_top_k(RELEVANCE, info, top_k=2, alpha=0.0).indices == [2, 0]  # longest first
    assert select_top_k(RELEVANCE, info, top_k=2, beta=0.0).indices == [1, 2]  # most relevant first
    # weights change the balance: with alpha = 2 relevance dominates (2*AR + IR = 5 9 10 6)
    assert select_top_k(RELEVANCE, info, top_k=4, alpha=2.0).indices == [2, 1, 3, 0]
    with pytest.raises(ValueError, match="not both zero"):
        select_top_k(RELEVANCE, info, alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match="non-negative"):
        select_top_k(RELEVANCE, info, alpha=-1.0)


def test_entropy_measure_changes_the_selection():
    comments = ["nice nice nice nice nice nice", "good light and colour", "ok"]
    relevance = [0.2, 0.3, 0.1]
    assert informativeness(comments, "length").tolist() == [6, 4, 1]
    assert select_top_k(relevance, informativeness(comments, "length"), top_k=1, alpha=0.0).indices == [0]
    # by entropy the repeated word carries nothing (0 bits) and "good light and colour" 2 bits
    assert informativeness(comments, "entropy").tolist() == [0.0, 2.0, 0.0]
    assert select_top_k(relevance, informativeness(comments, "entropy"), top_k=1, alpha=0.0).indices == [1]


def test_all_tied_is_deterministic_and_order_based():
    selection = select_top_k([0.3] * 5, [4.0] * 5, top_k=3)
    assert selection.indices == [0, 1, 2]
    assert selection.air.tolist() == [5, 4, 3, 2, 1]


def test_selection_does_not_depend_on_input_order_without_ties():
    rng = np.random.default_rng(0)
    relevance, info = rng.random(9), rng.permutation(9).astype(float)
    kept = select_top_k(relevance, info, top_k=4).indices
    permutation = rng.permutation(9)
    kept_permuted = select_top_k(relevance[permutation], info[permutation], top_k=4).indices
    assert [int(permutation[i]) for i in kept_permuted] == kept


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        air_ranks([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        select_top_k([0.1], [1.0], top_k=0)
