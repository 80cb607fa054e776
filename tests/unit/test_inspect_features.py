"""rnnkit.inspect.features: each built-in feature on a hand-checked text; user regexes; errors."""

import pytest
import torch

from rnnkit.errors import ConfigError
from rnnkit.inspect.features import (
    BUILTIN,
    Feature,
    char_features,
    choose_features,
    parse_feature,
    probe_targets,
    token_features,
)

TEXT = 'a = f("x y", (1, [2]))\n    if b:\n\tc'


def column_of(name: str) -> list[float]:
    return char_features(TEXT, [Feature(name)])[:, 0].tolist()


def test_in_quotes_from_the_opening_quote_to_before_the_closing_one() -> None:
    opening, closing = TEXT.index('"'), TEXT.rindex('"')  # "x y": 6 and 10
    assert column_of("in_quotes") == [float(opening <= i < closing) for i in range(len(TEXT))]
    assert char_features("“ab” c", [Feature("in_quotes")])[:, 0].tolist() == [1, 1, 1, 0, 0, 0]


def test_brackets_parens_column_indent() -> None:
    depth = column_of("bracket_depth")
    assert depth[:6] == [0, 0, 0, 0, 0, 1]  # ( opens at 5
    assert max(depth) == 3 and depth[TEXT.index("[")] == 3 and depth[TEXT.index("]")] == 2
    assert depth[TEXT.index("\n")] == 0
    assert column_of("in_parens")[TEXT.index("[")] == 1 and column_of("in_parens")[21] == 0
    column = column_of("column")
    assert column[:3] == [1, 2, 3] and column[TEXT.index("\n")] == 0
    assert column[TEXT.index("\n") + 1] == 1
    indent = column_of("indent")
    start = TEXT.index("\n") + 1
    assert indent[start : start + 7] == [1, 2, 3, 4, 4, 4, 4]
    assert indent[TEXT.rindex("\t")] == 1 and indent[-1] == 1  # a tab counts one


def test_word_start_and_after_newline() -> None:
    word_start = column_of("word_start")
    starts = [i for i, v in enumerate(word_start) if v]
    assert [TEXT[i] for i in starts] == ["a", "f", "x", "y", "1", "2", "i", "b", "c"]
    after = column_of("after_newline")
    assert [TEXT[i] for i, v in enumerate(after) if v] == [" ", "\t"]


def test_user_regex_marks_the_characters_inside_its_matches() -> None:
    feature = parse_feature("digits=[0-9]+|y")
    values = char_features("ab12 y3", [feature])[:, 0].tolist()
    assert values == [0, 0, 1, 1, 0, 1, 1]


def test_parse_and_choose_features() -> None:
    assert [f.name for f in choose_features([])] == list(BUILTIN)
    chosen = choose_features(["column", "q=x", "in_quotes"])
    assert [f.name for f in chosen] == ["column", "in_quotes", "q"]
    assert [f.name for f in choose_features(["q=x"])] == [*BUILTIN, "q"]
    with pytest.raises(ConfigError, match="unknown feature 'colum'; built in: in_quotes"):
        parse_feature("colum")
    with pytest.raises(ConfigError, match=r"bad regular expression '\[a'.*unterminated"):
        parse_feature("name=[a")
    with pytest.raises(ConfigError, match="is built in"):
        parse_feature("column=x")
    with pytest.raises(ConfigError, match="given twice"):
        choose_features(["q=x", "q=y"])


def test_word_level_tokens_take_the_value_at_their_last_character() -> None:
    pieces = ["said", ' "hi', ' there"', "\n", "ok"]
    values = token_features(pieces, [Feature("in_quotes"), Feature("column")])
    assert values[:, 0].tolist() == [0, 1, 0, 0, 0]
    assert values[:, 1].tolist() == [4, 8, 15, 0, 2]


def test_probe_targets_binary_as_is_and_counts_above_their_mean() -> None:
    features = [Feature("in_quotes"), Feature("column")]
    values = torch.tensor([[1.0, 1.0], [0.0, 2.0], [1.0, 9.0]])
    assert probe_targets(values, features).tolist() == [[True, False], [False, False], [True, True]]
