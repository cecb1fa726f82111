# The two commands of the contract: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
# torch/torchvision are installed first with a pair known to work together on CPU and CUDA;
# pyproject itself does not pin a build.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv run report test test-slurm tables lint clean slurm-profile

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e '.[metrics,workflow,test]'
	touch $@

venv: $(BIN)/.installed

run: venv
	$(BIN)/snakemake --cores $(CORES) --profile profiles/local
	$(MAKE) --no-print-directory report

# The HTML report of the last run (self-contained: open it in a browser): every output marked
# report(...) in workflow/rules/, with its caption from workflow/report/, and each job's runtime.
report: venv
	$(BIN)/snakemake --profile profiles/local --report results/report.html

tables: venv
	$(BIN)/snakemake --cores $(CORES) --profile profiles/local tables

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/snakemake --lint

clean:
	rm -rf results .snakemake

# One-time step for `snakemake --profile slurm`: link profiles/slurm into Snakemake's per-user
# profile directory ($${XDG_CONFIG_HOME:-~/.config}/snakemake/slurm). A link, so edits to
# profiles/slurm apply at once; an existing profile of that name that is not this link is kept.
PROFILE_DIR = $(or $(XDG_CONFIG_HOME),$(HOME)/.config)/snakemake
slurm-profile:
	@mkdir -p $(PROFILE_DIR)
	@if [ -e $(PROFILE_DIR)/slurm ] && [ "$$(readlink -f $(PROFILE_DIR)/slurm)" != "$(abspath profiles/slurm)" ]; then \
	  echo "$(PROFILE_DIR)/slurm exists and is not a link to profiles/slurm: move it away first" >&2; exit 1; fi
	ln -sfn $(abspath profiles/slurm) $(PROFILE_DIR)/slurm
	@echo "installed: snakemake --profile slurm now uses $(abspath profiles/slurm)"

# profiles/slurm against a real one-node Slurm cluster started on this machine (root; installs
# Debian's slurm + munge if missing; stops every daemon it started). See tests/slurm/run.sh.
test-slurm: venv
	BIN=$(abspath $(BIN)) tests/slurm/run.sh
