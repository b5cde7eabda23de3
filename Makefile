# edgeinfer: build, test and benchmark entry points.
#
# On a fresh machine two commands are enough:
#   make run    builds everything and runs the daemon on the demo config
#   make test   installs what the tests need and runs them all
#
# Python (the venv in .venv) builds the model zoo and the golden outputs; the
# runtime is Go. cgo finds TensorFlow through build/pkgconfig/tensorflow.pc,
# written from the venv by `make deps`; every Go command below sees it through
# PKG_CONFIG_PATH. Outside make: export PKG_CONFIG_PATH=$(pwd)/build/pkgconfig
# (or point it at a device's own tensorflow.pc).

SHELL := /bin/bash
.DEFAULT_GOAL := build

VENV   := .venv
PY     := $(VENV)/bin/python
PC     := build/pkgconfig/tensorflow.pc
MODELS ?= models
BIN    := bin

export PKG_CONFIG_PATH := $(CURDIR)/build/pkgconfig$(if $(PKG_CONFIG_PATH),:$(PKG_CONFIG_PATH))
export CGO_ENABLED := 1
# TensorFlow's C++ logging: errors only, so test and benchmark output stays readable.
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: build deps models models-full test test-go test-py bench bench-tf run clean

## deps: the venv with pinned Python packages and the TensorFlow pkg-config file (idempotent).
deps: $(PC)

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(PC): $(VENV)/.installed scripts/tensorflow-pc.sh
	scripts/tensorflow-pc.sh $(PY) $@

## build: every Go binary.
build: deps
	go build ./...

## models: the tiny zoo exported into $(MODELS)/ with golden files (what the tests use).
models: $(MODELS)/.tiny

$(MODELS)/.tiny: $(VENV)/.installed $(wildcard tfmodels/zoo/*.py)
	$(PY) -m tfmodels.zoo.export --variant tiny --out $(MODELS)
	touch $@

## models-full: the paper-sized models the benchmarks use, in $(MODELS)-full/.
FULL_MODELS ?= resnet50
models-full: $(MODELS)-full/.full

$(MODELS)-full/.full: $(VENV)/.installed $(wildcard tfmodels/zoo/*.py)
	$(PY) -m tfmodels.zoo.export --variant full --out $(MODELS)-full $(FULL_MODELS)
	touch $@

## test: every test, Go and Python.
test: test-go test-py

test-go: deps models tfmodels/testdata/.fixtures
	EDGEINFER_MODELS=$(CURDIR)/$(MODELS) go test -count=1 ./...

test-py: deps
	$(PY) -m pytest -q tfmodels/zoo

tfmodels/testdata/.fixtures: $(VENV)/.installed tfmodels/testdata/make_fixtures.py
	$(PY) tfmodels/testdata/make_fixtures.py tfmodels/testdata/fixtures
	touch $@

## bench: every benchmark.
bench: bench-tf

## bench-tf: tfmodels vs Python TensorFlow on the same signatures (see BENCHMARKS.md).
bench-tf: deps models models-full
	go run ./bench/tf -models $(MODELS) -models-full $(MODELS)-full -python $(PY) $(BENCH_TF_FLAGS)

## run: build everything and run on the demo config. Until the daemon lands
## (issue "The daemon end to end") this exports the demo model repository and
## runs every model in it through the C API against Python's golden outputs.
run: build models
	go run ./tfmodels/cmd/tfmodels check $(MODELS)

clean:
	rm -rf $(BIN) build $(MODELS) $(MODELS)-full tfmodels/testdata/fixtures tfmodels/testdata/.fixtures
