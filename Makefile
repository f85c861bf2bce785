# Developer entry points. `make test` runs every test; `make bench` runs the benchmark standalone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv inference test lint typecheck unit fast bench demo sandbox controlplane generate verify verify-generated clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# Optional: torch + transformers, so the transformers backend's tests run too (about 5 GB).
inference: $(STAMP)
	$(PY) -m pip install --quiet -e '.[test,inference]'

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The control-plane binaries (built from Go modules on first use, ~11 min cold; cached after).
controlplane:
	bash hack/build-control-plane.sh >/dev/null

# The kstatus probe for tests (hack/kstatus, sigs.k8s.io/cli-utils; ~1 min cold, cached after).
# tests/kstatus.py builds it on demand; this target only warms the cache.
.PHONY: kstatus
kstatus:
	bash hack/build-kstatus.sh >/dev/null

unit: $(STAMP)
	MODELGRID_K8S_BIN="$$(bash hack/build-control-plane.sh | tail -n 1)" $(PY) -m pytest

# The main job: the sandbox, the operator, the example qualification and its verdict.
demo: $(STAMP)
	MODELGRID_K8S_BIN="$$(bash hack/build-control-plane.sh | tail -n 1)" $(PY) -m modelgrid_sandbox --demo

# A local cluster with simulated GPU nodes and the operator, until Ctrl-C.
sandbox: $(STAMP)
	MODELGRID_K8S_BIN="$$(bash hack/build-control-plane.sh | tail -n 1)" $(PY) -m modelgrid_sandbox

test: lint typecheck unit

# The benchmark standalone, on a machine without a GPU: synthetic inference, replayed power.
bench: $(STAMP)
	$(PY) -m modelgrid_bench run --backend synthetic --power-source replay:builtin:h200-decode \
	  --samples 20 --tokens 128 --repeats 3 --idle-baseline-s 2

# Regenerate everything derived from crds/ (the chart's CRD and policy templates, the operator's
# packaged policies); tests/unit/test_chart.py and test_verdict_cli.py fail when they drift.
generate: $(STAMP)
	$(PY) -m modelgrid_sandbox.chart
	cp crds/tierpolicies/*.yaml operator/modelgrid_operator/data/tierpolicies/

# What `generate` writes (hack/modelgrid_sandbox/chart.py's CRD_COPIES and POLICY_COPIES, the cp).
GENERATED := charts/modelgrid-operator/templates/crds charts/modelgrid-operator/templates/tierpolicies \
	operator/modelgrid_operator/data/tierpolicies

# Regenerate into the tree and fail, naming the files, where that changed what git has (committed,
# or staged under pre-commit) or added a file git does not track: crds/ changed without `generate`.
verify-generated: generate
	@stale="$$( { git diff --name-only -- $(GENERATED); \
	  git ls-files --others --exclude-standard -- $(GENERATED); } | sort -u)"; \
	if [ -n "$$stale" ]; then \
	  echo "make verify-generated: these files derived from crds/ were not up to date" \
	    "(now regenerated: review and commit them):"; \
	  echo "$$stale" | sed 's/^/  /'; \
	  exit 1; \
	fi

# The quick checks before a commit (.pre-commit-config.yaml runs the same): the files derived from
# crds/, lint and import layers, and the operator's models against the CRD schemas.
verify: verify-generated lint
	$(PY) -m pytest tests/unit/test_api_drift.py -q

# The fast unit tier alone: no Go, no control plane (tests/unit; helm-based checks skip).
fast: $(STAMP)
	$(PY) -m pytest tests/unit -m "not go"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis modelgrid-results
