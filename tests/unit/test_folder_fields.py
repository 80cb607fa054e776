"""The readers under every model-folder check: JSON with a nesting limit, typed field checks,
random states."""

import json
import math

import pytest
import torch

from rnnkit.data import fields
from rnnkit.data.vocab import Vocab
from rnnkit.errors import MAX_JSON_DEPTH, CheckpointError, parse_json
from rnnkit.training import folder_check


def test_json_nesting_is_limited_before_parsing() -> None:
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert parse_json(deepest) == json.loads(deepest)
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_JSON_DEPTH} levels"):
        parse_json("[" + deepest + "]")
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json('{"a": ' * 100_000)  # refused before json.loads would recurse


def test_brackets_inside_strings_do_not_count() -> None:
    """A character vocabulary holds "[", "{" and quotes: none of them is nesting."""
    tokens = ["[" * 50, "{" * 50, '"[', "\\", "]]]", 'a\\"[[']
    text = json.dumps({"tokens": tokens})
    assert parse_json(text) == {"tokens": tokens}


def test_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="Expecting"):
        parse_json('{"step": ')


@pytest.mark.parametrize("value", [True, 1.0, "3", None, -1, 2**31])
def test_integer_refuses_everything_but_an_integer_in_range(value) -> None:
    with pytest.raises(ValueError, match=r"size must be an integer in \[0, 2\^31\), got "):
        fields.integer(value, "size", 0, 2**31 - 1)


def test_integer_bounds_are_inclusive() -> None:
    assert fields.integer(0, "n") == 0
    assert fields.integer(2**63 - 1, "n") == 2**63 - 1
    with pytest.raises(ValueError, match=r"n must be an integer in \[1, 5\], got 6"):
        fields.integer(6, "n", 1, 5)


@pytest.mark.parametrize("value", [math.nan, math.inf, "1", True, None, -0.5])
def test_number_refuses_non_finite_and_non_numbers(value) -> None:
    with pytest.raises(ValueError, match="x must be a finite number of at least 0"):
        fields.number(value, "x", low=0)
    assert fields.number(3, "x") == 3.0


def test_strings_names_the_duplicate_and_single_characters() -> None:
    assert fields.strings(["a", "b"], "tags", least=1) == ["a", "b"]
    with pytest.raises(ValueError, match="tags holds 'b' twice"):
        fields.strings(["a", "b", "b"], "tags")
    with pytest.raises(ValueError, match="tags must be a list of strings, got \\['a', 1\\]"):
        fields.strings(["a", 1], "tags")
    with pytest.raises(ValueError, match="tags must have at least 1 entries, got 0"):
        fields.strings([], "tags", least=1)
    with pytest.raises(ValueError, match="chars must hold single characters, got 'ab'"):
        fields.strings(["a", "ab"], "chars", single=True)


def test_objects_list_missing_and_unknown_keys() -> None:
    assert fields.obj({"a": 1}, "x", ("a",), ("b",)) == {"a": 1}
    with pytest.raises(ValueError, match="x lacks 'a'"):
        fields.obj({"b": 1}, "x", ("a",), ("b",))
    with pytest.raises(ValueError, match="x has unknown key 'c'; valid keys: 'a', 'b'"):
        fields.obj({"a": 1, "c": 2}, "x", ("a",), ("b",))
    with pytest.raises(ValueError, match="the file must hold a JSON object, got \\[1\\]"):
        fields.obj([1], "", ("a",))


def test_long_values_are_shown_short() -> None:
    with pytest.raises(ValueError) as err:
        fields.integer(list(range(10**6)), "n")
    assert len(str(err.value)) < 100


def test_vocab_messages_name_the_nested_field() -> None:
    good = Vocab.build("ab").to_dict()
    assert Vocab.from_dict(good, "source") == Vocab.build("ab")
    with pytest.raises(ValueError, match=r"source\.tokens holds 'a' twice"):
        Vocab.from_dict({**good, "tokens": [*good["tokens"], "a"]}, "source")
    with pytest.raises(ValueError, match=r"target\.specials\.eos must be '<eos>', got '\.'"):
        Vocab.from_dict({**good, "specials": {**good["specials"], "eos": "."}}, "target")
    with pytest.raises(ValueError, match="source lacks 'tokens'"):
        Vocab.from_dict({}, "source")


def test_every_process_random_state_is_checked(tmp_path) -> None:
    """A run of 2 processes saves each one's state as rank<r>.rng.*: all must be there and
    valid, and no rank beyond the run's."""
    state = torch.get_rng_state()  # (5056,) uint8
    loop = {"rng.cpu": state, "rank0.rng.cpu": state}
    with pytest.raises(CheckpointError, match=r"lacks rank1\.rng\.cpu"):
        folder_check.check_loop_tensors(loop, {}, 2, tmp_path)
    loop["rank1.rng.cpu"] = state
    folder_check.check_loop_tensors(loop, {}, 2, tmp_path)
    with pytest.raises(CheckpointError, match=r"unknown tensor 'rank0\.rng\.cpu'"):
        folder_check.check_loop_tensors(loop, {}, 1, tmp_path)
    loop["rank1.rng.cpu"] = torch.zeros_like(state)
    with pytest.raises(CheckpointError, match=r"rank1\.rng\.cpu: Invalid mt19937 state"):
        folder_check.check_loop_tensors(loop, {}, 2, tmp_path)
    loop["rank1.rng.cpu"] = state
    cuda = {"rank0.rng.cuda": torch.zeros(16, dtype=torch.uint8), "rng.cuda.0": state[:16]}
    if not torch.cuda.is_available():  # kept, unchecked: only a CUDA machine uses them
        folder_check.check_loop_tensors(loop | cuda, {}, 2, tmp_path)
    with pytest.raises(CheckpointError, match=r"unknown tensor .rank2\.rng\.cuda"):
        folder_check.check_loop_tensors(loop | {"rank2.rng.cuda": state[:16]}, {}, 2, tmp_path)
