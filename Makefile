.PHONY: prepare demo test lint bench

prepare:
	bash prepare.sh

demo: prepare
	.venv/bin/captionlab demo

test: prepare
	.venv/bin/python -m pytest -q -rs --durations=15 -n 2 --dist loadgroup  # -rs: every skip says why; -n 2: two workers (pytest-xdist); loadgroup: a test's xdist_group runs on one worker

lint: prepare
	.venv/bin/ruff check code tests benchmarks
	.venv/bin/ruff format --check code tests benchmarks
	.venv/bin/lint-imports  # the layers contract of pyproject.toml [tool.importlinter]: no import up a layer

bench: prepare
	.venv/bin/python benchmarks/decoding_speed.py
