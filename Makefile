# The two commands in README.md: `make demo` and `make test`. Both set up everything on first run.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint format bench factory example-data constraints clean

$(STAMP): pyproject.toml deploy/constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The images' pins hold here too: the suite runs on what the images install.
	$(BIN)/python -m pip install --quiet -c deploy/constraints.txt -e '.[train,demo,dev,parquet]'
	touch $(STAMP)

demo: $(STAMP)
	bash scripts/system-deps.sh
	OPENBLAS_NUM_THREADS=1 $(BIN)/iotad demo $(ARGS)

test: $(STAMP)
	bash scripts/system-deps.sh
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m pytest $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	bash scripts/system-deps.sh
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/train_speed.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/inference.py
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/throughput.py

# The factory benchmark (10-15 min on 2 cores): `make factory ARGS="--forecaster naive"`.
factory: $(STAMP)
	OPENBLAS_NUM_THREADS=1 $(BIN)/python bench/factory.py $(ARGS)

example-data: $(STAMP)
	$(BIN)/python examples/generate.py

# The images' pins (deploy/constraints.txt) from the versions installed in .venv: run after
# changing pyproject's dependencies or upgrading .venv, then `make test`.
constraints: $(STAMP)
	$(BIN)/python deploy/constraints.py write

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
