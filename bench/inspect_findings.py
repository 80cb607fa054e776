"""The README's reference findings of `rnnkit inspect` and `rnnkit viz` on trained models.

    python bench/inspect_findings.py --make-texts texts/
    python bench/inspect_findings.py stdlib=runs/stdlib:texts/stdlib-held-out.py \
        warpeace=runs/warpeace:texts/warpeace-held-out.txt --compare-on stdlib

For each NAME=MODEL:TEXT it runs, as a user would, `inspect cells`, `inspect saturation --plot`,
`inspect gradients --compare rnn,gru,lstm --plot`, `inspect errors` and `viz`, times each, and
takes a screenshot of the page in Debian's chromium (Playwright through `executable_path`; no
screenshot where either is missing). Pictures go to docs/images/NAME-*.png; the summary (best
cells per feature with their correlations, saturation per layer and gate, gradient norms at a
few distances, the error breakdown beside the n-gram, the timings) to
bench/results/inspect_findings.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inspect_speed import held_out_text  # bench/ is on the path of a script run from it

from rnnkit.benchmark import provenance
from rnnkit.inspect.viz import CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
WARPEACE = ROOT.parent / "shared" / "data" / "warpeace" / "input.txt"
TEXT_CHARS = 100_000
FEATURES = ("in_quotes", "column", "indent", "bracket_depth", "in_parens", "word_start")
DISTANCES = (1, 10, 25, 50, 100)


def rnnkit(*args: str) -> tuple[str, float]:
    """stdout of one `rnnkit` command (which must succeed) and its wall seconds."""
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rnnkit", *args], check=True, capture_output=True, text=True
    )
    return done.stdout, time.perf_counter() - start


def best_cells(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The first (best |corr|) cell of each feature of `inspect cells --json`."""
    best: dict[str, dict[str, Any]] = {}
    for row in report["cells"]:
        best.setdefault(row["feature"], row)
    return {feature: best[feature] for feature in FEATURES if feature in best}


def saturation_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per layer and gate: mean left/right-saturated fractions and the mostly-saturated units."""
    return [
        {
            "layer": layer["layer"],
            "gates": {
                gate: {key: value for key, value in numbers.items() if not isinstance(value, list)}
                for gate, numbers in layer["gates"].items()
            },
        }
        for layer in report["layers"]
    ]


def _norms_at(curve: dict[str, Any]) -> dict[str, float]:
    """The first layer's mean gradient norm at each of DISTANCES."""
    norms, distances = curve["layers"][0]["norms"], curve["distances"]
    return {str(d): norms[distances.index(d)] for d in DISTANCES if d in distances}


def gradient_summary(report: dict[str, Any]) -> dict[str, Any]:
    """Norms at a few distances: the model's, and each compared cell untrained and trained."""
    summary: dict[str, Any] = {"model": _norms_at(report["model"])}
    for stage, cells in report.get("compare", {}).items():
        if isinstance(cells, dict):
            summary[stage] = {
                cell: _norms_at(curve) for cell, curve in cells.items() if "layers" in curve
            }
    return summary


