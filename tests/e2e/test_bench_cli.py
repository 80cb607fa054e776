"""End to end: `rnnkit bench` in-process with --quick (tiny sizes, one round).

Speed is measured, never asserted: these tests check the keys, the sizes, the FLOP counts and
that every figure is a positive number, never how large it is.
"""

import contextlib
import io
import json
import math

import pytest
import torch

from rnnkit import layers
from rnnkit.benchmark import training_flops_per_token, training_step
from rnnkit.cli import main

TRAINING_KEYS = {
    "cell",
    "impl",
    "tokens_per_s",
    "torch_nn_tokens_per_s",
    "ratio_to_torch_nn",
    "flops_per_token",
    "mfu",
    "torch_nn_mfu",
}
SAMPLING_KEYS = {
    "chars_per_s",
    "bf16_chars_per_s",
    "int8_chars_per_s",
    "torch_nn_chars_per_s",
    "reference_loop_chars_per_s",
    "limit_chars_per_s",
    "ratio_to_limit",
    "bf16_ratio_to_limit",
    "int8_ratio_to_limit",
    "memory_gb_s",
}
LIMIT_KEYS = {
    "products_chars_per_s",
    "weight_bytes_per_step",
    "bandwidth_gb_s",
    "bandwidth_chars_per_s",
}


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_json() -> dict:
    """The JSON of one `rnnkit bench --quick --json` run, shared by the tests that read it."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["bench", "--quick", "--json"]) == 0
    lines = stdout.getvalue().splitlines()
    assert len(lines) == 1, "--json prints exactly one line on stdout"
    return json.loads(lines[0])


def test_json_has_the_documented_keys(quick_json):
    assert {"torch", "machine", "threads", "config", "matmul", "training", "sampling"} <= set(
        quick_json
    )
    assert set(quick_json["matmul"]) == {"n", "fp32_gflops", "bf16_gflops"}
    assert [row["cell"] for row in quick_json["training"]] == ["rnn", "gru", "lstm"]
    for row in quick_json["training"]:
        assert set(row) == TRAINING_KEYS
        assert row["impl"] in {"fused", "loop"}
    assert set(quick_json["sampling"]) == SAMPLING_KEYS | {"limits"}
    assert set(quick_json["sampling"]["limits"]) == {"fp32", "bf16", "int8"}
    for limit in quick_json["sampling"]["limits"].values():
        assert set(limit) == LIMIT_KEYS | {"kernel"}


def test_json_figures_are_positive_numbers(quick_json):
    assert _positive(quick_json["threads"])
    for key in ("fp32_gflops", "bf16_gflops"):
        assert _positive(quick_json["matmul"][key]), key
    for row in quick_json["training"]:
        for key in TRAINING_KEYS - {"cell", "impl"}:
            assert _positive(row[key]), (row["cell"], key)
    for key in SAMPLING_KEYS:
        assert _positive(quick_json["sampling"][key]), key
    for dtype, limit in quick_json["sampling"]["limits"].items():
        for key in LIMIT_KEYS:
            assert _positive(limit[key]), (dtype, key)


def test_quick_uses_tiny_sizes_and_counts_six_flops_per_weight(quick_json):
    config = quick_json["config"]
    assert (config["num_layers"], config["hidden_size"], config["repeats"]) == (1, 16, 1)
    assert quick_json["matmul"]["n"] == config["matmul_size"] == 256
    weights_per_gate = 16 * (16 + 16)  # one layer: W_ih (H, H) and W_hh (H, H) per gate
    gates = {"rnn": 1, "gru": 3, "lstm": 4}
    for row in quick_json["training"]:
        assert row["flops_per_token"] == 6 * gates[row["cell"]] * weights_per_gate


def test_training_flops_count_every_layer_of_torch_modules():
    lstm = torch.nn.LSTM(4, 6, num_layers=2)  # layer 0: (24, 4) + (24, 6); layer 1: (24, 6) x 2
    assert training_flops_per_token(lstm) == 6 * (24 * (4 + 6) + 24 * (6 + 6))


def test_flags_override_the_quick_sizes_and_threads_are_restored(capsys):
    threads = torch.get_num_threads()
    args = ["bench", "--quick", "--json", "--num-layers", "2", "--hidden-size", "8"]
    assert main([*args, "--batch-size", "3", "--seq-len", "5", "--threads", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    config = result["config"]
    assert (config["num_layers"], config["hidden_size"]) == (2, 8)
    assert (config["batch_size"], config["seq_len"], config["threads"]) == (3, 5, 1)
    assert result["threads"] == 1
    assert torch.get_num_threads() == threads


def test_table_prints_the_header_rows(capsys):
    assert main(["bench", "--quick"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("rnnkit bench: ")
    for header in (
        "matrix multiply 256x256",
        "training, forward + backward + AdamW step, fp32, L=1, H=16, B=4, T=8",
        "sampling, LSTM at batch 1, L=1, H=16; limit: the step's products alone, per dtype",
    ):
        assert header in lines
    assert any(line.split()[:3] == ["cell", "impl", "tokens/s"] for line in lines)
    assert any(line.split()[:3] == ["loop", "chars/s", "x"] for line in lines)
    rows = ("rnnkit LSTM.step", "rnnkit, bf16 weights", "rnnkit, int8 weights")
    for row in (*rows, "reference loop (fp32 addmm)", "main memory read bandwidth"):
        assert any(line.strip().startswith(row) for line in lines), row
    assert any(line.split()[:2] == ["limit", "products/s"] for line in lines)
    for dtype in ("fp32", "bf16", "int8"):
        assert any(line.split()[:1] == [dtype] for line in lines), dtype
    assert "bare" not in out
    for cell in ("rnn", "gru", "lstm"):
        assert any(line.split()[:1] == [cell] for line in lines), cell
    assert "GFLOP/s" in out


@pytest.mark.parametrize(
    "flags",
    [
        ["--hidden-size", "0"],
        ["--num-layers", "-1"],
        ["--batch-size", "0"],
        ["--seq-len", "0"],
        ["--threads", "0"],
        ["--hidden-size", "big"],
    ],
)
def test_invalid_values_exit_2_with_one_line(flags, capsys):
    assert main(["bench", "--quick", *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("rnnkit bench: error: ")


def test_help_has_a_summary_and_examples(capsys):
    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    assert "rnnkit bench --quick --json" in out
    for flag in ("--quick", "--json", "--num-layers", "--hidden-size", "--batch-size", "--threads"):
        assert flag in out


@pytest.mark.parametrize("module_cls", [torch.nn.LSTM, layers.LSTM, layers.GRU])
def test_timed_training_step_runs_the_optimizer(module_cls):
    """The timed call is forward + backward + AdamW step: every parameter moves, every call."""
    module = module_cls(4, 6, 2)
    x = torch.randn(5, 3, 4, requires_grad=True)  # (T, B, D)
    step = training_step(module, x)
    for _ in range(2):
        before = [p.detach().clone() for p in module.parameters()]
        step()
        for (name, p), old in zip(module.named_parameters(), before, strict=True):
            assert p.grad is not None, name
            assert not torch.equal(p.detach(), old), f"{name} was not updated"
