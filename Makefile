# The two commands of the README: `make demo` (train + sample on MNIST-5k) and `make test`.
# Both create .venv and install what they need on a fresh machine: `make demo` the package alone (training,
# sampling, editing, explain pictures); `make test` (and `make install`, lint, docs) the package with every
# optional extra - eval, text, video, bench, tensorboard, onnx, studio, volumes, signals, hdf5: `pip install -e '.[dev,all]'` - and Debian's
# chromium for the studio's browser test (scripts/install_debian_browser.sh), so no test is skipped for a missing
# extra.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
HASH   := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
STAMP  := $(VENV)/.installed-base-$(HASH)
STAMP_ALL := $(VENV)/.installed-all-$(HASH)

.PHONY: demo test install lint bench docs docs-kinds docs-explain docs-samplers docs-guidance docs-checks docs-speed docs-course docs-provenance docs-studio data clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -e .
	@sh scripts/install_debian_data.sh
	@rm -f $(VENV)/.installed-base-* && touch $@

$(STAMP_ALL): $(STAMP)
	$(PY) -m pip install -q --no-compile --disable-pip-version-check -e '.[dev,all]'
	@sh scripts/install_debian_browser.sh
	@rm -f $(VENV)/.installed-all-* && touch $@

install: $(STAMP_ALL)

demo: $(STAMP)
	$(PY) -m torchdiffusion demo --out runs/demo

# The suite runs on one pytest-xdist worker per core (at most 4), each with one intra-op thread (tests/conftest.py);
# `$(PY) -m pytest` alone runs it in one process with two threads.
test: $(STAMP_ALL)
	$(PY) -m pytest -n auto --maxprocesses 4

lint: $(STAMP_ALL)
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

bench: $(STAMP_ALL)
	$(PY) scripts/bench_demo.py

# `make docs` regenerates every figure and table of the docs from the scripts that make them, training the runs
# they need when missing (hours on a 2-core CPU: the sampler benchmark and the emoji models dominate; never run by
# the tests). Each part is a target of its own. Figure or table -> what makes it:
#   docs/images/demo.png                                 make demo (runs/demo/samples/demo.png)
#   docs/images/explain-*.png, explain-trajectory.gif,   scripts/explain_figures.py (torchdiffusion explain on
#     docs/how-diffusion-works.md, docs/benchmarks/explain-timings.txt       runs/demo and runs/toy)
#   docs/images/samplers-*.png, docs/benchmarks/samplers/*/  scripts/bench_samplers.sh (docs/samplers.md tables)
#   docs/benchmarks/samplers/kdiffusion-agreement.md, langevin-defaults.md, sw-floor.md   scripts/kdiffusion_reference.py
#     --compare, scripts/langevin_defaults.py, scripts/sw_floor.py (docs/samplers.md)
#   docs/images/guidance-sweep-mnist.png, guidance-grid-mnist.png, mnist-class-samples.png, MNIST tables of
#     docs/guidance.md                                   scripts/mnist_guidance_check.py (trains runs/mnist-class)
#   docs/images/emoji-*.png, emoji tables of docs/guidance.md   scripts/emoji_guidance_check.py (trains runs/emoji-*)
#   tables of docs/editing.md                            scripts/editing_check.py, scripts/oracle_inpaint.py
#   tables of docs/evaluation.md, README's digit check   scripts/eval_known_answers.py, scripts/digit_check.py
#   docs/benchmarks/demo-speed.json (README)             scripts/bench_demo.py
#   docs/benchmarks/train-speed*.json (docs/bench-train.md)  torchdiffusion bench-train
#   docs/benchmarks/train-speed-*/ (one CPU family each; docs/bench-train.md)   torchdiffusion bench-train --out,
#     scripts/profile_train_step.py (where a step's time goes), scripts/bench_demo.py --out
#   docs/images/course-*, docs/benchmarks/course-figures.json   scripts/course_figures.py (docs/course.md's commands)
#   docs/benchmarks/reproduce-check.md, docs/cards/ (docs/provenance.md)   scripts/reproduce_check.py, torchdiffusion card
#   docs/images/studio-*.png, docs/benchmarks/studio-overhead.json   tests/test_studio_browser.py with
#     TORCHDIFFUSION_SCREENSHOTS, scripts/studio_bench.py (docs/studio.md; its load and stop figures: the same script)
#   docs/benchmarks/kinds/, table-*.png and the tables of docs/tables.md, sequences.md, volumes.md
#                                                        scripts/kinds_figures.sh (its sequence and volume scripts)
#   docs/benchmarks/kinds/numeric-table/ (docs/tables.md, Few steps)   scripts/numeric_table_distill.sh
# The tables in the .md pages quote these outputs (docs/benchmarks/, the run folders).
TD := $(PY) -m torchdiffusion