def screenshot(page: Path, picture: Path, feature: str) -> bool:
    """A picture of the page with the best cell for ``feature`` picked; False without a
    browser."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return False
    if not Path(chromium).exists():
        return False
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=list(CHROMIUM_ARGS))
        view = browser.new_page(viewport={"width": 1300, "height": 1000})
        view.route(
            "**/*", lambda r: r.continue_() if r.request.url.startswith("file:") else r.abort()
        )
        view.goto(page.as_uri())
        view.wait_for_selector("body[data-ready='1']", timeout=120_000)
        button = view.locator(f"#best .feature:has(h3:has-text('{feature}')) .best").first
        if button.count():
            button.click()
        view.hover("#text span[data-i='200']")
        view.screenshot(path=str(picture))
        browser.close()
    return True


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def findings(
    name: str, model: Path, text: Path, images: Path, feature: str, compare_steps: int
) -> dict[str, Any]:
    """Every inspection of one model on one text; pictures into ``images``. ``compare_steps``
    0 leaves out the rnn/gru/lstm comparison (the model's own curve only)."""
    seconds: dict[str, float] = {}
    out, seconds["cells"] = rnnkit("inspect", "cells", str(model), str(text), "--json")
    cells = json.loads(out)
    saturation_png = images / f"{name}-saturation.png"
    out, seconds["saturation"] = rnnkit(
        "inspect", "saturation", str(model), str(text), "--json", "--plot", str(saturation_png)
    )
    saturation = json.loads(out)
    gradients_png = images / f"{name}-gradients.png"
    compare = ["--compare", "rnn,gru,lstm", "--compare-steps", str(compare_steps)]
    out, seconds["gradients"] = rnnkit(
        *("inspect", "gradients", str(model), str(text), "--json", "--plot", str(gradients_png)),
        *(compare if compare_steps else []),
    )
    gradients = json.loads(out)
    out, seconds["errors"] = rnnkit("inspect", "errors", str(model), str(text), "--json")
    errors = json.loads(out)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        _, seconds["viz"] = rnnkit("viz", str(model), str(text), "--out", str(page))
        page_png = images / f"{name}-page.png"
        if not screenshot(page, page_png, feature):
            print(f"{name}: no screenshot (needs playwright and Debian's chromium)")
    return {
        "model": str(model),
        "text": str(text),
        "tokens": cells["tokens"],
        "best_cells": best_cells(cells),
        "probe_baselines": cells["probe_baselines"],
        "saturation": saturation_summary(saturation),
        "gradients": gradient_summary(gradients),
        "errors": {key: errors[key] for key in ("kinds", "total", "rnn_loss", "ngram_loss")},
        "seconds": {key: round(value, 1) for key, value in seconds.items()},
        "pictures": [_shown(p) for p in (saturation_png, gradients_png, page_png) if p.exists()],
    }


def make_texts(folder: Path) -> None:
    """The reference texts, held out from each model's training: 100,000 characters of stdlib
    modules the default corpus leaves out, and of War and Peace's validation part (its last
    10%, LF newlines as training read it) from the first paragraph after its first 5,000."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stdlib-held-out.py").write_text(held_out_text(TEXT_CHARS), encoding="utf-8")
    if WARPEACE.exists():
        text = WARPEACE.read_text(encoding="utf-8")  # text mode: universal newlines
        start = text.index("\n\n", int(len(text) * 0.9) + 5000) + 2
        chapter = text[start : start + TEXT_CHARS]
        (folder / "warpeace-held-out.txt").write_text(chapter, encoding="utf-8")
    print(f"wrote the reference texts to {folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="NAME=MODEL:TEXT")
    parser.add_argument("--make-texts", type=Path, metavar="DIR", help="write the texts, stop")
    parser.add_argument("--images", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/inspect_findings.json")
    parser.add_argument("--feature", default="in_quotes", help="the cell picked in screenshots")
    parser.add_argument(
        "--compare-on",
        nargs="*",
        default=None,
        metavar="NAME",
        help="runs that get the rnn/gru/lstm gradient comparison (default: all)",
    )
    parser.add_argument("--compare-steps", type=int, default=200, help="its training steps")
    args = parser.parse_args()
    if args.make_texts:
        make_texts(args.make_texts)
        return
    args.images.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"provenance": provenance(ROOT), "runs": {}}
    for run in args.runs:
        name, _, rest = run.partition("=")
        model, _, text = rest.partition(":")
        if not (name and model and text):
            parser.error(f"expected NAME=MODEL:TEXT, got {run!r}")
        steps = args.compare_steps if args.compare_on is None or name in args.compare_on else 0
        found = findings(name, Path(model), Path(text), args.images.resolve(), args.feature, steps)
        report["runs"][name] = found
        print(f"{name}: {json.dumps(found['best_cells'])}")
        print(f"  seconds {found['seconds']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
