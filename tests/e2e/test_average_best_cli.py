"""End to end: --average-best K through `rnnkit train`: the folder keeps the mean of the K best
evaluations' weights when it scores at least as well as the best alone, else the best alone;
trainer.json and the log say which; an exact resume; refusals.

Tiny LMs (H 16, B 4, T 8) on a few hundred characters, their validation results forced where a
test needs a given order; and classify's preset on made-up surnames, which averages by default.
"""

import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from rnnkit.cli import main
from rnnkit.tasks.lm import LanguageModelling
from tests.e2e.support import InterruptAfter, corpus_text

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = [
    *("--hidden-size", "16", "--embedding-size", "8", "--batch-size", "4", "--seq-len", "8"),
    *("--log-every", "3", "--warmup-steps", "0", "--precision", "fp32", "--dropout", "0.2"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(corpus_text(24), encoding="utf-8")
    return path


def _trainer(out: Path) -> dict:
    return json.loads((out / "state" / "trainer.json").read_text())["trainer"]


def _force_losses(monkeypatch, losses: list[float]) -> dict[int, dict[str, torch.Tensor]]:
    """Make the LM's evaluations return ``losses`` in turn; the weights of each (1-based)."""
    given = iter(losses)
    weights: dict[int, dict[str, torch.Tensor]] = {}

    def evaluate(self, model, val, run, device):
        weights[len(weights) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        loss = next(given)
        return {"loss": loss, "bpc": loss, "perplexity": loss, "tokens": 1}

    monkeypatch.setattr(LanguageModelling, "evaluate", evaluate)
    return weights


def _mean(weights: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: sum(w[k].double() for w in weights) / len(weights) for k in weights[0]}


def test_the_folder_keeps_the_mean_when_it_scores_as_well(
    corpus, tmp_path, monkeypatch, capsys
) -> None:
    """Losses 3.0, 2.9, 3.1, 2.5, 2.6, 2.7, 3.5, 2.8 at steps 1-8: the three best are steps 4,
    5 and 6; their mean's evaluation (the ninth) gives 2.4, and the folder keeps the mean."""
    seen = _force_losses(monkeypatch, [3.0, 2.9, 3.1, 2.5, 2.6, 2.7, 3.5, 2.8, 2.4])
    out = tmp_path / "mean"
    argv = ["train", str(corpus), "--out", str(out), *TINY, "--eval-every", "1"]
    assert main([*argv, "--average-best", "3", "--max-steps", "8"]) == 0
    assert len(seen) == 9
    kept = load_file(out / "model.safetensors")
    mean = _mean([seen[4], seen[5], seen[6]])
    for name, value in kept.items():
        torch.testing.assert_close(value.double(), mean[name], rtol=0, atol=1e-6)
        assert not torch.equal(value, seen[4][name]), name
    assert torch.equal(seen[9]["head.weight"], kept["head.weight"])  # what was evaluated
    trainer = _trainer(out)
    assert trainer["best_step"] == 4 and trainer["best_metrics"]["loss"] == 2.5
    assert trainer["averaged"] == {
        "steps": [4, 5, 6],
        "metrics": {"loss": 2.4, "bpc": 2.4, "perplexity": 2.4, "tokens": 1},
        "kept": True,
    }
    assert sorted(p.name for p in (out / "state").glob("best-*")) == [
        "best-4.safetensors",
        "best-5.safetensors",
        "best-6.safetensors",
    ]
    raw = load_file(out / "state" / "weights.safetensors")  # training's own weights go on
    assert torch.equal(raw["head.weight"], seen[8]["head.weight"])
    err = capsys.readouterr().err
    assert "the mean of the weights of steps 4, 5, 6: val loss 2.4000, kept in" in err


def test_the_mean_stays_unless_it_scores_below_all_it_averages(
    corpus, tmp_path, monkeypatch, capsys
) -> None:
    """Steps 2 and 3 (2.5, 2.6) are the two best: a mean at 2.55 is kept, though worse than
    step 2 alone; one at 2.65, below both, is not."""
    seen = _force_losses(monkeypatch, [3.0, 2.5, 2.6, 2.7, 2.55])
    out = tmp_path / "between"
    argv = ["train", str(corpus), "--out", str(out), *TINY, "--eval-every", "1"]
    assert main([*argv, "--average-best", "2", "--max-steps", "4"]) == 0
    assert _trainer(out)["averaged"]["kept"] is True
    assert not torch.equal(load_file(out / "model.safetensors")["head.bias"], seen[2]["head.bias"])
    seen = _force_losses(monkeypatch, [3.0, 2.5, 2.6, 2.7, 2.65])
    out = tmp_path / "alone"
    argv = ["train", str(corpus), "--out", str(out), *TINY, "--eval-every", "1"]
    assert main([*argv, "--average-best", "2", "--max-steps", "4"]) == 0
    kept = load_file(out / "model.safetensors")
    assert all(torch.equal(kept[k], seen[2][k]) for k in kept)
    assert _trainer(out)["averaged"]["kept"] is False
    assert "below every evaluation it averages, so the best alone stays" in capsys.readouterr().err


def test_a_resumed_run_puts_the_best_alone_back_in_place_of_an_earlier_mean(
    corpus, tmp_path, monkeypatch
) -> None:
    """The first run ends with its mean kept; resumed for 4 more steps, nothing beats step 2,
    and the new mean scores below steps 2 and 3: the folder must hold step 2's weights again."""
    seen = _force_losses(monkeypatch, [3.0, 2.5, 2.6, 2.7, 2.4, 2.9, 2.8, 3.0, 2.9, 2.65])
    out = tmp_path / "again"
    argv = ["train", str(corpus), "--out", str(out), *TINY, "--eval-every", "1"]
    assert main([*argv, "--average-best", "2", "--max-steps", "4"]) == 0
    assert _trainer(out)["averaged"]["kept"] is True
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "8"]) == 0
    assert len(seen) == 10
    kept = load_file(out / "model.safetensors")
    assert all(torch.equal(kept[k], seen[2][k]) for k in kept)
    trainer = _trainer(out)
    assert trainer["averaged"]["steps"] == [2, 3] and trainer["averaged"]["kept"] is False


def test_resume_with_average_best_is_exact(corpus, tmp_path, monkeypatch) -> None:
    """Interrupted at step 11 of 20 (evaluations every 2 steps) and resumed: the kept
    evaluations (steps 2, 6 and 14, two of them from before the interruption), the kept mean
    and trainer.json's record equal the uninterrupted run's."""
    from rnnkit.training import loop

    losses = [2.0, 3.0, 2.1, 3.0, 3.0, 3.0, 2.2, 3.0, 3.0, 3.0, 1.9]
    argv = ["train", str(corpus), *TINY, "--average-best", "3", "--eval-every", "2"]
    argv += ["--max-steps", "20"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    _force_losses(monkeypatch, losses)
    assert main([*argv, "--out", str(whole)]) == 0
    _force_losses(monkeypatch, losses)
    with monkeypatch.context() as patch:
        patch.setattr(loop, "StopOnInterrupt", InterruptAfter(11))
        assert main([*argv, "--out", str(split)]) == 130  # as after Ctrl-C
    assert _trainer(split)["averaged"] is None  # Ctrl-C keeps the best alone
    assert main(["train", "--out", str(split), "--resume"]) == 0
    names = sorted(p.name for p in (whole / "state").glob("best-*"))
    assert names == ["best-14.safetensors", "best-2.safetensors", "best-6.safetensors"]
    assert names == sorted(p.name for p in (split / "state").glob("best-*"))
    for name in ["model.safetensors", *(f"state/{n}" for n in names)]:
        a, b = load_file(whole / name), load_file(split / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert _trainer(split)["averaged"] == _trainer(whole)["averaged"]
    assert _trainer(whole)["averaged"]["steps"] == [2, 6, 14]


def test_resume_refuses_another_k_and_a_damaged_file(corpus, tmp_path, capsys) -> None:
    out = tmp_path / "k"
    argv = ["train", str(corpus), "--out", str(out), *TINY, "--eval-every", "2"]
    assert main([*argv, "--average-best", "2", "--max-steps", "6"]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--average-best", "3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--average-best 2 -> 3" in err[0]

    path = next((out / "state").glob("best-*"))
    saved = load_file(path)
    saved["param.head.bias"] = saved["param.head.bias"][:-1]
    save_file(saved, path)
    assert main(["train", "--out", str(out), "--resume", "--max-steps", "8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rnnkit train: error: ") and "does not fit the model" in err[-1]


def test_bad_values_and_the_numpy_engine_are_refused(corpus, tmp_path, capsys) -> None:
    argv = ["train", str(corpus), "--out", str(tmp_path / "x"), *TINY]
    assert main([*argv, "--average-best", "-1"]) == 2
    assert "--average-best must be 0 or more, got -1" in capsys.readouterr().err
    numpy = ["train", str(corpus), "--out", str(tmp_path / "n"), "--engine", "numpy"]
    assert main([*numpy, "--average-best", "3"]) == 2
    assert "--engine numpy needs --average-best 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "n").exists()


def _surnames(path: Path, count: int, seed: int) -> Path:
    """Made-up single-word items of four languages told apart by their endings."""
    rng = random.Random(seed)
    endings = {"ru": "ov", "es": "ez", "pl": "ski", "en": "son"}
    lines = []
    for i in range(count):
        label = list(endings)[i % 4]
        stem = "".join(rng.choices("bcdfgklmnprstv", k=rng.randint(1, 3)))
        lines.append(f"{label}\t{stem.title()}a{endings[label]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_classify_on_characters_keeps_the_mean_of_its_5_best_by_default(tmp_path, capsys) -> None:
    """The preset on single-word items: the 5 evaluations of the highest accuracy are averaged,
    and the folder's model is the one whose accuracy trainer.json and the log report, as a
    fresh `rnnkit eval` of the folder measures it."""
    train = _surnames(tmp_path / "train.tsv", 96, seed=0)
    val = _surnames(tmp_path / "val.tsv", 40, seed=1)
    out = tmp_path / "names"
    argv = ["train", str(train), "--task", "classify", "--val", str(val), "--out", str(out)]
    argv += [*("--hidden-size", "8", "--embedding-size", "8", "--warmup-steps", "0")]
    argv += [*("--eval-every", "1", "--max-steps", "12", "--lr", "0.02")]
    # The network alone: these endings are so regular that the preset's n-gram counts
    # (--naive-bayes 0.1) would get every name right at every step, and the ranking of the
    # evaluations would mean nothing.
    argv += ["--naive-bayes", "0"]
    assert main(argv) == 0
    trainer = _trainer(out)
    averaged = trainer["averaged"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    accuracy = {r["step"]: r["val_accuracy"] for r in records if "val_accuracy" in r}
    assert len(accuracy) == 12 and len(set(accuracy.values())) > 2  # the ranking means something
    assert len(averaged["steps"]) == 5 and trainer["best_step"] in averaged["steps"]
    lowest_kept = min(accuracy[s] for s in averaged["steps"])
    assert all(a <= lowest_kept for s, a in accuracy.items() if s not in averaged["steps"])
    reported = averaged["metrics"] if averaged["kept"] else trainer["best_metrics"]
    err = capsys.readouterr().err
    assert f"the mean of the weights of steps {', '.join(map(str, averaged['steps']))}:" in err
    assert main(["eval", str(out), str(val), "--json"]) == 0
    measured = json.loads(capsys.readouterr().out)
    assert measured["accuracy"] == pytest.approx(reported["accuracy"], abs=1e-9)
    assert measured["loss"] == pytest.approx(reported["loss"], rel=1e-5)
