# The two commands a user needs: `make run` (the pipeline, then `make promote`: the person running it
# accepts its proposals) and `make test` (the test suite).
# Both create .venv and install the pinned requirements when missing or changed.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-requirements
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install run promote retrain test test-slow

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	cp requirements.txt $(STAMP)

install: $(STAMP)

run: $(STAMP)
ifdef PRESET
	$(BIN)/python -m stages.preset $(PRESET)
endif
	$(BIN)/dvc repro
	$(BIN)/python -m pipeline.promote

# accept the change in this checkout: champion moves to the versions provenance/ names, where the gate agrees
promote: $(STAMP)
	$(BIN)/python -m pipeline.promote

# what the scheduled job runs: new data in, dvc pull, dvc repro (proposals only), dvc push, reports/review.md
retrain: $(STAMP)
	$(BIN)/python -m pipeline.retrain

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadfile

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow
