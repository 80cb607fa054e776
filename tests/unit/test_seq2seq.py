"""seq2seq: masking of padded sources, the bridge of a bidirectional encoder, teacher forcing,
batched greedy and beam decoding (beam 1 is greedy; a beam finds what greedy misses), data."""

import math

import pytest
import torch
from torch import Tensor

from rnnkit.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnkit.data.vocab import Vocab
from rnnkit.errors import ConfigError, DataError
from rnnkit.sampling import beam_search_batch, greedy_batch
from rnnkit.tasks import get_task
from rnnkit.tasks.attention import Attention
from rnnkit.tasks.decoder import DecoderState, token_loss
from rnnkit.tasks.seq2seq import Seq2Seq

pytestmark = pytest.mark.usefixtures("single_thread")

VS, VT, E, H = 9, 7, 4, 6  # source and target vocabularies, embedding, hidden: all distinct
EOS = Vocab.eos_id


def _model(cell: str = "gru", attention: str = "general", **config) -> Seq2Seq:
    cfg = ModelConfig(
        cell=cell,
        num_layers=config.pop("num_layers", 2),
        hidden_size=H,
        embedding_size=E,
        dropout=0.0,
        attention=attention,
        **config,
    )
    model = Seq2Seq(cfg, VS, VT)
    model.longest_target = 4
    return model.eval()


def _batch() -> tuple[Tensor, Tensor]:
    """Three sources of lengths 5, 2 and 3, padded with <pad> (B, S) = (3, 5)."""
    source = torch.randint(4, VS, (3, 5))
    lengths = torch.tensor([5, 2, 3])
    source[1, 2:] = Vocab.pad_id
    source[2, 3:] = Vocab.pad_id
    return source, lengths


# --- the model -------------------------------------------------------------------------------


@pytest.mark.parametrize("attention", ["dot", "general", "additive"])
@pytest.mark.parametrize(("cell", "bidirectional"), [("gru", False), ("lstm", True)])
def test_padded_source_steps_get_zero_weight_and_change_nothing(
    attention: str, cell: str, bidirectional: bool
) -> None:
    model = _model(cell, attention, bidirectional=bidirectional)
    source, lengths = _batch()
    target_in = torch.randint(4, VT, (3, 4))
    with torch.no_grad():
        logits, weights = model.read_target(model.encode(source, lengths), target_in)
        garbage = source.clone()
        garbage[1, 2:] = 5
        garbage[2, 3:] = 8  # real tokens where the padding was: lengths still say where it ends
        garbage_logits = model.read_target(model.encode(garbage, lengths), target_in)[0]
        alone = [
            model.read_target(
                model.encode(source[b : b + 1, : lengths[b]], lengths[b : b + 1]),
                target_in[b : b + 1],
            )[0]
            for b in range(3)
        ]
    assert weights.shape == (3, 4, 5)
    assert (weights[1, :, 2:] == 0).all() and (weights[2, :, 3:] == 0).all()
    assert (weights[1, :, :2] > 0).all()
    torch.testing.assert_close(weights.sum(dim=2), torch.ones(3, 4))
    torch.testing.assert_close(garbage_logits, logits)
    torch.testing.assert_close(torch.cat(alone), logits)


def test_attention_over_all_steps_equals_one_step_at_a_time() -> None:
    attention = Attention("additive", H, 5)
    keys, mask = torch.randn(3, 4, 5), torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 0, 0]])
    memory = attention.memory(keys, mask.bool())
    queries = torch.randn(3, 6, H)  # (B, T, Hq)
    context, weights = attention.attend(queries, memory)
    for t in range(6):
        one_context, one_weights = attention(queries[:, t], keys, mask.bool())
        torch.testing.assert_close(context[:, t], one_context)
        torch.testing.assert_close(weights[:, t], one_weights)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_decoder_starts_from_the_encoders_final_state_with_directions_summed(cell) -> None:
    model = _model(cell, "none", bidirectional=True)
    source, lengths = _batch()
    with torch.no_grad():
        _, final = model.encoder(model.source_embedding(source), lengths=lengths)
        state = model.encode(source, lengths)
    parts = final if cell == "lstm" else (final,)
    started = state.rnn if cell == "lstm" else (state.rnn,)
    for raw, start in zip(parts, started, strict=True):  # (L·2, B, H) -> (L, B, H)
        assert start.shape == (2, 3, H)
        torch.testing.assert_close(start, raw[0::2] + raw[1::2])  # l0 + l0_reverse, l1 + ...
    assert state.context is None


