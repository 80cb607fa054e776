"""No traceback from any folder: every field of every model-folder file is checked where it is
read, so a damaged or hand-edited folder gives one line and exit 2, never a traceback.

A property-based test corrupts random fields (JSON values, tensors, bytes) of a real folder
and runs ``sample``, ``eval``, ``train --resume`` and ``rnnkit.load`` on it: each either works
or fails with one line naming the problem (``rnnkit.load``: a CheckpointError). A few dozen
cases run by default, hundreds, on every task's folders, under ``make test-all``. Explicit
tests pin the folders a reviewer crafted, which used to give tracebacks.
"""

import contextlib
import io
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

import rnnkit
from rnnkit.cli import main
from rnnkit.errors import CheckpointError
from rnnkit.training import folder_check

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny models: threads only cost
TEXT = "the cat sat on the mat.\nthe dog sat on the log.\n" * 12
TINY = [
    *("--hidden-size", "8", "--num-layers", "1", "--embedding-size", "4", "--dropout", "0"),
    *("--batch-size", "2", "--seq-len", "8", "--log-every", "1", "--eval-every", "2"),
]


# --- running a command in-process ----------------------------------------------------------


def _run(argv: list[str]) -> tuple[int, list[str]]:
    """``rnnkit argv`` in this process: its exit code and its stderr lines (stdout dropped)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue().splitlines()


def _works_or_one_line(argv: list[str]) -> str | None:
    """Run ``argv``: it must succeed, or exit 2 with one error line (the last line of stderr;
    ``train`` logs before it) and no traceback. The error line, or None on success."""
    code, lines = _run(argv)
    assert code in (0, 2), (code, lines)
    assert not any("Traceback" in line for line in lines), lines
    errors = [line for line in lines if ": error: " in line]
    if code == 0:
        assert not errors, lines
        return None
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert errors[0].startswith(f"rnnkit {argv[0]}: error: "), errors[0]
    if argv[0] != "train":
        assert len(lines) == 1, lines  # sample and eval print nothing else on stderr
    return errors[0]


def _one_line(argv: list[str], *expected: str) -> str:
    """Run ``argv``: it must exit 2 with one error line holding every ``expected`` text."""
    line = _works_or_one_line(argv)
    assert line is not None, f"{argv} succeeded"
    for text in expected:
        assert text in line, line
    return line


def _load_works_or_refuses(folder: Path) -> None:
    """``rnnkit.load`` returns a model or raises a CheckpointError, nothing else."""
    with contextlib.suppress(CheckpointError):
        rnnkit.load(folder)


# --- the folders ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory) -> tuple[Path, Path]:
    """(corpus, a tiny LM folder trained 3 steps with an evaluation at step 2): every file of a
    folder, the carried LSTM state included."""
    root = tmp_path_factory.mktemp("corruption")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    out = root / "lm"
    assert main(["train", str(corpus), "--out", str(out), *TINY, "--max-steps", "3"]) == 0
    return corpus, out


@pytest.fixture
def victim(lm_folder, tmp_path) -> Path:
    out = tmp_path / "victim"
    shutil.copytree(lm_folder[1], out)
    return out


@pytest.fixture(scope="module")
def in_empty_dir(tmp_path_factory):
    """Work in an empty folder: a corrupted data path like "" or "." must not read the repo."""
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)


LM_USE = ("sample", "--length", "5")


def _commands(
    out: Path, data: Path, step: int, use: tuple[str, ...] = LM_USE
) -> dict[str, list[str]]:
    """The commands that read a folder: ``use`` runs its model (``sample`` for lm, ``predict
    INPUT`` for the others), ``eval`` on ``data``, and ``resume`` for one more step."""
    return {
        "use": [use[0], str(out), *use[1:]],
        "eval": ["eval", str(out), str(data)],
        "resume": ["train", "--out", str(out), "--resume", "--max-steps", str(step + 1)],
    }


def _edit_json(path: Path, edit) -> None:
    values = json.loads(path.read_text(encoding="utf-8"))
    edit(values)
    path.write_text(json.dumps(values), encoding="utf-8")


def _edit_tensors(path: Path, edit) -> None:
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


# --- the folders a reviewer crafted --------------------------------------------------------


def test_metrics_line_with_a_string_step(lm_folder, victim) -> None:
    corpus, _ = lm_folder
    lines = (victim / "metrics.jsonl").read_text().splitlines()
    lines[1] = '{"step": "abc"}'
    (victim / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    resume = _commands(victim, corpus, 3)["resume"]
    _one_line(resume, "metrics.jsonl:2: step must be an integer", "'abc'")
    assert _works_or_one_line(_commands(victim, corpus, 3)["use"]) is None  # not read there


def test_trainer_json_with_a_string_step(lm_folder, victim) -> None:
    _edit_json(victim / "state" / "trainer.json", lambda v: v["trainer"].update(step="x"))
    resume = _commands(victim, lm_folder[0], 3)["resume"]
    _one_line(resume, "trainer.json is corrupted: trainer.step must be an integer", "'x'")


def test_optimizer_param_groups_of_a_number(lm_folder, victim) -> None:
    _edit_json(victim / "state" / "trainer.json", lambda v: v["optimizer"].update(param_groups=[1]))
    resume = _commands(victim, lm_folder[0], 3)["resume"]
    _one_line(resume, "trainer.json is corrupted: optimizer.param_groups[0] must be a JSON object")


def test_loop_state_without_its_random_state(lm_folder, victim) -> None:
    _edit_tensors(victim / "state" / "loop.safetensors", lambda t: t.pop("rng.cpu"))
    resume = _commands(victim, lm_folder[0], 3)["resume"]
    _one_line(resume, "loop.safetensors is corrupted: it lacks rng.cpu")


def test_loop_state_with_a_misshaped_carried_state(lm_folder, victim) -> None:
    loop = load_file(victim / "state" / "loop.safetensors")
    assert loop["hidden.0"].shape == (1, 2, 8)  # (L, B, H) of the LSTM's h
    _edit_tensors(
        victim / "state" / "loop.safetensors",
        lambda t: t.update({"hidden.0": t["hidden.0"][:, :1]}),
    )
    resume = _commands(victim, lm_folder[0], 3)["resume"]
    _one_line(resume, "loop.safetensors is corrupted: hidden.0", "shape (1, 2, 8)", "(1, 1, 8)")


def _vocab_size(folder: Path) -> int:
    return len(json.loads((folder / "vocab.json").read_text())["tokens"])


def _lstm_lm_parameters(V: int, E: int, H: int) -> int:
    """Parameters of a one-layer LSTM language model: embedding, LSTM, head."""
    return V * E + 4 * H * (E + H) + 8 * H + V * H + V


def test_a_model_too_large_for_memory_is_refused_before_allocating(lm_folder, victim) -> None:
    _edit_json(victim / "config.json", lambda v: v["model"].update(hidden_size=1_000_000))
    count = _lstm_lm_parameters(_vocab_size(victim), 4, 1_000_000)
    memory = folder_check.physical_memory()
    for argv in _commands(victim, lm_folder[0], 3).values():
        line = _one_line(argv, "config.json: the model would need", f"{count:,} parameters")
        assert f"{count * 4 / 2**30:,.1f} GiB of memory" in line
        assert f"this machine has {memory / 2**30:,.1f} GiB" in line
    with pytest.raises(CheckpointError, match=r"would need 14,901\.3 GiB"):
        rnnkit.load(victim)
    new = ["train", str(lm_folder[0]), "--out", str(victim.parent / "new"), *TINY]
    _one_line([*new, "--hidden-size", "1000000"], "would need", "choose a smaller --hidden-size")


def test_the_memory_limit_is_the_machines(victim, monkeypatch) -> None:
    """The tiny model's float32 parameters: refused with one byte less memory, loaded with
    exactly their size."""
    count = _lstm_lm_parameters(_vocab_size(victim), 4, 8)
    monkeypatch.setattr(folder_check, "physical_memory", lambda: 4 * count - 1)
    with pytest.raises(CheckpointError, match=f"would need 0.0 GiB of memory for {count} param"):
        rnnkit.load(victim)
    monkeypatch.setattr(folder_check, "physical_memory", lambda: 4 * count)
    assert rnnkit.load(victim).vocab_size == _vocab_size(victim)


def test_absurd_layer_counts_are_refused_without_building(lm_folder, victim) -> None:
    _edit_json(victim / "config.json", lambda v: v["model"].update(num_layers=2**31))
    _one_line(["sample", str(victim)], "would need", "2,147,483,648 recurrent layers")
    _edit_json(victim / "config.json", lambda v: v["model"].update(num_layers=1, hidden_size=2**62))
    _one_line(["sample", str(victim)], "would need", "tensors of more than 2^63 bytes")


def test_vocab_json_nested_100000_deep(lm_folder, victim) -> None:
    (victim / "vocab.json").write_text("[" * 100_000 + "]" * 100_000)
    for argv in _commands(victim, lm_folder[0], 3).values():
        _one_line(argv, "vocab.json is corrupted: JSON nested deeper than 32 levels")
    with pytest.raises(CheckpointError, match="nested deeper"):
        rnnkit.load(victim)


# --- more of each file, by hand ------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda v: v.update(tokens=v["tokens"] + ["t"]), "tokens holds 't' twice"),
        (lambda v: v.update(tokens=v["tokens"][2:]), "must begin with the specials"),
        (lambda v: v["specials"].update(pad="<p>"), "specials.pad must be '<pad>', got '<p>'"),
        (lambda v: v.update(extra=1), "unknown key 'extra'"),
    ],
)
def test_vocab_fields(lm_folder, victim, edit, expected) -> None:
    _edit_json(victim / "vocab.json", edit)
    for argv in _commands(victim, lm_folder[0], 3).values():
        _one_line(argv, "vocab.json is corrupted", expected)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda v: v["trainer"].update(elapsed=float("nan")), "trainer.elapsed must be a finite"),
        (lambda v: v["trainer"].update(best_metrics={"bpc": 1.0}), "best_metrics must be null"),
        (lambda v: v["trainer"].pop("loss_ema"), "trainer lacks 'loss_ema'"),
        (lambda v: v["trainer"].update(chunk=10**6), "chunk 1000000 is past the 32 batches"),
        (lambda v: v["optimizer"]["param_groups"][0].update(eps="x"), "param_groups[0].eps"),
        (
            lambda v: v["optimizer"]["param_groups"][0].update(betas=[0.9]),
            "betas must be a list of 2",
        ),
        (lambda v: v["optimizer"]["param_groups"][0].update(params=[0, 1]), ".params must be"),
        (lambda v: v["optimizer"].update(scalars={"0.step": 1}), "0.step must be in optimizer.saf"),
        (
            lambda v: v["optimizer"].update(scalars={"9.foo": 1}),
            "unknown optimizer state optimizer.scalars.9.foo",
        ),
    ],
)
def test_trainer_json_fields(lm_folder, victim, edit, expected) -> None:
    _edit_json(victim / "state" / "trainer.json", edit)
    _one_line(_commands(victim, lm_folder[0], 3)["resume"], "trainer.json", expected)


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        ("optimizer", lambda t: t.pop("2.exp_avg_sq"), "parameter 2's state lacks 2.exp_avg_sq"),
        ("optimizer", lambda t: t.update({"2.exp_avg": t["2.exp_avg"].double()}), "2.exp_avg must"),
        (
            "optimizer",
            lambda t: t.update({"0.step": torch.zeros(2)}),
            "0.step must be torch.float32 of shape ()",
        ),
        (
            "loop",
            lambda t: t.update({"rng.cpu": t["rng.cpu"].float()}),
            "rng.cpu must be torch.uint8",
        ),
        (
            "loop",
            lambda t: t.update({"rng.cpu": torch.zeros(5056, dtype=torch.uint8)}),
            "rng.cpu: Invalid mt19937 state",
        ),
        ("loop", lambda t: t.pop("hidden.1"), "the carried state must be hidden.0, hidden.1"),
        ("loop", lambda t: t.update(junk=torch.zeros(1)), "unknown tensor 'junk'"),
        (
            "weights",
            lambda t: t["head.bias"].fill_(float("inf")),
            "head.bias holds values that are not finite",
        ),
    ],
)
def test_state_tensors(lm_folder, victim, file, edit, expected) -> None:
    _edit_tensors(victim / "state" / f"{file}.safetensors", edit)
    _one_line(_commands(victim, lm_folder[0], 3)["resume"], f"{file}.safetensors", expected)


def test_model_weights_must_be_finite(lm_folder, victim) -> None:
    _edit_tensors(victim / "model.safetensors", lambda t: t["rnn.weight_hh_l0"][0].fill_(math.nan))
    for argv in list(_commands(victim, lm_folder[0], 3).values())[:2]:
        _one_line(argv, "model.safetensors: rnn.weight_hh_l0 holds values that are not finite")


def test_bad_metrics_lines_name_their_line(lm_folder, victim) -> None:
    resume = _commands(victim, lm_folder[0], 3)["resume"]
    good = (victim / "metrics.jsonl").read_text()
    for bad, expected in [
        ('{"step": 1, "loss": "low"}', "metrics.jsonl:2: loss must be a number, got 'low'"),
        ("[1, 2]", "metrics.jsonl:2: must be a JSON object with a step, got [1, 2]"),
        ('{"step": 1, "lo', "metrics.jsonl:2: Unterminated string"),
        ("[" * 40 + "]" * 40, "metrics.jsonl:2: JSON nested deeper than 32 levels"),
    ]:
        lines = good.splitlines()
        lines[1] = bad
        (victim / "metrics.jsonl").write_text("\n".join(lines) + "\n")
        _one_line(resume, expected)


def test_resume_logs_the_data_path_the_folder_names(lm_folder, victim) -> None:
    corpus, _ = lm_folder
    code, lines = _run(_commands(victim, corpus, 3)["resume"])
    assert code == 0
    assert f"resuming {victim} on {corpus}" in lines
    corpus_copy = victim.parent / "gone.txt"
    _edit_json(victim / "config.json", lambda v: v["data"].update(path=str(corpus_copy)))
    code, lines = _run(_commands(victim, corpus, 4)["resume"])
    assert code == 2 and f"resuming {victim} on {corpus_copy}" in lines
    assert "gone.txt" in lines[-1] and "does not exist" in lines[-1]


@pytest.fixture(scope="module")
def numpy_folder(lm_folder) -> Path:
    """A folder of the NumPy engine (one-layer char LSTM, float64 state), trained 3 steps."""
    corpus, lm = lm_folder
    out = lm.parent / "numpy"
    engine = ["--engine", "numpy", "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8"]
    assert main(["train", str(corpus), "--out", str(out), *engine, "--max-steps", "3"]) == 0
    return out


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        ("config.json", lambda v: v.update(model=[]), "it needs --cell one of"),
        ("config.json", lambda v: v["model"].update(cell=["lstm"]), "the model has ['lstm']"),
        ("vocab.json", lambda v: v.update(tokens=7), "vocab.json is corrupted"),
        ("model.safetensors", "head.bias", "head.bias must hold finite numbers"),
    ],
)
def test_numpy_engine_sampling_checks_its_folder(numpy_folder, tmp_path, file, edit, expected):
    out = tmp_path / "numpy"
    shutil.copytree(numpy_folder, out)
    if file.endswith(".json"):
        _edit_json(out / file, edit)
    else:
        _edit_tensors(out / file, lambda t: t[edit].fill_(math.nan))
    _one_line(["sample", str(out), "--engine", "numpy", "--length", "5"], expected)


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        ("trainer.safetensors", lambda t: t.pop("state.c"), "trainer.safetensors lacks state.c"),
        (
            "trainer.safetensors",
            lambda t: t.update({"state.h": t["state.h"][:1]}),
            "state.h must have shape (2, 8), got (1, 8)",
        ),
        (
            "trainer.json",
            lambda v: v["config"].update(hidden_size=9),
            "numpy_trainer.config.hidden_size must be 8 as in config.json, got 9",
        ),
        ("trainer.json", lambda v: v.update(position=-1), "numpy_trainer.position must be an"),
        ("trainer.json", lambda v: v.update(rng={"state": 1}), "numpy_trainer.rng is not a PCG64"),
        ("trainer.json", lambda v: v.pop("smooth_loss"), "numpy_trainer lacks 'smooth_loss'"),
    ],
)
def test_numpy_engine_resume_checks_its_trainer(
    lm_folder, numpy_folder, tmp_path, file, edit, expected
):
    out = tmp_path / "numpy"
    shutil.copytree(numpy_folder, out)
    if file.endswith(".json"):
        _edit_json(out / "state" / file, lambda v: edit(v["numpy_trainer"]))
    else:
        tensors = safetensors.numpy.load_file(out / "state" / file)
        edit(tensors)
        safetensors.numpy.save_file(tensors, out / "state" / file)
    _one_line(_commands(out, lm_folder[0], 3)["resume"], "is not a NumPy engine state", expected)


# --- random corruption of every file -------------------------------------------------------

SPECIAL_NUMBERS = [0, -1, 1, 3, 0.5, -0.5, 1e308, math.nan, math.inf, 2**31, 2**63, 10**30]
SPECIAL_VALUES = [None, True, "", "x", "lstm", [], {}, *SPECIAL_NUMBERS]
json_values = st.one_of(
    st.sampled_from(SPECIAL_VALUES),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=4,
    ),
)


def _json_paths(value, path=()):
    """Every place in a JSON value (the first 3 items of each list)."""
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _json_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:3]):
            yield from _json_paths(v, (*path, i))


@st.composite
def corruptions(draw, folder: Path, name: str):
    """(the file ``name`` of ``folder``, what is done to it, a function that does it to a
    copy)."""
    how = draw(st.sampled_from(["field", "field", "field", "truncate", "byte", "delete"]))
    if how == "truncate":
        fraction = draw(st.floats(0, 1))

        def cut(path: Path) -> None:
            path.write_bytes(path.read_bytes()[: int(fraction * path.stat().st_size)])

        return name, f"cut to {fraction:.2f} of its size", cut
    if how == "byte":
        at, byte = draw(st.floats(0, 1, exclude_max=True)), draw(st.integers(0, 255))

        def flip(path: Path) -> None:
            data = bytearray(path.read_bytes())
            data[int(at * len(data))] = byte
            path.write_bytes(bytes(data))

        return name, f"byte at {at:.2f} of it set to {byte}", flip
    if how == "delete":
        return name, "deleted", Path.unlink
    if name.endswith(".safetensors"):
        tensors = load_file(folder / name)
        key = draw(st.sampled_from(sorted(tensors)))
        op = draw(st.sampled_from(["drop", "reshape", "dtype", "nan", "extra", "scalar"]))
        dtype = draw(st.sampled_from([torch.float64, torch.int64, torch.uint8, torch.bfloat16]))

        def tensor_edit(tensors: dict) -> None:
            t = tensors[key]
            if op == "drop":
                tensors.pop(key)
            elif op == "reshape":
                tensors[key] = torch.zeros(*(s + 1 for s in t.shape), 2, dtype=t.dtype)
            elif op == "dtype":
                tensors[key] = t.to(dtype)
            elif op == "nan" and t.is_floating_point():
                tensors[key] = torch.full_like(t, math.nan)
            elif op == "extra":
                tensors[key + ".extra"] = torch.zeros(2)
            else:
                tensors[key] = torch.tensor(3.0)

        return name, f"{op} {key} ({dtype})", lambda path: _edit_tensors(path, tensor_edit)
    text = (folder / name).read_text(encoding="utf-8")
    line = None
    if name.endswith(".jsonl"):
        line = draw(st.integers(0, len(text.splitlines()) - 1))
        text = text.splitlines()[line]
    value = json.loads(text)
    where = draw(st.sampled_from(list(_json_paths(value))))
    delete = bool(where) and draw(st.booleans()) and draw(st.booleans())
    new = None if delete else draw(json_values)

    def json_edit(path: Path) -> None:
        changed = json.loads(text)
        if not where:
            changed = new
        else:
            parent = changed
            for k in where[:-1]:
                parent = parent[k]
            if delete:
                del parent[where[-1]]
            else:
                parent[where[-1]] = new
        if line is None:
            path.write_text(json.dumps(changed), encoding="utf-8")
        else:
            lines = path.read_text(encoding="utf-8").splitlines()
            lines[line] = json.dumps(changed)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    at = f"line {line + 1} " if line is not None else ""
    return name, f"{at}{list(where)} {'deleted' if delete else f'= {new!r}'}", json_edit


def _check_corrupted(
    source: Path,
    data: Path,
    corruption,
    command: str,
    use: tuple[str, ...],
) -> None:
    """Damage a copy of ``source`` and run ``command`` (of :func:`_commands`, or ``load``) on
    it; ``data`` is the task's data, ``use`` how its model is run."""
    name, _, damage = corruption
    step = json.loads((source / "state" / "trainer.json").read_text())["trainer"]["step"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        shutil.copytree(source, out)
        damage(out / name)
        if command == "load":
            _load_works_or_refuses(out)
        else:
            _works_or_one_line(_commands(out, data, step, use)[command])


_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _readers(name: str) -> list[str]:
    """The commands that read the file ``name`` of a folder."""
    if name == "metrics.jsonl" or name.startswith("state/"):
        return ["resume"]
    return ["use", "eval", "resume", "load"]


def _corrupt_and_run(
    source: Path, inputs: Path, name: str, examples: int, use: tuple[str, ...] = LM_USE
) -> None:
    """``examples`` random corruptions of the file ``name`` of a copy of ``source``, each with
    a command that reads it (``inputs``: the task's data; ``use``: how its model is run)."""

    @settings(max_examples=examples, **_SETTINGS)
    @given(data=st.data())
    def corrupt_and_run(data) -> None:
        command = data.draw(st.sampled_from(_readers(name)), label="command")
        corruption = data.draw(corruptions(source, name), label="corruption")
        _check_corrupted(source, inputs, corruption, command, use)

    corrupt_and_run()


LM_FILES = [
    "config.json",
    "vocab.json",
    "model.safetensors",
    "metrics.jsonl",
    "state/trainer.json",
    "state/weights.safetensors",
    "state/optimizer.safetensors",
    "state/loop.safetensors",
]


def test_the_lm_folder_has_every_file(lm_folder) -> None:
    assert _files(lm_folder[1]) == sorted(LM_FILES)


@pytest.mark.usefixtures("in_empty_dir")
@pytest.mark.parametrize("name", LM_FILES)
def test_a_corrupted_lm_folder_never_gives_a_traceback(lm_folder, name) -> None:
    _corrupt_and_run(lm_folder[1], lm_folder[0], name, examples=4)


@pytest.mark.slow
@pytest.mark.usefixtures("in_empty_dir")
@pytest.mark.parametrize("name", LM_FILES)
def test_hundreds_of_corrupted_lm_folders(lm_folder, name) -> None:
    _corrupt_and_run(lm_folder[1], lm_folder[0], name, examples=35)


# --- every task's folders (make test-all) ----------------------------------------------------


def _labelled(folder: Path) -> Path:
    words = {"pos": ["good", "great", "fine"], "neg": ["bad", "awful", "dull"]}
    lines = [f"{label}\t{w} film {w}" for label, ws in words.items() for w in ws * 5]
    path = folder / "items.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _sequences(folder: Path, per_step: bool) -> Path:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 5, 3)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int64) if per_step else np.arange(30) % 2
    path = folder / ("frames.npz" if per_step else "seqs.npz")
    np.savez(path, x=x, lengths=rng.integers(2, 6, size=30), y=y)
    return path


def _conll(folder: Path) -> Path:
    sentences = ["Ann\tB-per\nsaw\tO\nRome\tB-loc", "Bob\tB-per\nleft\tO"] * 12
    path = folder / "ner.conll"
    path.write_text("\n\n".join(sentences) + "\n", encoding="utf-8")
    return path


def _pairs(folder: Path) -> Path:
    words = ["red", "blue", "cat", "dog"]
    lines = [f"{a} {b}\t{b} {a}" for a in words for b in words] * 2
    path = folder / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _names(folder: Path) -> Path:
    names = {"ab": ["abba", "abab", "baba"], "cd": ["cdc", "dcdc", "ccd"]}
    path = folder / "names.tsv"
    path.write_text("\n".join(f"{k}\t{n}" for k, ns in names.items() for n in ns * 5) + "\n")
    return path


def _captions(folder: Path) -> Path:
    x = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    np.savez(folder / "vectors.npz", x=x[:4])
    np.savez(folder / "captions.npz", x=x, text=np.array(["zero", "one", "two"])[x.argmax(1)])
    return folder / "captions.npz"


def _corpus(folder: Path) -> Path:
    path = folder / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


SMALL = [
    *("--hidden-size", "8", "--num-layers", "1", "--embedding-size", "4", "--dropout", "0"),
    *("--batch-size", "4", "--log-every", "1", "--eval-every", "2", "--max-steps", "3"),
]
KINDS = {  # name: (make data, flags, how the model is run: a command and its arguments)
    "classify-text": (_labelled, ["--task", "classify"], ("predict", "{data}")),
    "classify-npz": (lambda f: _sequences(f, False), ["--task", "classify"], ("predict", "{data}")),
    "tag-text": (_conll, ["--task", "tag", "--crf", "--char-features"], ("predict", "{data}")),
    "tag-npz": (lambda f: _sequences(f, True), ["--task", "tag"], ("predict", "{data}")),
    "seq2seq": (_pairs, ["--task", "seq2seq", "--bidirectional"], ("predict", "{data}")),
    "condgen-label": (_names, ["--task", "condgen"], ("sample", "--condition", "ab")),
    "condgen-vector": (_captions, ["--task", "condgen"], ("predict", "{folder}/vectors.npz")),
    "lm-numpy": (
        _corpus,
        ["--engine", "numpy", "--hidden-size", "8", "--batch-size", "2", "--seq-len", "8"],
        ("sample", "--engine", "numpy", "--length", "5"),
    ),
}


@pytest.fixture(scope="module")
def task_folders(tmp_path_factory) -> dict[str, tuple[Path, Path, tuple[str, ...]]]:
    """name -> (data, a folder trained 3 steps, how its model is run), for each kind."""
    folders = {}
    for name, (make, flags, use) in KINDS.items():
        root = tmp_path_factory.mktemp(name)
        data, out = make(root), root / "run"
        small = SMALL if name != "lm-numpy" else ["--eval-every", "2", "--max-steps", "3"]
        assert main(["train", str(data), "--out", str(out), *small, *flags]) == 0, name
        use = tuple(a.format(data=data, folder=root) for a in use)
        folders[name] = (data, out, use)
    return folders


@pytest.mark.slow
@pytest.mark.usefixtures("in_empty_dir")
@pytest.mark.parametrize("kind", list(KINDS))
def test_hundreds_of_corrupted_task_folders(task_folders, kind) -> None:
    inputs, source, use = task_folders[kind]
    for name in _files(source):
        _corrupt_and_run(source, inputs, name, examples=3, use=use)
