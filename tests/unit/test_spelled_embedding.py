"""seq2seq --char-features: the source embedding that reads rare and unseen words from their
spelling (SpelledEmbedding), the vocabulary it is built with, and the model around it."""

import pytest
import torch

from rnnkit.config import DataConfig, ModelConfig, RunConfig
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.char_encoder import SpelledEmbedding
from rnnkit.tasks.seq2seq import SPELL_BELOW, Seq2Seq, spelled_vocab, spells

pytestmark = pytest.mark.usefixtures("single_thread")

WORDS = ["<pad>", "<unk>", "<bos>", "<eos>", "je", "suis", "repose", "ruine"]
CHARS = sorted(set("jesuisreposeruine"))


def _embedding(spell_rate: float = 0.0) -> SpelledEmbedding:
    torch.manual_seed(0)
    embedding = SpelledEmbedding(len(WORDS), 6, 5, CHARS, spell_rate=spell_rate)
    embedding.set_words(WORDS)
    return embedding.eval()


def _spelled(embedding: SpelledEmbedding, word: str, unknown: int = 1) -> torch.Tensor:
    """tanh(W_s c(w) + b_s) of one word, by hand, unknown characters read as ``unknown``:
    (E,)."""
    ids = [embedding.char_index.get(c, unknown) for c in word]
    chars = torch.tensor([[ids]])  # (1, 1, W)
    encoded = embedding.chars(chars, torch.tensor([[len(ids)]]))[0, 0]  # (64,)
    return torch.tanh(embedding.project(encoded))


def test_frequent_ids_have_rows_and_the_others_are_read_from_their_spelling() -> None:
    embedding = _embedding()
    tokens = torch.tensor([[4, 6, 5], [7, 6, 0]])  # je repose suis / ruine repose <pad>
    with torch.no_grad():
        out = embedding(tokens)  # (2, 3, E)
        rows = embedding.embedding.weight
        assert torch.equal(out[0, 0], rows[4]) and torch.equal(out[0, 2], rows[5])
        assert torch.equal(out[1, 2], rows[0])
        for b, t, word in [(0, 1, "repose"), (1, 0, "ruine"), (1, 1, "repose")]:
            torch.testing.assert_close(out[b, t], _spelled(embedding, word))
    assert not torch.allclose(out[0, 1], out[1, 0])


def test_an_unseen_word_gets_a_new_id_read_from_its_spelling() -> None:
    embedding = _embedding()
    ids = embedding.ids(["je", "suis", "reposee", "fatigue", "reposee"])
    assert ids == [4, 5, 8, 9, 8] and embedding.words[8:] == ["reposee", "fatigue"]
    with torch.no_grad():
        out = embedding(torch.tensor([ids]))[0]  # (5, E)
        torch.testing.assert_close(out[2], _spelled(embedding, "reposee"))
        # an unknown character ("f", "g") reads as the unknown character, not as padding
        torch.testing.assert_close(out[3], _spelled(embedding, "fatigue"))
        assert not torch.allclose(out[3], _spelled(embedding, "fatigue", unknown=0))
        # its vector does not depend on the other words of the batch
        alone = embedding(torch.tensor([[8]]))[0, 0]
    torch.testing.assert_close(out[2], alone)


def test_training_spells_frequent_words_at_the_rate_but_never_the_specials() -> None:
    embedding = _embedding(spell_rate=1.0).train()
    tokens = torch.tensor([[0, 1, 2, 3, 4, 5]])
    with torch.no_grad():
        out = embedding(tokens)[0]
        rows = embedding.embedding.weight
        for i in range(4):
            assert torch.equal(out[i], rows[i])
        torch.testing.assert_close(out[4], _spelled(embedding, "je"))
        torch.testing.assert_close(out[5], _spelled(embedding, "suis"))
        embedding.eval()
        assert torch.equal(embedding(tokens)[0, 4], rows[4])  # no draw in eval mode
    embedding.spell_rate = 0.0
    state = torch.get_rng_state()
    embedding.train()(tokens)
    assert torch.equal(torch.get_rng_state(), state)  # rate 0 draws nothing