def test_without_bidirection_the_decoder_starts_from_the_encoders_own_state() -> None:
    model = _model("gru", "dot")
    source, lengths = _batch()
    with torch.no_grad():
        outputs, final = model.encoder(model.source_embedding(source), lengths=lengths)
        state = model.encode(source, lengths)
    torch.testing.assert_close(state.rnn, final)
    torch.testing.assert_close(state.context.keys, outputs)


def test_teacher_forcing_zero_feeds_the_models_own_greedy_tokens() -> None:
    model = _model("gru", "additive")
    source, lengths = _batch()
    target_in = torch.randint(4, VT, (3, 5))
    target_in[:, 0] = Vocab.bos_id
    with torch.no_grad():
        own = model(source, lengths, target_in, teacher_forcing=0.0)  # (B, T, V)
        fed = torch.cat([target_in[:, :1], own.argmax(-1)[:, :-1]], dim=1)  # <bos>, its tokens
        forced = model(source, lengths, fed, teacher_forcing=1.0)
        truth = model(source, lengths, target_in, teacher_forcing=1.0)
    torch.testing.assert_close(own, forced)
    assert not torch.allclose(own, truth)


def test_teacher_forcing_draws_from_torchs_generator_only_below_one() -> None:
    model = _model("gru", "dot")
    source, lengths = _batch()
    target_in = torch.randint(4, VT, (3, 6))
    with torch.no_grad():
        torch.manual_seed(5)
        a = model(source, lengths, target_in, teacher_forcing=0.5)
        after_a = torch.rand(1)
        torch.manual_seed(5)
        b = model(source, lengths, target_in, teacher_forcing=0.5)
        torch.manual_seed(5)
        model(source, lengths, target_in, teacher_forcing=1.0)
        after_full = torch.rand(1)
    torch.testing.assert_close(a, b)
    torch.manual_seed(5)
    assert torch.equal(torch.rand(1), after_full)  # ratio 1 draws nothing
    assert not torch.equal(after_a, after_full)  # ratio 0.5 drew one number per (B, T)


@pytest.mark.parametrize("attention", ["none", "additive"])
def test_the_loss_at_real_steps_equals_the_loss_of_every_steps_logits(attention: str) -> None:
    # Training computes the head only where the target is real: same value, same gradients
    # as cross-entropy over the full (B, T, V) logits with the padding ignored.
    torch.manual_seed(0)
    model = _model(attention=attention, num_layers=1).train()
    source, lengths = _batch()
    target_in = torch.randint(4, VT, (3, 4))
    targets = torch.randint(4, VT, (3, 4))
    targets[0, 1:] = -100  # real steps at uneven places: 1, 4 and 2 of each row
    targets[2, 2:] = -100
    losses, grads = [], []
    for full in (True, False):
        model.zero_grad()
        if full:
            loss = token_loss(model(source, lengths, target_in), targets)
        else:
            loss = model(source, lengths, target_in, targets=targets)
        loss.backward()
        losses.append(loss)
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[0], losses[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)


def test_the_loss_below_full_teacher_forcing_is_that_of_the_logits() -> None:
    model = _model(attention="additive", num_layers=1)
    source, lengths = _batch()
    target_in, targets = torch.randint(4, VT, (3, 4)), torch.randint(4, VT, (3, 4))
    targets[1, 3:] = -100
    torch.manual_seed(5)
    expected = token_loss(model(source, lengths, target_in, 0.5), targets)
    torch.manual_seed(5)
    torch.testing.assert_close(model(source, lengths, target_in, 0.5, targets), expected)


def test_label_smoothing_trains_against_the_smoothed_target_and_validates_plain() -> None:
    torch.manual_seed(0)
    model = _model(attention="additive", num_layers=1, label_smoothing=0.2).train()
    source, lengths = _batch()
    target_in, targets = torch.randint(4, VT, (3, 4)), torch.randint(4, VT, (3, 4))
    targets[0, 2:] = -100
    real = targets >= 0  # (B, T)
    log_p = model(source, lengths, target_in).log_softmax(-1)[real]  # (N, V), dropout is 0
    true = log_p.gather(1, targets[real][:, None]).squeeze(1)  # (N,)
    expected = -(0.8 * true + 0.2 * log_p.mean(dim=1)).mean()  # (1 - eps) one-hot + eps / V
    torch.testing.assert_close(model(source, lengths, target_in, targets=targets), expected)
    torch.manual_seed(1)
    below = model(source, lengths, target_in, 0.5, targets)  # the step-by-step path smooths too
    torch.manual_seed(1)
    logits = model(source, lengths, target_in, 0.5)
    assert not torch.allclose(below, token_loss(logits, targets))
    model.eval()
    plain = token_loss(model(source, lengths, target_in), targets)
    torch.testing.assert_close(model(source, lengths, target_in, targets=targets), plain)


