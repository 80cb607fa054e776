"""LinearChainCRF against brute-force enumeration of all C^T paths; padding; gradients; BIO."""

import itertools
import math

import pytest
import torch
from torch.func import functional_call

from rnnkit.tasks.crf import FORBIDDEN, LinearChainCRF

B, T, C = 3, 4, 3
LENGTHS = torch.tensor([4, 1, 3])


def _random_crf(num_tags: int = C, dtype: torch.dtype = torch.float32) -> LinearChainCRF:
    crf = LinearChainCRF(num_tags).to(dtype)
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


@torch.no_grad()
def _path_score(crf: LinearChainCRF, emissions: torch.Tensor, path: tuple[int, ...]) -> float:
    """score(y) written out term by term for one sentence: emissions (n, C)."""
    transitions = crf.transitions + crf.transition_constraints
    total = crf.start[path[0]] + crf.start_constraints[path[0]] + crf.end[path[-1]]
    for t, tag in enumerate(path):
        total = total + emissions[t, tag]
        if t > 0:
            total = total + transitions[path[t - 1], tag]
    return float(total)


def _brute_force(crf: LinearChainCRF, emissions: torch.Tensor, n: int) -> tuple[float, list[int]]:
    """log Z and the best path of one sentence by enumerating all C^n paths."""
    with torch.no_grad():
        scores = {
            path: _path_score(crf, emissions[:n], path)
            for path in itertools.product(range(crf.num_tags), repeat=n)
        }
    log_z = math.log(sum(math.exp(s) for s in scores.values()))
    return log_z, list(max(scores, key=scores.get))


@pytest.mark.parametrize("seed", range(8))
def test_log_partition_and_viterbi_equal_brute_force(seed: int) -> None:
    torch.manual_seed(seed)
    crf = _random_crf(dtype=torch.float64)
    emissions = 2 * torch.randn(B, T, C, dtype=torch.float64)  # (B, T, C)
    log_z = crf.log_partition(emissions, LENGTHS).detach()  # (B,)
    paths = crf.decode(emissions, LENGTHS)
    assert [len(p) for p in paths] == LENGTHS.tolist()
    for b, n in enumerate(LENGTHS.tolist()):
        expected_z, expected_path = _brute_force(crf, emissions[b], n)
        assert float(log_z[b]) == pytest.approx(expected_z, rel=1e-10)
        assert paths[b] == expected_path


def test_probabilities_of_all_paths_sum_to_one() -> None:
    crf = _random_crf()
    emissions = torch.randn(1, 3, C)
    paths = torch.tensor(list(itertools.product(range(C), repeat=3)))  # (C^3, 3)
    ll = crf.log_likelihood(emissions.expand(len(paths), 3, C), paths, torch.full((len(paths),), 3))
    assert ll.detach().exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_score_equals_the_sum_of_its_terms_and_ignores_padded_tags() -> None:
    crf = _random_crf(dtype=torch.float64)
    emissions = torch.randn(B, T, C, dtype=torch.float64)
    tags = torch.randint(0, C, (B, T))
    tags[1, 1:] = -100
    tags[2, 3] = -100
    score = crf.score(emissions, tags, LENGTHS).detach()  # (B,)
    for b, n in enumerate(LENGTHS.tolist()):
        expected = _path_score(crf, emissions[b], tuple(tags[b, :n].tolist()))
        assert float(score[b]) == pytest.approx(expected, rel=1e-12)


def test_padding_does_not_change_a_sentence() -> None:
    crf = _random_crf()
    emissions = torch.randn(B, T, C)
    tags = torch.randint(0, C, (B, T))
    ll = crf.log_likelihood(emissions, tags, LENGTHS)
    paths = crf.decode(emissions, LENGTHS)
    # Two more steps of garbage, and different garbage inside the old padding.
    longer = torch.cat([emissions, 1e3 * torch.randn(B, 2, C)], dim=1)  # (B, T + 2, C)
    longer[1, 1:] = -1e3
    longer_tags = torch.cat([tags, torch.full((B, 2), -100)], dim=1)
    longer_tags[1, 1:] = -100
    torch.testing.assert_close(crf.log_likelihood(longer, longer_tags, LENGTHS), ll)
    assert crf.decode(longer, LENGTHS) == paths
    for b, n in enumerate(LENGTHS.tolist()):  # each sentence alone, unpadded
        one = slice(b, b + 1)
        alone = crf.log_likelihood(emissions[one, :n], tags[one, :n], LENGTHS[one])
        torch.testing.assert_close(alone, ll[b : b + 1])


