# ml_bridge: `make demo`, `make test`. Each runs the set-up it needs first (tools/setup.sh).
SHELL := /bin/bash
ENV := source build/env.sh &&
BACKEND ?= torch

.PHONY: setup demo demo-vision test lint unit rostest doctor bench profile clean

setup:
	@tools/setup.sh

demo: setup
	@$(ENV) python scripts/demo --backend $(BACKEND)

demo-vision: setup
	@$(ENV) python -m ml_bridge.ros.demo_vision --backend $(BACKEND)

test: setup
	@$(ENV) tools/test.sh

lint: setup
	@$(ENV) ruff check . && mypy

unit: setup
	@$(ENV) python -m pytest test/unit -q

rostest: setup
	@$(ENV) python -m pytest test/test_rostest.py -q

doctor: setup
	@$(ENV) rosrun ml_bridge doctor

bench: setup
	@$(ENV) python bench/run.py

profile: setup
	@$(ENV) python -m bench.hot_path
	@$(ENV) python -m bench.profile_predict --backend $(or $(BACKEND),torch)

clean:
	@tools/setup.sh --clean
	rm -rf build .venv .mypy_cache .ruff_cache .pytest_cache