def test_gradients_reach_the_character_path_and_the_rows() -> None:
    embedding = _embedding().train()
    embedding(torch.tensor([[4, 6]])).sum().backward()
    assert embedding.embedding.weight.grad[4].abs().sum() > 0
    assert embedding.embedding.weight.grad[6:].abs().sum() == 0  # no row beyond frequent
    assert embedding.project.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in embedding.chars.parameters())
    # a batch with nothing to spell still gives the character path a (zero) gradient, as
    # DistributedDataParallel needs of every parameter, and changes no vector
    embedding.zero_grad(set_to_none=True)
    out = embedding(torch.tensor([[4, 5]]))
    assert torch.equal(out[0], embedding.embedding.weight[[4, 5]])
    out.sum().backward()
    spelling = [*embedding.chars.parameters(), *embedding.project.parameters()]
    assert all(p.grad is not None and not p.grad.any() for p in spelling)


def test_an_id_without_a_spelling_is_an_error() -> None:
    embedding = _embedding()
    with pytest.raises(ValueError, match="token id 12 has no spelling"):
        embedding(torch.tensor([[4, 12]]))
    with pytest.raises(ValueError, match="3 words for an embedding of 8"):
        embedding.set_words(WORDS[:3])
    with pytest.raises(ValueError, match="frequent"):
        SpelledEmbedding(5, 6, 4, CHARS)


def test_the_vocabulary_puts_frequent_words_first_then_rare_then_validation_words() -> None:
    train = [["je", "suis", "las"], ["je", "suis", "ruine"], ["tu", "es", "las"]]
    val = [["je", "suis", "repose"], ["tu", "es", "ruinee", "repose"]]
    vocab, (frequent, chars) = spelled_vocab(train, val, 1)
    assert SPELL_BELOW == 2
    assert vocab.tokens[4:] == ["je", "las", "suis", "es", "ruine", "tu", "repose", "ruinee"]
    assert frequent == 4 + 3 and chars == sorted(set("jesuislasruinetu"))
    vocab3, (frequent3, _) = spelled_vocab(train, val, 3)  # --min-freq raises the bar
    assert vocab3 == vocab and frequent3 == 4


def test_the_model_spells_only_word_level_sources_with_the_option() -> None:
    def run(char_features: bool, level: str) -> RunConfig:
        return RunConfig(
            task="seq2seq",
            model=ModelConfig(char_features=char_features),
            data=DataConfig(level=level),
        )

    assert spells(run(True, "word"))
    assert not spells(run(True, "char")) and not spells(run(False, "word"))


def test_a_spelling_model_reads_unseen_words_where_a_plain_one_reads_unk() -> None:
    torch.manual_seed(0)
    config = ModelConfig(cell="gru", hidden_size=6, embedding_size=5, num_layers=1, dropout=0.0)
    source = Vocab(WORDS[4:])
    target = Vocab(["i", "m", "rested"])
    model = Seq2Seq(config, len(source), len(target), (6, CHARS)).eval()
    model.attach(source, target, "word", False, 4)
    plain = Seq2Seq(config, len(source), len(target)).eval()
    plain.attach(source, target, "word", False, 4)
    assert plain.encode_source("je suis reposee") == [4, 5, Vocab.unk_id]
    assert model.encode_source("je suis reposee") == [4, 5, 8]
    assert model.encode_source("je suis fatiguee") == [4, 5, 9]
    assert model.source_tokens([4, 8, 9]) == ["je", "reposee", "fatiguee"]
    with torch.no_grad():
        a = model.encode(torch.tensor([[4, 5, 8]]), torch.tensor([3])).rnn
        b = model.encode(torch.tensor([[4, 5, 9]]), torch.tensor([3])).rnn
    assert not torch.allclose(a, b)  # two unseen words, two encodings
    assert len(model.translate(["je suis reposee", "ruine"], beam_size=2)) == 2