def test_cells_without_lengths_are_refused() -> None:
    with pytest.raises(ConfigError, match="--cell mingru"):
        _model("mingru", "none", num_layers=1)


# --- decoding ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("cell", "attention"), [("gru", "additive"), ("lstm", "general")])
def test_beam_of_one_is_greedy_for_a_batch(cell: str, attention: str) -> None:
    torch.manual_seed(3)
    model = _model(cell, attention)
    source, lengths = _batch()
    greedy = model.decode(source, lengths, beam_size=1, max_length=6)
    state = model.encode(source, lengths)
    logits, state = model.step(torch.full((3,), Vocab.bos_id), state)
    beam = beam_search_batch(model, logits, state, 6, 1, eos_id=EOS)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    assert [h.finished for h in beam] == [h.finished for h in greedy]
    for b, g in zip(beam, greedy, strict=True):
        assert math.isclose(b.score, g.score, rel_tol=1e-5)
        assert math.isclose(b.log_prob, g.log_prob, rel_tol=1e-5)


def test_greedy_decoding_is_argmax_at_every_step_and_stops_at_eos() -> None:
    torch.manual_seed(1)
    model = _model("gru", "dot")
    with torch.no_grad():
        model.head.bias[EOS] += 1.5  # make some sequences end early
    source, lengths = _batch()
    found = model.decode(source, lengths, max_length=8)
    for b, h in enumerate(found):
        state = model.encode(source[b : b + 1, : lengths[b]], lengths[b : b + 1])
        token, tokens, total = torch.tensor([Vocab.bos_id]), [], 0.0
        for _ in range(8):
            logits, state = model.step(token, state)
            log_probs = logits.log_softmax(-1)[0]
            token = log_probs.argmax()[None]
            total += float(log_probs[token])
            if int(token) == EOS:
                break
            tokens.append(int(token))
        assert h.tokens == tokens and h.finished == (int(token) == EOS)
        n = len(tokens) + h.finished
        assert math.isclose(h.log_prob, total, rel_tol=1e-5, abs_tol=1e-6)
        assert math.isclose(h.score, total / n, rel_tol=1e-5, abs_tol=1e-6)
    assert any(h.finished for h in found)


class TableModel:
    """A hand-built decoder: the next token's log-probabilities depend only on the last token
    (held in the state, (1, N, 1), so beam search can reorder it); uniform after a token the
    table does not list."""

    def __init__(self, table: dict[int, list[float]], vocab_size: int) -> None:
        self.rows = torch.zeros(vocab_size, vocab_size)
        for token, probs in table.items():
            self.rows[token] = torch.tensor(probs).log()

    def step(self, tokens: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return self.rows[tokens], tokens.float()[None, :, None]  # (N, V), (1, N, 1)


def test_a_beam_finds_the_best_sequence_where_greedy_does_not() -> None:
    # tokens: 3 = <eos>, 4 = a, 5 = b. First a (0.6) or b (0.4); after a, <eos> has only
    # 0.35 and the other tokens less; after b, <eos> has 0.9. Greedy writes "a" (p 0.21),
    # the most probable output is "b" (p 0.36).
    eos, a, b, V = 3, 4, 5, 6
    table = {
        a: [0.0, 0.0, 0.0, 0.35, 0.33, 0.32],
        b: [0.0, 0.0, 0.0, 0.90, 0.05, 0.05],
        eos: [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
    }
    model = TableModel(table, V)
    first = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.6, 0.4]]).log()  # (1, V)
    state = torch.zeros(1, 1, 1)
    (greedy,) = greedy_batch(model, first, state, 5, eos_id=eos)
    (beam,) = beam_search_batch(model, first, state, 5, 2, eos_id=eos)
    assert greedy.tokens == [a] and math.isclose(greedy.log_prob, math.log(0.21), rel_tol=1e-6)
    assert beam.tokens == [b] and beam.finished
    assert math.isclose(beam.log_prob, math.log(0.4 * 0.9), rel_tol=1e-6)
    assert math.isclose(beam.score, math.log(0.36) / 2, rel_tol=1e-6)  # length-normalised
    # Two sources in one batch: each finds its own best, as it would alone.
    other = torch.tensor([[0.0, 0.0, 0.0, 0.1, 0.1, 0.8]]).log()
    both = beam_search_batch(
        model, torch.cat([other, first]), torch.zeros(1, 2, 1), 5, 2, eos_id=eos
    )
    assert [h.tokens for h in both] == [[b], [b]]


