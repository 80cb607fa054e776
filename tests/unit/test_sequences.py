"""Random and stratified splits, padded batches, length-bucketed batches."""

from collections import Counter

import numpy as np
import pytest
import torch

from rnnkit.data.sequences import BUCKET_BATCHES, BucketBatches, pad_batch, split_indices
from rnnkit.errors import ConfigError, DataError


def test_split_is_a_sorted_partition_and_deterministic() -> None:
    train, val = split_indices(20, 0.25, seed=3)
    assert train.dtype == val.dtype == np.int64
    assert len(val) == 5 and len(train) == 15
    assert sorted([*train, *val]) == list(range(20))
    assert (np.diff(train) > 0).all() and (np.diff(val) > 0).all()
    again = split_indices(20, 0.25, seed=3)
    assert np.array_equal(again[1], val)
    others = [split_indices(20, 0.25, seed=s)[1] for s in range(4, 9)]
    assert any(not np.array_equal(o, val) for o in others)  # the seed draws the split


def test_split_rounds_halves_up_and_keeps_one_for_training() -> None:
    assert len(split_indices(5, 0.1, seed=0)[1]) == 1  # 0.5 rounds up (round() would give 0)
    assert len(split_indices(2, 0.9, seed=0)[1]) == 1  # 1.8 -> 2, but one stays for training


def test_split_of_zero_holds_out_nothing() -> None:
    for labels in (None, ["a", "b", "a", "a", "b"]):
        train, val = split_indices(5, 0.0, seed=0, labels=labels)
        assert train.dtype == val.dtype == np.int64
        assert list(train) == [0, 1, 2, 3, 4] and len(val) == 0


def test_stratified_split_per_label_counts() -> None:
    labels = ["a"] * 10 + ["b"] * 4 + ["c"] * 1 + ["d"] * 2 + ["e"] * 3
    rng = np.random.default_rng(0)
    labels = list(rng.permutation(labels))  # labels interleaved, not in blocks
    train, val = split_indices(len(labels), 0.3, seed=1, labels=labels)
    in_val = Counter(labels[i] for i in val)
    in_train = Counter(labels[i] for i in train)
    # round(0.3 * count), halves up, capped so one stays in training
    assert in_val == {"a": 3, "b": 1, "d": 1, "e": 1}
    assert in_train == {"a": 7, "b": 3, "c": 1, "d": 1, "e": 2}
    assert sorted([*train, *val]) == list(range(len(labels)))
    again = split_indices(len(labels), 0.3, seed=1, labels=labels)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)


def test_stratified_split_keeps_singletons_in_training() -> None:
    with pytest.raises(DataError, match=r"--val-frac 0.5 of 3 examples holds out none per label"):
        split_indices(3, 0.5, seed=0, labels=["x", "y", "z"])


def test_split_errors() -> None:
    with pytest.raises(DataError, match=r"--val-frac 0.01 of 10 examples holds out none; raise"):
        split_indices(10, 0.01, seed=0)
    with pytest.raises(DataError, match=r"1 example\(s\) cannot be split"):
        split_indices(1, 0.5, seed=0)
    with pytest.raises(ConfigError, match=r"val_frac must be in \[0, 1\), got 1.0"):
        split_indices(10, 1.0, seed=0)
    with pytest.raises(ValueError, match="2 labels for n=3"):
        split_indices(3, 0.5, seed=0, labels=["a", "b"])


def test_pad_batch() -> None:
    ids, lengths = pad_batch([[5, 6], [7], [8, 9, 10]], pad_id=0)
    assert ids.dtype == lengths.dtype == torch.long
    assert ids.tolist() == [[5, 6, 0], [7, 0, 0], [8, 9, 10]]
    assert lengths.tolist() == [2, 1, 3]
    ids, _ = pad_batch([np.array([1]), [2, 3]], pad_id=-1)
    assert ids.tolist() == [[1, -1], [2, 3]]
    with pytest.raises(ValueError, match="empty sequence at 1"):
        pad_batch([[1], []])
    with pytest.raises(ValueError, match="no sequences"):
        pad_batch([])


