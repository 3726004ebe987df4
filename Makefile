# Two commands set up a fresh machine (see README.md):
#   make lab    build .venv from the pinned versions and open the course in JupyterLab
#   make test   build .venv if missing and run every test, notebooks included
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.phi4lab-installed
# Offline by design: the course never talks to the model hub.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: lab test unit quick lint pair notebooks notebooks-portable student kernel doctor clean

# nbval runs each notebook cell as a test. A cell may take this long (the slowest, notebook 08's two
# fine-tunes, takes about 70 s on an idle 2-core machine): a busy machine must not fail the suite.
NBVAL := --nbval --sanitize-with course/nbval_sanitize.cfg --nbval-cell-timeout=1800
# Lab machines differ in their vector instructions. PyTorch picks its kernels by CPU, in three places:
# its own ATen kernels (ATEN_CPU_CAPABILITY), MKL's matrix products (MKL_ENABLE_INSTRUCTIONS) and
# oneDNN's (ONEDNN_MAX_CPU_ISA). Capping all three, and OMP_NUM_THREADS, lets one machine check that
# what nbval compares does not depend on them: default = no AVX (SSE4.2), avx2, avx512. These
# notebooks sum many floats.
CAPABILITY ?= default
THREADS ?= 2
MKL_ISA_default := SSE4_2
MKL_ISA_avx2 := AVX2
MKL_ISA_avx512 := AVX512
DNNL_ISA_default := SSE41
DNNL_ISA_avx2 := AVX2
DNNL_ISA_avx512 := AVX512_CORE
PORTABLE_NOTEBOOKS ?= course/01_architecture.ipynb course/06_causal_interventions.ipynb \
                      course/07_mixed_precision.ipynb course/08_finetuning.ipynb course/10_circuits.ipynb \
                      course/11_sparse_autoencoders.ipynb course/12_attribution_graphs.ipynb course/13_evaluation.ipynb

$(STAMP): constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[lab,test]"
	touch $(STAMP)

kernel: $(STAMP)
	$(BIN)/python -m ipykernel install --user --name phi4lab --display-name "Python 3 (phi4lab)" >/dev/null

# Lab machines often run as root, which JupyterLab refuses unless told.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP) kernel
	$(BIN)/jupyter lab --notebook-dir=course $(ROOT_FLAG)

test: $(STAMP)
	$(BIN)/python -m pytest tests course $(NBVAL) -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest tests

# The edit-test loop: no notebooks, nothing marked slow or browser.
quick: $(STAMP)
	$(BIN)/python -m pytest tests -m "not slow and not browser" -q -p no:cacheprovider

# The lint gate (rules and their reasons: pyproject.toml, [tool.ruff]); CI runs it.
lint: $(STAMP)
	$(BIN)/ruff check phi4lab tests benchmarks conftest.py site hub

# Each notebook's py:percent twin in course/py/ (see course/jupytext.toml), for review. --sync takes the
# cells from whichever of the pair was saved last and the outputs from the notebook;
# tests/test_notebooks_reviewable.py fails when a twin is out of step.
pair: $(STAMP)
	$(BIN)/jupytext --quiet --sync course/[0-9][0-9]_*.ipynb

notebooks: $(STAMP)
	$(BIN)/python -m pytest course $(NBVAL)

# e.g. make notebooks-portable CAPABILITY=avx2 THREADS=1 PORTABLE_NOTEBOOKS=course
notebooks-portable: $(STAMP)
	@test -n "$(MKL_ISA_$(CAPABILITY))" || { echo "CAPABILITY must be default, avx2 or avx512"; exit 2; }
	ATEN_CPU_CAPABILITY=$(CAPABILITY) MKL_ENABLE_INSTRUCTIONS=$(MKL_ISA_$(CAPABILITY)) \
	    ONEDNN_MAX_CPU_ISA=$(DNNL_ISA_$(CAPABILITY)) OMP_NUM_THREADS=$(THREADS) \
	    $(BIN)/python -m pytest $(PORTABLE_NOTEBOOKS) $(NBVAL) -p no:cacheprovider

student: $(STAMP)
	$(BIN)/phi4lab student --course course --out build/student

# An nbgrader course in build/nbgrader/, one assignment per notebook, graded by phi4lab's checks in phi4lab's
# kernel (README, "Grading a term with nbgrader"; tests/test_assignments.py runs the whole loop).
.PHONY: assignments
assignments: $(STAMP) kernel
	$(BIN)/phi4lab assignments --course course --out build/nbgrader

doctor: $(STAMP)
	$(BIN)/phi4lab doctor

clean:
	rm -rf $(VENV) build .pytest_cache

# A class on this machine: JupyterHub, one JupyterLab per student, each on their own copy of the course
# (hub/jupyterhub_config.py; README, "Running a class on JupyterHub"). By default students log in with their Unix
# accounts, so run it as root; a local demo needs no accounts:
#   PHI4LAB_HUB_AUTHENTICATOR=dummy PHI4LAB_HUB_SPAWNER=simple make hub     (then http://127.0.0.1:8000)
.PHONY: hub
hub: $(STAMP) hub/node_modules/.bin/configurable-http-proxy
	$(BIN)/jupyterhub -f hub/jupyterhub_config.py

# JupyterHub's proxy is a Node package, pinned with its dependencies in hub/package-lock.json.
hub/node_modules/.bin/configurable-http-proxy: hub/package.json hub/package-lock.json
	npm ci --prefix hub --no-audit --no-fund
	touch $@

# The course website in build/site/ (site/build.py; README, "The course website"): every notebook with its stored
# outputs (none is executed), the course map, the attention views and explorers, offline search; no CDN.
.PHONY: site
site: $(STAMP) site/node_modules/mathjax/package.json
	$(BIN)/python site/build.py --out build/site

# MathJax, for the notebooks' formulas, is a Node package pinned in site/package-lock.json.
site/node_modules/mathjax/package.json: site/package.json site/package-lock.json
	npm ci --prefix site --no-audit --no-fund
	touch $@
