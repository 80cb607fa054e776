"""Task presets that depend on the data: ``--task tag`` on feature sequences (.npz) gets its own
model size and learning rate; flags and the config file still win."""

import tomllib

from rnnkit.cli import main


def _printed(capsys, *args: str) -> dict:
    assert main(["train", "--print-config", *args]) == 0
    return tomllib.loads(capsys.readouterr().out)


def test_tag_on_feature_sequences_takes_the_features_preset(tmp_path, capsys) -> None:
    frames = _printed(capsys, str(tmp_path / "frames.npz"), "--task", "tag")
    text = _printed(capsys, str(tmp_path / "train.txt"), "--task", "tag")
    assert (frames["model"]["hidden_size"], frames["train"]["lr"]) == (128, 1e-3)
    assert (text["model"]["hidden_size"], text["train"]["lr"]) == (256, 5e-3)
    assert frames["model"]["dropout"] == text["model"]["dropout"] == 0.5
    assert (frames["data"]["lowercase"], text["data"]["lowercase"]) == (False, True)
    assert (frames["model"]["outside_bias"], text["model"]["outside_bias"]) == (0.0, 1.0)
    assert (frames["model"]["word_votes"], text["model"]["word_votes"]) == (0.0, 1.0)
    assert (frames["model"]["lm_weight"], text["model"]["lm_weight"]) == (0.0, 0.1)
    assert (frames["train"]["weight_decay"], text["train"]["weight_decay"]) == (0.01, 0.1)
    # text keeps the mean of its 5 best evaluations; features have no evaluations to rank
    assert (frames["train"]["average_best"], text["train"]["average_best"]) == (0, 5)
    # features: every sequence trains for 150 passes, the final weights kept; text validates
    assert (frames["data"]["val_frac"], frames["train"]["epochs"]) == (0.0, 150)
    assert (frames["model"]["frame_votes"], text["model"]["frame_votes"]) == (True, False)
    assert (text["data"]["val_frac"], text["train"].get("epochs")) == (0.1, None)


def test_flags_and_the_config_file_win_over_the_features_preset(tmp_path, capsys) -> None:
    config = tmp_path / "run.toml"
    config.write_text('[model]\ndropout = 0.3\n[data]\npath = "f.npz"\n', encoding="utf-8")
    run = _printed(capsys, "--config", str(config), "--task", "tag", "--lr", "0.01")
    assert run["model"]["hidden_size"] == 128  # the config file's data path chose the preset
    assert (run["model"]["dropout"], run["train"]["lr"]) == (0.3, 0.01)


def test_seq2seq_preset_is_the_one_chosen_on_dev(tmp_path, capsys) -> None:
    run = _printed(capsys, str(tmp_path / "pairs.tsv"), "--task", "seq2seq")
    assert run["model"]["bidirectional"] is True and run["model"]["label_smoothing"] == 0.3
    assert (run["train"]["lr"], run["train"]["batch_size"]) == (2e-3, 32)
    assert (run["model"]["hidden_size"], run["model"]["embedding_size"]) == (384, 256)
    assert run["data"]["val_frac"] == 0.0  # every pair trains, the final weights are kept


def test_classify_on_word_level_text_takes_an_ensemble(tmp_path, capsys) -> None:
    """Items of two or more words (a TSV or a folder): 8 networks; single words (names),
    features and a path that cannot be read keep one; --ensemble still wins."""
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text("pos\ta fine film\nneg\tdull and long\n", encoding="utf-8")
    names = tmp_path / "names.tsv"
    names.write_text("Irish\tMurphy\nItalian\tRossi\nGreek\tPapadopoulos\n", encoding="utf-8")
    folder = tmp_path / "by_label"
    folder.mkdir()
    (folder / "pos.txt").write_text("a fine film\nwarm and funny\n", encoding="utf-8")
    (folder / "neg.txt").write_text("dull\n", encoding="latin-1")

    def ensemble(*args: str) -> int:
        return _printed(capsys, *args, "--task", "classify")["model"]["ensemble"]

    assert ensemble(str(reviews)) == ensemble(str(folder)) == 8
    assert ensemble(str(names)) == ensemble(str(tmp_path / "x.npz")) == 1
    assert ensemble(str(tmp_path / "missing.tsv")) == 1
    assert ensemble(str(reviews), "--ensemble", "2") == 2


def test_classify_on_characters_takes_more_regularisation(tmp_path, capsys) -> None:
    """Single-word items (names) decay their weights by 0.1, drop whole characters from a batch
    with probability 0.1 and keep the mean of their 5 best evaluations, all chosen on names/' dev
    halves; word-level text and features keep 0.01, no embedding dropout (features have no
    embedding) and one evaluation's weights; the flags still win."""
    names = tmp_path / "names.tsv"
    names.write_text("Irish\tMurphy\nItalian\tRossi\n", encoding="utf-8")
    reviews = tmp_path / "reviews.tsv"
    reviews.write_text("pos\ta fine film\nneg\tdull and long\n", encoding="utf-8")

    def regularisation(*args: str) -> tuple[float, float, int]:
        config = _printed(capsys, *args, "--task", "classify")
        train = config["train"]
        return train["weight_decay"], config["model"]["embedding_dropout"], train["average_best"]

    assert regularisation(str(names)) == (0.1, 0.1, 5)
    words, features = regularisation(str(reviews)), regularisation(str(tmp_path / "x.npz"))
    assert words == features == (0.01, 0.0, 0)
    flags = ("--weight-decay", "0.02", "--embedding-dropout", "0.3", "--average-best", "3")
    assert regularisation(str(names), *flags) == (0.02, 0.3, 3)


def test_classify_on_feature_sequences_takes_frame_votes(tmp_path, capsys) -> None:
    """.npz features get --frame-votes, chosen on japanese_vowels' folds; text has no frames;
    the flag still wins."""

    def votes(*args: str) -> bool:
        return _printed(capsys, *args, "--task", "classify")["model"]["frame_votes"]

    npz = str(tmp_path / "vowels.npz")
    assert votes(npz) and not votes(npz, "--no-frame-votes")
    assert not votes(str(tmp_path / "names.tsv"))
    assert _printed(capsys, npz, "--task", "classify")["model"]["ensemble"] == 1


def test_condgen_on_vectors_takes_feature_noise(tmp_path, capsys) -> None:
    """Vector conditions (.npz) get --feature-noise 0.5, chosen on digits' dev split; label
    conditions keep none (they have no vector to perturb); the flag still wins."""
    vectors = _printed(capsys, str(tmp_path / "digits.npz"), "--task", "condgen")
    labels = _printed(capsys, str(tmp_path / "names.tsv"), "--task", "condgen")
    assert (vectors["model"]["feature_noise"], labels["model"]["feature_noise"]) == (0.5, 0.0)
    assert vectors["model"]["hidden_size"] == labels["model"]["hidden_size"] == 256
    given = _printed(capsys, str(tmp_path / "d.npz"), "--task", "condgen", "--feature-noise", "0")
    assert given["model"]["feature_noise"] == 0.0
