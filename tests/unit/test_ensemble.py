"""--ensemble K of classify and tag: K networks in one model, each trained on its own loss,
predicting with their averaged probabilities (or, under a CRF, averaged potentials)."""

from __future__ import annotations

import functools
import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from rnnkit.config import ConfigError, ModelConfig, RunConfig
from rnnkit.tasks.classify import Classification, Classifier
from rnnkit.tasks.ensemble import mean_member_loss, member_parameters, threads_for_members
from rnnkit.tasks.tag import Tagger

D = 3  # features per step


def _config(**fields) -> ModelConfig:
    return ModelConfig(cell="lstm", num_layers=1, hidden_size=8, dropout=0.0, **fields)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    return torch.randn(4, 5, D), torch.tensor([5, 2, 4, 1])


def test_one_network_keeps_its_parameter_names() -> None:
    """Folders written before --ensemble existed still load: K = 1 adds no parameter."""
    names = set(Classifier(_config(), list("ab"), feature_size=D).state_dict())
    assert not any(n.startswith("others.") for n in names)
    assert "encoder.rnn.weight_ih_l0" in names or any(n.startswith("encoder.") for n in names)
    tagger = Tagger(_config(crf=True), ["O", "B-x", "I-x"], feature_size=D)
    assert not any(n.startswith("others.") for n in tagger.state_dict())


def test_classify_members_are_apart_and_predict_their_mean_probability() -> None:
    torch.manual_seed(0)
    model = Classifier(_config(ensemble=3), list("abcd"), feature_size=D).eval()
    members = model.members()
    assert len(members) == 3 and members[0] is model
    heads = [m.head.weight for m in members]
    assert not torch.equal(heads[0], heads[1]) and not torch.equal(heads[1], heads[2])
    x, lengths = _batch()
    mean = torch.stack([m._logits(x, lengths).softmax(-1) for m in members]).mean(0)  # (B, C)
    torch.testing.assert_close(model(x, lengths).softmax(-1), mean)
    torch.testing.assert_close(model(x, lengths).exp(), mean)  # log-probabilities
    assert not torch.allclose(
        model(x, lengths).softmax(-1), members[0]._logits(x, lengths).softmax(-1)
    )


def test_classify_members_learn_each_on_its_own_loss() -> None:
    """The training loss is the mean of the members' cross-entropies, so each member's gradient
    is its own loss's (over K), not that of the averaged prediction."""
    torch.manual_seed(1)
    model = Classifier(_config(ensemble=2), list("abc"), feature_size=D).train()
    x, lengths = _batch(1)
    targets = torch.tensor([0, 2, 1, 1])
    batch = {"inputs": x, "lengths": lengths, "targets": targets}
    loss = Classification().loss(model, batch, None, torch.device("cpu")).loss
    own = [F.cross_entropy(m._logits(x, lengths), targets) for m in model.members()]
    torch.testing.assert_close(loss, (own[0] + own[1]) / 2)
    second = model.others[0].head.weight
    (got,) = torch.autograd.grad(loss, second)
    (alone,) = torch.autograd.grad(own[1] / 2, second)
    torch.testing.assert_close(got, alone)
    joint = F.nll_loss(model(x, lengths), targets)  # the loss of the averaged prediction
    (other,) = torch.autograd.grad(joint, second)
    assert not torch.allclose(got, other, atol=1e-6)


def test_tag_softmax_ensemble_averages_the_members_probabilities() -> None:
    torch.manual_seed(2)
    model = Tagger(_config(ensemble=2), list("abc"), feature_size=D).eval()
    x, lengths = _batch(2)
    mean = torch.stack(
        [m._scores(x, lengths, None, None).softmax(-1) for m in model.members()]
    ).mean(0)  # (B, T, C)
    torch.testing.assert_close(model(x, lengths).softmax(-1), mean)
    targets = torch.randint(3, (4, 5))
    batch = {"inputs": x, "lengths": lengths, "targets": targets}
    losses = [m._loss(batch) for m in model.members()]
    torch.testing.assert_close(model.loss(batch), (losses[0] + losses[1]) / 2)


def _path_score(emissions, crf, path) -> torch.Tensor:
    """The unnormalised log score of one tag path: (T, C) emissions under ``crf``."""
    allowed = crf.transitions + crf.transition_constraints
    score = crf.start[path[0]] + crf.start_constraints[path[0]] + emissions[0, path[0]]
    for t in range(1, len(path)):
        score = score + allowed[path[t - 1], path[t]] + emissions[t, path[t]]
    return score + crf.end[path[-1]]


def test_tag_crf_ensemble_decodes_the_members_mean_potentials() -> None:
    """With a CRF, the ensemble's best path is the best under the members' mean emissions and
    mean transition, start and end scores; BIO constraints still hold."""
    torch.manual_seed(3)
    tags = ["O", "B-x", "I-x"]
    model = Tagger(_config(crf=True, ensemble=2), tags, feature_size=D).eval()
    with torch.no_grad():
        for member in model.members():
            for p in member.crf.parameters():
                p.normal_()
            member.crf.constrain_bio(tags)  # as a text tagger's (features have no BIO)
    crf = model.combined_crf()
    a, b = (m.crf for m in model.members())
    torch.testing.assert_close(crf.transitions, (a.transitions + b.transitions) / 2)
    torch.testing.assert_close(crf.start, (a.start + b.start) / 2)
    torch.testing.assert_close(crf.end, (a.end + b.end) / 2)
    assert crf.transition_constraints[0, 2] < -1e3  # O -> I-x stays forbidden
    x, lengths = _batch(3)
    emissions = model(x, lengths)  # (B, T, C)
    members = [m._scores(x, lengths, None, None) for m in model.members()]
    torch.testing.assert_close(emissions, (members[0] + members[1]) / 2)
    paths, _ = model.decode({"inputs": x, "lengths": lengths})
    with torch.no_grad():
        for row, n in enumerate(lengths.tolist()):
            best = max(
                itertools.product(range(3), repeat=n),
                key=lambda p, row=row: float(_path_score(emissions[row, :n], crf, p)),
            )
            assert paths[row] == list(best)


