.PHONY: prepare demo test bench

prepare:
	bash prepare.sh

demo: prepare
	.venv/bin/captionlab demo

test: prepare
	.venv/bin/python -m pytest -q

bench: prepare
	.venv/bin/python benchmarks/decoding_speed.py
