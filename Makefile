# kubectl-gitops: set-up, tests, local cluster and demo.
# Build caches live outside the checkout (~/.cache/kubectl-gitops) and are
# recreated when missing.

VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install venv controlplane test unit cluster cluster-down demo bench clean

install: venv controlplane

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# Builds kube-apiserver, kube-controller-manager and etcd from Go modules
# (first time only; reused from ~/.cache/kubectl-gitops afterwards).
controlplane:
	tools/build-controlplane.sh

test: venv controlplane
	$(PY) -m pytest -q

unit: venv
	$(PY) -m pytest -q -m "not cluster"

cluster: venv controlplane
	@$(PY) -m kubectl_gitops.controlplane up

cluster-down: venv
	@$(PY) -m kubectl_gitops.controlplane down

demo: venv controlplane
	$(PY) examples/demo.py

bench: venv controlplane
	$(PY) bench/read_tree.py
	$(PY) bench/validate.py
	$(PY) bench/diff.py
	$(PY) bench/sync.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