def test_ensemble_is_an_option_of_classify_and_tag_only() -> None:
    with pytest.raises(ConfigError, match="--ensemble must be at least 1"):
        _config(ensemble=0)
    with pytest.raises(ConfigError, match="--ensemble is an option of --task classify / tag"):
        RunConfig(task="lm", model=_config(ensemble=2))
    for task in ("classify", "tag"):
        assert RunConfig(task=task, model=_config(ensemble=2)).model.ensemble == 2


# --- --member-threads: the members trained side by side on threads ---------------------------


def _threaded_pair(**fields) -> tuple[Tagger, Tagger]:
    """Two taggers with the same weights, members one after another and on threads."""
    tags = ["O", "B-x", "I-x"]
    config = replace(_config(crf=True, ensemble=3), **fields)
    torch.manual_seed(4)
    plain = Tagger(config, tags, feature_size=D).train()
    torch.manual_seed(4)
    threaded = Tagger(replace(config, member_threads=True), tags, feature_size=D).train()
    return plain, threaded


def _tag_batch() -> dict[str, torch.Tensor]:
    x, lengths = _batch(5)
    return {"inputs": x, "lengths": lengths, "targets": torch.randint(3, (4, 5))}


def _grads(model: Tagger) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_members_on_threads_give_the_same_loss_and_gradients(two_threads) -> None:
    """Without dropout, the threads change nothing: the mean of the members' losses, and each
    member's gradients its own loss's over K, as one after another."""
    plain, threaded = _threaded_pair()
    assert threads_for_members(threaded.config, threaded.members(), "cpu") == 2
    assert threads_for_members(plain.config, plain.members(), "cpu") == 1
    batch = _tag_batch()
    (2.0 * plain.loss(batch)).backward()
    loss = threaded.loss(batch)
    (2.0 * loss).backward()  # the incoming gradient scales what the threads computed
    torch.testing.assert_close(loss, plain.loss(batch).detach())
    want, got = _grads(plain), _grads(threaded)
    assert want.keys() == got.keys() and any(n.startswith("others.1.") for n in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], msg=name)


def test_members_on_threads_under_bf16_autocast(two_threads) -> None:
    """The threads inherit the step's autocast (each thread starts with none of its own)."""
    plain, threaded = _threaded_pair()
    batch = _tag_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = plain.loss(batch), threaded.loss(batch)
    torch.testing.assert_close(got, want.detach())
    with torch.no_grad():
        fp32 = plain.loss(batch)
    assert not torch.equal(fp32, want.detach())  # bf16 did act


def test_members_on_threads_draw_dropout_from_their_own_generators(two_threads) -> None:
    """With dropout, a seed reproduces the step whichever thread runs first: each member's
    masks come from its own generator, seeded from torch's default one."""
    _, threaded = _threaded_pair(dropout=0.5)
    batch = _tag_batch()
    members = threaded.members()
    own = member_parameters(members)
    calls = [functools.partial(m._loss, batch) for m in members]
    losses = []
    for threads in (2, 1, 2):  # one thread runs the members in order, two in either
        torch.manual_seed(7)
        losses.append(mean_member_loss(calls, own, threads))
    assert torch.equal(losses[0], losses[1]) and torch.equal(losses[0], losses[2])
    torch.manual_seed(8)
    assert not torch.equal(mean_member_loss(calls, own, 2), losses[0])  # dropout did act
    first = {id(p) for p in own[0]}
    assert not first & {id(p) for p in own[1]} and len(own) == 3


def test_a_member_drawing_from_the_default_generator_on_a_thread_is_refused(
    two_threads,
) -> None:
    """A random draw that does not pass current_generator() would depend on the threads'
    order; it is caught, not left to make runs unrepeatable."""
    _, threaded = _threaded_pair()
    batch = _tag_batch()

    def careless() -> torch.Tensor:
        return threaded._loss(batch) * torch.rand(()).add(1.0)

    own = member_parameters(threaded.members())
    with pytest.raises(RuntimeError, match="default generator"):
        mean_member_loss([careless] * 3, own, 2)


def test_members_run_one_after_another_where_threads_cannot_help(two_threads) -> None:
    _, threaded = _threaded_pair()
    members = threaded.members()
    assert threads_for_members(threaded.config, members, "cpu") == 2
    with torch.no_grad():
        assert threads_for_members(threaded.config, members, "cpu") == 1
    assert threads_for_members(threaded.config, members, "cuda") == 1
    threaded.eval()
    assert threads_for_members(threaded.config, members, "cpu") == 1
    threaded.train()
    one = Tagger(_config(member_threads=True), ["O", "B-x", "I-x"], feature_size=D)
    assert threads_for_members(one.config, one.members(), "cpu") == 1
    torch.set_num_threads(8)  # the fixture puts back what was there
    assert threads_for_members(threaded.config, members, "cpu") == 3  # K
    torch.set_num_threads(1)
    assert threads_for_members(threaded.config, members, "cpu") == 1
    with pytest.raises(ConfigError, match="--member-threads is an option of --task tag"):
        RunConfig(task="classify", model=_config(member_threads=True))
