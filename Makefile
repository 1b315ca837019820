# Everything a fresh machine needs: `make demo` and `make test` create the environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# glibc handing freed tensor memory back to the OS after every step halves CPU training speed.
export MALLOC_MMAP_THRESHOLD_ := 1000000000
export MALLOC_TRIM_THRESHOLD_ := 1000000000

.PHONY: install demo test lint bench bench-gpu results drums clean

# --no-cache-dir: the PyPI torch wheel is a CUDA build of several GB; caching it would need that much disk again.
# constraints.txt: the exact torch and torchaudio pair the project is developed and measured with.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-cache-dir -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ser_ssl.demo

# The suite in parallel processes, one per core up to four (pytest-xdist), a test file to a process
# so that its fixtures are made once: 1.5x faster on 2 cores.
test: $(STAMP)
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# On a GPU machine: data path and step per encoder, GPU memory, the GPU preset's pretraining (minutes).
bench-gpu: $(STAMP)
	$(BIN)/python -m benchmarks.gpu

# The results table of docs/results.md: every row for every seed; finished
# runs are kept, so a second call only runs what is missing. MANIFEST=path/to/manifest.csv runs it on
# other data, ROWS="logmel ssl" runs some rows (python -m ser_ssl.results --help lists them).
DRUMS := data/real/drums/manifest.csv
MANIFEST ?= $(DRUMS)
SEEDS ?= 0 1 2

results: $(STAMP) $(MANIFEST)
	$(BIN)/python -m ser_ssl.results --manifest $(MANIFEST) --seeds $(SEEDS) $(if $(ROWS),--rows $(ROWS))

# The drums set: one-shots of the drum kits and sample packs that Debian packages ship; --install
# installs the missing packages with apt-get (as root, about 400 MB). python -m ser_ssl.data.drums --help
drums: $(DRUMS)

$(DRUMS): $(STAMP)
	$(BIN)/python -m ser_ssl.data.drums --install --out data/real

lint: $(STAMP)
	$(BIN)/ruff check ser_ssl tests benchmarks
	$(BIN)/ruff format --check ser_ssl tests benchmarks

clean:
	rm -rf runs cache data lightning_logs