def test_gradcheck_float64() -> None:
    crf = _random_crf(dtype=torch.float64)
    emissions = torch.randn(B, T, C, dtype=torch.float64, requires_grad=True)
    tags = torch.randint(0, C, (B, T))
    params = {name: p.detach().clone().requires_grad_() for name, p in crf.named_parameters()}

    def ll(emissions, transitions, start, end):
        values = {"transitions": transitions, "start": start, "end": end}
        return functional_call(crf, values, (emissions, tags, LENGTHS))

    inputs = (emissions, params["transitions"], params["start"], params["end"])
    assert torch.autograd.gradcheck(ll, inputs)


def test_nll_is_per_token_and_gradients_reach_every_parameter() -> None:
    crf = _random_crf()
    emissions = torch.randn(B, T, C, requires_grad=True)
    tags = torch.randint(0, C, (B, T))
    loss = crf.nll(emissions, tags, LENGTHS)
    expected = -crf.log_likelihood(emissions, tags, LENGTHS).sum() / LENGTHS.sum()
    torch.testing.assert_close(loss, expected)
    assert loss.item() > 0
    loss.backward()
    assert emissions.grad is not None and crf.transitions.grad.abs().sum() > 0
    assert crf.start.grad.abs().sum() > 0 and crf.end.grad.abs().sum() > 0
    assert emissions.grad[1, 1:].abs().sum() == 0  # padded steps get no gradient


def test_zero_init_and_bad_shapes() -> None:
    crf = LinearChainCRF(C)
    assert crf.transitions.shape == (C, C) and crf.start.shape == (C,) and crf.end.shape == (C,)
    assert all(not p.detach().any() for p in crf.parameters())
    with pytest.raises(ValueError, match="emissions"):
        crf.decode(torch.randn(B, T, C + 1), LENGTHS)
    with pytest.raises(ValueError, match="lengths"):
        crf.log_partition(torch.randn(B, T, C), torch.tensor([4, 0, 3]))
    with pytest.raises(ValueError, match="lengths"):
        crf.log_partition(torch.randn(B, T, C), torch.tensor([5, 1, 3]))


TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def test_constrain_bio_forbids_exactly_the_invalid_moves() -> None:
    crf = LinearChainCRF(len(TAGS))
    crf.constrain_bio(TAGS)
    forbidden = {
        (i, j) for i in range(5) for j in range(5) if crf.transition_constraints[i, j] == FORBIDDEN
    }
    named = {(TAGS[i], TAGS[j]) for i, j in forbidden}
    assert named == {
        ("O", "I-PER"),
        ("O", "I-LOC"),
        ("B-LOC", "I-PER"),
        ("I-LOC", "I-PER"),
        ("B-PER", "I-LOC"),
        ("I-PER", "I-LOC"),
    }
    assert crf.start_constraints.tolist() == [0, 0, FORBIDDEN, 0, FORBIDDEN]
    assert "transition_constraints" in crf.state_dict()  # saved with the model
    with pytest.raises(ValueError, match="not BIO"):
        crf.constrain_bio(["O", "PER", "I-PER", "B-LOC", "I-LOC"])


def test_constrained_decode_never_breaks_bio() -> None:
    crf = LinearChainCRF(len(TAGS))
    emissions = torch.zeros(2, 3, 5)  # (B, T, C)
    emissions[:, :, 2] = 5.0  # I-PER everywhere scores best on its own
    emissions[1, 1, 4] = 9.0  # and an I-LOC in the middle of sentence 1
    assert crf.decode(emissions, torch.tensor([3, 3])) == [[2, 2, 2], [2, 4, 2]]
    crf.constrain_bio(TAGS)
    paths = crf.decode(emissions, torch.tensor([3, 3]))
    assert paths[0] == [1, 2, 2]  # B-PER I-PER I-PER
    for path in paths:
        names = [TAGS[i] for i in path]
        for before, tag in zip(["O", *names], names, strict=False):
            assert not tag.startswith("I-") or before[2:] == tag[2:], names
