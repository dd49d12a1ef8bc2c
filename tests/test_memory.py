"""The translation memory: which training pairs a new source finds (no TensorFlow involved)."""

import pytest

from tfllm.errors import UserInputError
from tfllm.memory import TranslationMemory, units


def test_units_are_cjk_characters_and_lower_cased_words():
    assert units("电脑 Game-Boy 3D") == ["电", "脑", "game", "boy", "3d"]


def test_lookup_prefers_shared_rare_units_then_their_order_then_length():
    memory = TranslationMemory(["脑电", "电脑游戏", "电", "的电脑", "大脑"],
                               ["brain waves", "computer game", "electric", "the computer", "brain"])
    # "电脑" in that order beats "脑电", which shares the same characters in the other order.
    assert memory.lookup(["电脑"], k=3) == [["the computer", "computer game", "brain waves"]]
    # A rarer shared unit outweighs a common one: 大 appears once, 电 four times.
    assert memory.lookup(["大电"], k=1) == [["brain"]]
    assert memory.lookup(["水"], k=4) == [[]]  # nothing shared, nothing found
    (best, score), (second, lower) = memory.lookup(["电脑"], k=2, scores=True)[0]
    assert (best, second) == ("the computer", "computer game") and score == lower == 1  # tied, then by length


def test_the_same_source_comes_first_however_many_longer_ones_hold_it_and_weak_matches_score_low():
    # 人 came after hundreds of cedict's longer headwords that hold 人, off the shortlist. A source found as it is
    # gets its own targets alone: 平板电脑 holds all of 电脑, tied with it, and the model chose "tablet computer".
    memory = TranslationMemory(["平板电脑", "电脑", "脑炎"] + [f"人{i}" for i in range(300)] + ["人"],
                               ["tablet computer", "computer", "encephalitis"] + ["x"] * 300 + ["person"])
    assert memory.lookup(["电脑"], k=2, scores=True) == [[("computer", 1.0)]]  # was also "tablet computer", tied
    assert memory.lookup(["人"], k=1, scores=True) == [[("person", 1.0)]]
    # One character shared of four, the others never seen: a weak match, and its score says so.
    assert dict(memory.lookup(["电脑游戏"], k=3, scores=True)[0])["encephalitis"] < 0.3


def test_words_match_across_case_and_targets_come_back_once():
    memory = TranslationMemory(["Good morning", "good night", "GOOD morning!"], ["早上好", "晚安", "早上好"])
    assert memory.lookup(["good Morning", "good morning, Sir"], k=3) == [["早上好"], ["早上好", "晚安"]]


@pytest.mark.parametrize("sources, targets, k, message", [
    (["a"], ["b", "c"], 1, "one target per source"),
    ([], [], 1, "at least one"),
    (["a"], ["b"], 0, "positive integer"),
])
def test_bad_memory_or_k_is_one_clear_error(sources, targets, k, message):
    with pytest.raises(UserInputError, match=message):
        TranslationMemory(sources, targets).lookup(["a"], k=k)


def test_one_string_is_not_a_list_of_sources():
    with pytest.raises(UserInputError, match="got a single string"):  # each character was looked up
        TranslationMemory(["电脑"], ["computer"]).lookup("电脑")


def test_rare_cjk_characters_are_units_of_their_own():
    # Extension B (U+20000 and up) was glued to its neighbours as one "word", so nothing matched it.
    assert units("𠀀字 Hello") == ["𠀀", "字", "hello"]
    assert TranslationMemory(["𠀀字", "字"], ["a", "b"]).lookup(["𠀀"], k=2) == [["a"]]


def test_long_substrings_are_counted_with_overlaps_as_short_ones_are():
    from tfllm.input_method import SubstringCounts

    counts = SubstringCounts(["哈" * 12])
    assert list(counts(["哈" * 8, "哈" * 9, "哈" * 12, "哈" * 13])) == [5, 4, 1, 0]  # 9+ characters: was 1
