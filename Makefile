# `make demo`: set up .venv and run the main job. `make test`: set up .venv and run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The shared copy of the datasets beside a checkout, where there is one; else $SWEEPLAB_DATA as set.
SHARED := $(abspath $(wildcard ../shared/data))
export SWEEPLAB_DATA ?= $(SHARED)

.PHONY: setup test demo picture lint clean chromium

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0  # pinned: the CPU wheel here, never the CUDA one
	$(BIN)/pip install -q -e '.[test]'
	touch $@

test: $(STAMP) chromium
	$(BIN)/python -m pytest

# The report's browser test opens the HTML in real headless Chromium (Debian's package).
chromium:
	@command -v chromium >/dev/null || ([ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) \
		|| echo "chromium not installed: the browser test will skip"

demo: $(STAMP)
	$(BIN)/python -m sweeplab.demo

# docs/report.png, the README's picture: today's report of the runs `make demo` stored, as a 1,400 px wide
# browser window shows its top (headless Chromium).
picture: $(STAMP)
	$(BIN)/python -m sweeplab report $(sort $(wildcard experiments/*.yaml)) --out reports/quick
	chromium --headless --no-sandbox --hide-scrollbars --force-device-scale-factor=1 --window-size=1400,2400 \
		--screenshot=$(abspath docs/report.png) file://$(abspath reports/quick/index.html)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples

clean:
	rm -rf $(VENV) runs reports