def test_length_normalisation_decides_between_short_and_long_outputs() -> None:
    # First <eos> (0.45) or c (0.55); after c, <eos> or <unk> (0.5 each); after <unk>, every
    # token alike. "" has p 0.45; "c" has 0.275, less in total but more per token
    # (0.275^(1/2) = 0.52 > 0.45); every longer output has less of both.
    eos, c, V = 3, 5, 6
    table = {c: [0, 0.5, 0, 0.5, 0, 0], eos: [0, 0, 0, 1.0, 0, 0]}
    model = TableModel(table, V)
    first = torch.tensor([[0, 0, 0, 0.45, 0.0, 0.55]]).log()
    state = torch.zeros(1, 1, 1)
    (total,) = beam_search_batch(model, first, state, 4, 3, eos_id=eos, length_alpha=0.0)
    (mean,) = beam_search_batch(model, first, state, 4, 3, eos_id=eos, length_alpha=1.0)
    assert total.tokens == [] and total.finished
    assert math.isclose(total.score, math.log(0.45), rel_tol=1e-6)
    assert mean.tokens == [c] and mean.finished
    assert math.isclose(mean.score, math.log(0.275) / 2, rel_tol=1e-6)


def test_decoding_state_reorders_the_encoders_outputs_with_the_beams() -> None:
    model = _model("lstm", "additive")
    source, lengths = _batch()
    state = model.encode(source, lengths)
    index = torch.tensor([2, 2, 0])
    moved = state.reorder(index)
    assert isinstance(moved, DecoderState)
    torch.testing.assert_close(moved.rnn[0], state.rnn[0][:, index])
    torch.testing.assert_close(moved.rnn[1], state.rnn[1][:, index])
    torch.testing.assert_close(moved.context.projected, state.context.projected[index])
    assert torch.equal(moved.context.mask, state.context.mask[index])


# --- data ------------------------------------------------------------------------------------


def _run(path, **data) -> RunConfig:
    return RunConfig(
        task="seq2seq",
        model=ModelConfig(cell="gru", num_layers=1, hidden_size=H, embedding_size=E),
        data=DataConfig(path=str(path), level="word", **data),
        train=TrainConfig(batch_size=2),
    )


def test_load_data_reverse_max_length_vocabularies_and_batches(tmp_path, caplog) -> None:
    path = tmp_path / "pairs.tsv"
    rows = [("a b", "x y z"), ("b b b b", "y"), ("a", "z z"), ("b a", "x"), ("a a", "y y")]
    path.write_text("".join(f"{s}\t{t}\n" for s, t in rows), encoding="utf-8")
    task = get_task("seq2seq")
    with caplog.at_level("INFO"):
        data = task.load_data(_run(path, max_length=3, reverse=True, val_frac=0.25), None)
    assert "dropped 1 of 5 pairs" in caplog.text  # "b b b b" is 4 tokens
    source, target = Vocab.from_dict(data.meta["source"]), Vocab.from_dict(data.meta["target"])
    assert set(source.tokens[4:]) <= {"x", "y", "z"} and set(target.tokens[4:]) <= {"a", "b"}
    assert len(data.train.sources) + len(data.val.sources) == 4
    assert data.meta["longest_target"] == max(len(t) for t in data.train.targets)
    batches = task.batches(_run(path, max_length=3, reverse=True, val_frac=0.25), data)
    assert len(batches) == 2  # 3 training pairs, batch size 2
    seen = 0
    for index in range(2):
        src, lengths, target_in, target_out, ratio = batches.get(0, index)
        assert ratio == 1.0 and (target_in[:, 0] == Vocab.bos_id).all()
        for row in range(src.shape[0]):
            assert (src[row, lengths[row] :] == Vocab.pad_id).all()
            n = int((target_out[row] >= 0).sum())
            assert target_out[row, n - 1] == EOS
            assert torch.equal(target_in[row, 1:n], target_out[row, : n - 1])
        seen += src.shape[0]
    assert seen == 3


def test_every_pair_dropped_by_max_length_is_a_data_error(tmp_path) -> None:
    path = tmp_path / "pairs.tsv"
    path.write_text("a b c\tx\nb c d\ty\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"every one of its 2 pairs .* --max-length 2"):
        get_task("seq2seq").load_data(_run(path, max_length=2), None)


def test_decoding_under_a_bf16_autocast_runs_in_fp32() -> None:
    model = _model("lstm", "general")  # lstm: its one-step path adds products in place
    source, lengths = _batch()
    plain = model.decode(source, lengths, beam_size=2, max_length=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = model.decode(source, lengths, beam_size=2, max_length=5)
    assert [h.tokens for h in autocast] == [h.tokens for h in plain]
    assert [h.score for h in autocast] == [h.score for h in plain]
