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
	$(BIN)/ruff check phi4lab tests benchmarks conftest.py

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

doctor: $(STAMP)
	$(BIN)/phi4lab doctor

clean:
	rm -rf $(VENV) build .pytest_cache
