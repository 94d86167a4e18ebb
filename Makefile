# Two commands on a fresh machine: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DATA ?= data/demo
WORKSPACE ?= workspace

.PHONY: install demo test bench lint clean

install: $(VENV)/.installed

# torch is pinned: a looser spec pulls a multi-GB CUDA build instead of the local CPU wheel.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,spark]'
	touch $@

demo: install
	$(BIN)/shortlist generate --scale small --seed 0 --out $(DEMO_DATA)
	$(BIN)/shortlist --workspace $(WORKSPACE) ingest --source $(DEMO_DATA) --format hm
	@echo
	@echo "Generated data:  $(DEMO_DATA)/ (articles.csv, customers.csv, transactions_train.csv)"
	@echo "Offline store:   $(WORKSPACE)/offline/ (items, users, interactions by month, manifest.json)"
	@echo "Look closer:     $(BIN)/shortlist --workspace $(WORKSPACE) info"

test: install
	$(BIN)/pytest -q

bench: install
	$(BIN)/python benchmarks/run.py

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(WORKSPACE) $(DEMO_DATA)
