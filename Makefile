# The README's two commands: `make demo` and `make test`. `make install` is the set-up.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo sanity sanity-data serve test lint clean

install: $(STAMP)

# torch first, from the pinned CPU wheel, so nothing below pulls CUDA packages.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,hf]'
	touch $(STAMP)

demo: install
	$(PY) -m audiointerp demo

# After `make demo`: the sanity check's slower tier (full-budget retraining, ~30 min).
sanity: install
	$(PY) -m audiointerp sanity

# After `make sanity`: data randomisation (a classifier trained on shuffled labels).
sanity-data: install
	$(PY) -m audiointerp sanity --data_randomization

# After `make demo`: the page on the demo's three interpreters, its mixtures and report.
DEMO ?= runs/demo
serve: install
	$(PY) -m audiointerp serve $(DEMO)/lmac/model $(DEMO)/piq/model $(DEMO)/l2i/model \
		--examples $(DEMO)/mixtures/mixtures --report $(DEMO)/evaluation/report

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests recipes benchmarks
	$(VENV)/bin/ruff format --check src tests recipes benchmarks

clean:
	rm -rf $(VENV) runs