def padding(batches: list[np.ndarray], lengths: np.ndarray) -> int:
    """Padded steps when each batch is padded to its longest sequence."""
    return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)


def test_every_example_once_per_epoch() -> None:
    lengths = np.random.default_rng(0).integers(1, 40, size=1003)
    batches = BucketBatches(lengths, batch_size=8, seed=5)
    assert len(batches) == 126  # ceil(1003 / 8)
    for e in range(3):
        epoch = batches.epoch(e)
        assert len(epoch) == len(batches)
        assert sorted(np.concatenate(epoch).tolist()) == list(range(1003))
        assert sorted(len(b) for b in epoch)[1:] == [8] * 125  # one short batch at most
        assert all(b.dtype == np.int64 for b in epoch)


def test_batches_are_fixed_by_seed_and_epoch() -> None:
    lengths = np.random.default_rng(1).integers(1, 40, size=300)

    def as_lists(batches: BucketBatches, e: int) -> list[list[int]]:
        return [b.tolist() for b in batches.epoch(e)]

    a, b = BucketBatches(lengths, 4, seed=7), BucketBatches(lengths, 4, seed=7)
    assert as_lists(a, 2) == as_lists(b, 2)
    assert as_lists(a, 2) != as_lists(a, 3)
    assert as_lists(a, 2) != as_lists(BucketBatches(lengths, 4, seed=8), 2)
    assert as_lists(BucketBatches(lengths, 4, seed=-1), 0) == as_lists(
        BucketBatches(lengths, 4, seed=-1), 0
    )
    assert [a.batch(3, i).tolist() for i in range(len(a))] == as_lists(b, 3)
    assert a.batch(2, 5).tolist() == as_lists(b, 2)[5]


def test_batches_mix_chunks_and_change_order() -> None:
    # Within an epoch the batch order is shuffled: lengths do not rise batch by batch through
    # each chunk (which would give at most one fall per chunk, 9 in all), but fall about half
    # the time.
    lengths = np.arange(1, 2001)
    epoch = BucketBatches(lengths, 4, seed=0).epoch(0)
    maxima = np.array([lengths[b].max() for b in epoch])
    assert (np.diff(maxima) < 0).sum() > len(epoch) // 4
    # Each chunk of BUCKET_BATCHES batches is sorted on its own, so a batch holds examples of
    # similar length but not the same ones every epoch.
    first = {tuple(sorted(b.tolist())) for b in epoch}
    second = {tuple(sorted(b.tolist())) for b in BucketBatches(lengths, 4, seed=0).epoch(1)}
    assert len(first & second) < len(first) // 10


def test_bucketing_pads_far_less_than_random_batches() -> None:
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(3.0, 1.0, size=4000).astype(int), 1, 500)  # 1..500 steps
    batch_size = 32
    bucketed = padding(BucketBatches(lengths, batch_size, seed=0).epoch(0), lengths)
    order = rng.permutation(len(lengths))
    random = padding([order[i : i + batch_size] for i in range(0, 4000, batch_size)], lengths)
    assert bucketed < 0.3 * random
    assert BUCKET_BATCHES * batch_size < len(lengths)  # more than one chunk was sorted


def test_unshuffled_batches_are_sorted_by_length() -> None:
    lengths = [5, 1, 3, 1, 4, 2, 3]
    batches = BucketBatches(lengths, 3, seed=0, shuffle=False)
    expected = [[1, 3, 5], [2, 6, 4], [0]]
    assert [b.tolist() for b in batches.epoch(0)] == expected
    assert [b.tolist() for b in batches.epoch(9)] == expected


def test_bucket_batches_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"\(N,\) lengths, N >= 1"):
        BucketBatches([], 4, seed=0)
    with pytest.raises(ValueError, match="batch_size >= 1, got 0"):
        BucketBatches([1, 2], 0, seed=0)
