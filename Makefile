# Two commands on a fresh machine: `make demo` and `make test` (both install first).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHORTLIST = $(BIN)/shortlist --workspace $(WORKSPACE)
DEMO_DATA ?= data/demo
WORKSPACE ?= workspace

.PHONY: install demo test bench bench-serve lint clean

install: $(VENV)/.installed

# torch is pinned: a looser spec pulls a multi-GB CUDA build instead of the local CPU wheel.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,spark]'
	touch $@

demo: install
	$(SHORTLIST) generate --scale small --seed 0 --out $(DEMO_DATA)
	$(SHORTLIST) build --source $(DEMO_DATA) --format hm
	$(SHORTLIST) recommend --user $$(tail -1 $(DEMO_DATA)/transactions_train.csv | cut -d, -f2) \
		--explain --trace
	$(SHORTLIST) similar --item $$(sed -n 2p $(DEMO_DATA)/articles.csv | cut -d, -f1) --k 5 \
		--filter '{"product_group_name": {"in": ["Garment Upper body", "Garment Lower body"]}}'
	$(SHORTLIST) predict --out $(WORKSPACE)/predictions.csv
	$(SHORTLIST) evaluate --windows 1 --json $(WORKSPACE)/evaluation.json \
		--methods popular,repurchase_trending,als,pipeline,pipeline_no_ranker
	@echo
	@echo "Generated data:  $(DEMO_DATA)/ (the three H&M files, plus stock, regions, age limits)"
	@echo "Offline store:   $(WORKSPACE)/offline/ (items, users, interactions by month, manifest.json)"
	@echo "Features:        $(WORKSPACE)/features/ (items, users, user_category, user_items as of the pipeline's cutoff; versioned)"
	@echo "Online store:    $(WORKSPACE)/online/ (LMDB: the users' features each request reads)"
	@echo "Models:          $(WORKSPACE)/models/pipeline.json (what ties them), models/two_tower/, models/ranker/, models/state/, index/items/"
	@echo "Predictions:     $(WORKSPACE)/predictions.csv (every customer, H&M submission layout)"
	@echo "Evaluation:      $(WORKSPACE)/evaluation.json (the table above, as JSON)"
	@echo "Look closer:     $(SHORTLIST) recommend --user ID --explain --trace [--filter JSON] [--cart A,B]"
	@echo "                 $(SHORTLIST) evaluate --windows 4 --candidates --methods popular,two_tower,pipeline_ablations"
	@echo "                 $(SHORTLIST) similar --item ID --filter '{\"price\": {\"lte\": 0.02}}'"
	@echo "Web page:        $(SHORTLIST) serve, then open http://127.0.0.1:8000/ (the report: /report)"

test: install
	$(BIN)/lint-imports
	@# the web page's browser tests drive Debian's chromium: installed when missing (as root)
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
		{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		  DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		    chromium >/dev/null; } || \
		echo "chromium not found: the web page's browser tests will skip (apt-get install chromium)"
	$(BIN)/pytest -q

bench: install
	$(BIN)/python benchmarks/run.py

# The service under load (wrk, Debian package) on the workspace `make bench` built at BENCH_SCALE.
BENCH_SCALE ?= full
bench-serve: install
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
	$(BIN)/python benchmarks/bench_serve.py --workspace benchmarks/.data/ws_$(BENCH_SCALE) \
		--name $(BENCH_SCALE)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(WORKSPACE) $(DEMO_DATA)