runs/demo/run.json: $(STAMP)
	$(TD) demo --out runs/demo

runs/toy/run.json: $(STAMP_ALL)
	$(TD) train --preset toy-2d --out runs/toy

docs: docs-explain docs-samplers docs-guidance docs-checks docs-speed docs-course docs-provenance docs-studio docs-autoencoder docs-kinds

docs-kinds: $(STAMP_ALL)
	PATH="$(VENV)/bin:$$PATH" bash scripts/kinds_figures.sh
	PATH="$(VENV)/bin:$$PATH" bash scripts/numeric_table_distill.sh > docs/benchmarks/kinds/numeric-table/summary.md

docs-autoencoder: $(STAMP_ALL)
	PATH="$(VENV)/bin:$$PATH" bash scripts/autoencoder_figures.sh

docs-provenance: runs/demo/run.json
	$(PY) scripts/reproduce_check.py runs/demo --out docs/benchmarks/reproduce-check.md
	$(TD) card runs/demo --evaluate --n 1000 --out docs/cards/demo/MODEL_CARD.md
	$(TD) card --data emoji --out docs/cards/DATA_CARD-emoji.md
	$(TD) card --data sprites --out docs/cards/DATA_CARD-sprites.md

docs-studio: runs/demo/run.json
	TORCHDIFFUSION_SCREENSHOTS=docs/images TORCHDIFFUSION_STUDIO_RUN=runs/demo $(PY) -m pytest tests/test_studio_browser.py
	OMP_NUM_THREADS=1 $(PY) scripts/studio_bench.py overhead runs/demo --reps 7 --out docs/benchmarks/studio-overhead.json

docs-course: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) scripts/course_figures.py

docs-explain: runs/demo/run.json runs/toy/run.json
	cp runs/demo/samples/demo.png docs/images/demo.png
	OMP_NUM_THREADS=1 $(PY) scripts/explain_figures.py --run runs/demo --toy-run runs/toy

docs-samplers: runs/demo/run.json runs/toy/run.json
	TD="$(TD)" sh scripts/bench_samplers.sh
	$(PY) scripts/kdiffusion_reference.py --compare > docs/benchmarks/samplers/kdiffusion-agreement.md
	$(PY) scripts/langevin_defaults.py > docs/benchmarks/samplers/langevin-defaults.md
	$(PY) scripts/sw_floor.py > docs/benchmarks/samplers/sw-floor.md

docs-guidance: $(STAMP_ALL)
	$(PY) scripts/mnist_guidance_check.py --out runs/mnist-class --threads 1
	$(PY) scripts/emoji_guidance_check.py context --out runs/emoji-context --scales 0,1,3,5,7,9 --per-class 100 \
	    --grid-guidance 7 --threads 1
	$(PY) scripts/emoji_guidance_check.py text --out runs/emoji-text --scales 0,1,3,5 --threads 1
	$(PY) scripts/emoji_guidance_check.py text --out runs/emoji-text --skip-train --scales 0,1,3,5 --threads 1 \
	    --prompts "a shiny red apple,ripe yellow fruit,pine tree in winter,spooky halloween spirit,spaceship launch" \
	    --grid-name emoji-text-paraphrase-grid.png --json guidance-check-paraphrase.json

docs-checks: runs/demo/run.json
	$(PY) scripts/digit_check.py runs/demo; test $$? -le 1   # exit 1 = the check failed; the report is written
	cp runs/demo/digit-check.json docs/benchmarks/digit-check.json
	$(PY) scripts/editing_check.py runs/demo --threads 1
	cp runs/demo/edits/editing-check.json docs/benchmarks/editing-check.json
	$(PY) scripts/oracle_inpaint.py > docs/benchmarks/oracle-inpaint.txt
	$(PY) scripts/eval_known_answers.py > docs/benchmarks/eval-known-answers.txt

docs-speed: $(STAMP_ALL)
	$(PY) scripts/bench_demo.py --out docs/benchmarks/demo-speed.json
	$(TD) bench-train --threads 2 --out docs/benchmarks/train-speed.json
	$(TD) bench-train --threads 2 --compile --out docs/benchmarks/train-speed-compile.json

clean:
	rm -rf $(VENV) runs
