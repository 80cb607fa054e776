# Every target sets up .venv first: pinned CPU torch, then the package with its test extras.
PY      := .venv/bin/python
STAMP   := .venv/.rnnkit-installed
TORCH   := torch==2.13.0
export OMP_NUM_THREADS ?= 2

.PHONY: setup demo test test-all test-gpu bench lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	@$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH) 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
	@$(PY) -c "import torch, rnnkit; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	@# The browser tests of `rnnkit viz` drive Debian's chromium (never `playwright install`):
	@# installed here when missing, if we are root and have apt; otherwise those tests skip.
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		>/dev/null 2>&1; } || echo "note: no chromium here; the browser tests of rnnkit viz will skip"
	@# Batch-1 sampling of LSTM models compiles its C kernel on first use (rnnkit/native.py);
	@# without a C compiler it steps through torch, slower. Installed here when missing, as above.
	@command -v cc >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
		&& (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev) \
		>/dev/null 2>&1; } || echo "note: no C compiler here; sampling will step through torch"
	@touch $(STAMP)

demo: setup
	$(PY) -m rnnkit train --out runs/demo --max-time 180 --force
	$(PY) -m rnnkit sample runs/demo --length 600 --temperature 0.8 --prime "def "

test: setup
	$(PY) -m pytest

test-all: setup
	$(PY) -m pytest -m ''

# The tests marked gpu (CUDA against CPU, cuDNN's flat weights); they skip where CUDA is absent.
test-gpu: setup
	@$(PY) -c "import torch; torch.cuda.is_available() or print('note: no CUDA here; the gpu tests will skip')"
	$(PY) -m pytest -m gpu

bench: setup
	$(PY) bench/run_all.py

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

clean:
	rm -rf .venv runs .pytest_cache .ruff_cache build src/*.egg-info
