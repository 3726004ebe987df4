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

.PHONY: lab test unit notebooks student kernel doctor clean

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
	$(BIN)/python -m pytest tests course --nbval --sanitize-with course/nbval_sanitize.cfg -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/python -m pytest tests

notebooks: $(STAMP)
	$(BIN)/python -m pytest course --nbval --sanitize-with course/nbval_sanitize.cfg

student: $(STAMP)
	$(BIN)/phi4lab student --course course --out build/student

doctor: $(STAMP)
	$(BIN)/phi4lab doctor

clean:
	rm -rf $(VENV) build .pytest_cache
