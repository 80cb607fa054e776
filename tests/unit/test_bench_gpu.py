"""bench/gpu.py, the prepared device script of issue 16: where CUDA is absent it says so and writes
nothing; its quick smoke run on the CPU fills every section of its JSON (speeds are never
asserted, only that each row is there, positive and consistent with its reference)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.usefixtures("single_thread")


def _bench_gpu():
    path = Path(__file__).parents[2] / "bench" / "gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_without_cuda_it_says_so_and_writes_nothing(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "gpu.json"
    assert _bench_gpu().main(["--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "no CUDA device here" in captured.err and "Nothing was measured" in captured.err
    assert captured.out == ""
    assert not out.exists()


def test_cpu_runs_only_as_the_quick_smoke_run(capsys) -> None:
    with pytest.raises(SystemExit) as stopped:
        _bench_gpu().main(["--device", "cpu"])
    assert stopped.value.code == 2
    assert "needs --quick" in capsys.readouterr().err


def test_quick_smoke_run_fills_every_section(tmp_path) -> None:
    bench = _bench_gpu()
    out = tmp_path / "gpu.json"
    assert bench.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    skipped = {(row.get("layer"), row.get("precision")) for row in report["skipped"]}

    layer_names = [f"torch.nn.{cls.__name__}" for cls in bench.CUDNN.values()]
    layer_names += [f"rnnkit {name}" for name, *_ in bench.RNNKIT_LAYERS]
    for precision in ("fp32", "bf16"):
        rows = {r["layer"]: r for r in report["layers"] if r["precision"] == precision}
        for name in layer_names:  # each measured or skipped with its error, never lost
            assert (name in rows) != ((name, precision) in skipped), (name, precision)
        for name, cell, _, _ in bench.RNNKIT_LAYERS:
            row = rows.get(f"rnnkit {name}")
            reference = rows.get(f"torch.nn.{bench.CUDNN[cell].__name__}")
            if row is None or reference is None:
                continue
            assert row["tokens_per_s"] > 0 and row["compaction_warnings"] == 0
            expected = row["tokens_per_s"] / reference["tokens_per_s"]
            assert row["ratio_to_torch_nn"] == pytest.approx(expected)
    assert {r["impl_ran"] for r in report["layers"] if r["layer"] == "rnnkit LSTM loop"} == {"loop"}

    assert {r["layer"] for r in report["minimal"]} == {
        "torch.nn.GRU",
        "rnnkit MinGRU",
        "rnnkit MinLSTM",
    }
    assert all(r["tokens_per_s"] > 0 for r in report["minimal"])
    assert report["kernel_choices"] == ["torch"]  # Triton's run on CUDA only
    rnnkit_rows = [
        r for r in report["layers"] + report["minimal"] if r["layer"].startswith("rnnkit")
    ]
    assert {r["kernels"] for r in rnnkit_rows} == {"torch"}
    sampling = {r["model"]: r for r in report["sampling"]}
    assert len(sampling) == 3 and all(r["chars_per_s"] > 0 for r in sampling.values())
    assert sampling["torch.nn.LSTM step loop"]["ratio_to_torch_nn"] == 1.0
    presets = {r["preset"]: r for r in report["lm_training"]}
    assert set(presets) == {"cpu", "gpu"}
    assert presets["gpu"]["hidden_size"] > presets["cpu"]["hidden_size"]
    assert presets["gpu"]["batch"] > presets["cpu"]["batch"]
    assert all(r["ms_per_step"] > 0 for r in presets.values())
    assert report["device"] == "cpu" and report["quick"] is True
