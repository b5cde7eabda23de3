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
# TensorFlow's portable Eigen CPU kernels for everything that makes or checks
# outputs (exports, golden files, imports, tests), as the daemon gives its
# plugins (plugins/sdk KernelsEnv): TensorFlow turns oneDNN on by itself on
# some CPUs only, and its rounding reorders near-tied detections. Training
# alone uses oneDNN, for speed (models-trained).
export TF_ENABLE_ONEDNN_OPTS ?= 0

.PHONY: build deps sysdeps models models-trained models-full models-real import-deps run-real test test-go test-race test-py bench bench-post bench-tf bench-plugin bench-e2e bench-reload run watch proto clean

## deps: the venv with pinned Python packages and the TensorFlow pkg-config file (idempotent).
deps: $(PC)

## sysdeps: Mosquitto (the tests' broker), ffmpeg (the ffmpeg sensor) and systemd
## (systemd-analyze checks the unit), from Debian.
sysdeps:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto && command -v ffmpeg >/dev/null && command -v systemd-analyze >/dev/null || { \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends mosquitto ffmpeg systemd; }

$(VENV)/.installed: requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(PC): $(VENV)/.installed scripts/tensorflow-pc.sh
	scripts/tensorflow-pc.sh $(PY) $@

## build: every Go package, and the daemon and plugin binaries in bin/.
build: deps
	go build ./...
	go build -o $(BIN)/edgeinferd ./daemon/cmd/edgeinferd
	go build -o $(BIN)/edgeinfer-classify ./plugins/classify
	go build -o $(BIN)/edgeinfer-detect ./plugins/detect
	go build -o $(BIN)/edgeinfer-segment ./plugins/segment
	go build -o $(BIN)/edgeinfer-embed ./plugins/embed
	go build -o $(BIN)/edgeinfer-video ./plugins/video
	go build -o $(BIN)/tfmodels ./tfmodels/cmd/tfmodels
	ln -sf ../tools/import/edgeinfer-import $(BIN)/edgeinfer-import

## models: the tiny zoo exported into $(MODELS)/ with golden files (what the tests use).
models: $(MODELS)/.tiny

$(MODELS)/.tiny: $(VENV)/.installed $(wildcard tfmodels/zoo/*.py)
	$(PY) -m tfmodels.zoo.export --variant tiny --out $(MODELS)
	touch $@

## models-trained: the detectors trained on the generated shapes set (tfmodels/zoo/
## train_yolov3.py, train_rcnn.py), the segmenter (train_seg.py), the video model
## (train_video.py), the embedding models (train_embed.py) and the face detector whose
## crops they identify (train_facedet.py), each trained on its own generated set, added
## to $(MODELS)/. Training takes minutes, once per machine: the versions are cached in
## ~/.cache/edgeinfer/trained, keyed by a hash of the code and data that make them.
models-trained: $(MODELS)/.trained

$(MODELS)/.trained: $(VENV)/.installed $(wildcard tfmodels/zoo/*.py)
	TF_ENABLE_ONEDNN_OPTS=1 $(PY) -m tfmodels.zoo.train_yolov3 --out $(MODELS)
	TF_ENABLE_ONEDNN_OPTS=1 $(PY) -m tfmodels.zoo.train_rcnn --out $(MODELS)
	TF_ENABLE_ONEDNN_OPTS=1 $(PY) -m tfmodels.zoo.train_seg --out $(MODELS)
	TF_ENABLE_ONEDNN_OPTS=1 $(PY) -m tfmodels.zoo.train_video --out $(MODELS)
	TF_ENABLE_ONEDNN_OPTS=1 $(PY) -m tfmodels.zoo.train_embed --out $(MODELS)
	TF_ENABLE_ONEDNN_OPTS=1 $(PY) -m tfmodels.zoo.train_facedet --out $(MODELS)
	touch $@

## models-full: the paper-sized models the benchmarks use, in $(MODELS)-full/.
FULL_MODELS ?= resnet50
models-full: $(MODELS)-full/.full

$(MODELS)-full/.full: $(VENV)/.installed $(wildcard tfmodels/zoo/*.py)
	$(PY) -m tfmodels.zoo.export --variant full --out $(MODELS)-full $(FULL_MODELS)
	touch $@

## import-deps: the TF.js runtime (Node) that edgeinfer-import checks TF.js models against.
TFJSREF := tools/import/tfjsref
import-deps: $(TFJSREF)/node_modules/.package-lock.json

$(TFJSREF)/node_modules/.package-lock.json: $(TFJSREF)/package-lock.json
	cd $(TFJSREF) && npm ci --no-audit --no-fund --loglevel=error

## models-real: real pretrained models (pinned in scripts/real-models.lock)
## imported into models-real/ and checked against TF.js on real photos.
## Cached in ~/.cache/edgeinfer/real-models/ by a hash of what makes them.
models-real: build import-deps
	scripts/real-models.sh models-real

## test: every test, Go and Python.
test: test-go test-race test-py

## test-race: the packages that hold concurrency, under the race detector
## (no TensorFlow: the lifecycle and the worker run with sdk.NewFake).
RACE_PKGS := ./daemon/ ./daemon/serving/ ./daemon/router/ ./daemon/pipeline/ ./daemon/crop/ ./daemon/repo/ ./daemon/config/ ./daemon/metrics/ \
             ./daemon/health/ ./daemon/homeassistant/ ./daemon/snapshot/ ./plugins/sdk/ ./plugins/embed/identify/ \
             ./internal/fsqueue/ ./internal/sdnotify/ ./internal/logging/
test-race: deps
	go test -race -count=1 -timeout 10m $(RACE_PKGS)

test-go: sysdeps build models models-trained models-real tfmodels/testdata/.fixtures plugins/detect/testdata/cases/.done plugins/segment/testdata/cases/.done run/inbox
	EDGEINFER_MODELS=$(CURDIR)/$(MODELS) EDGEINFER_REAL_MODELS=$(CURDIR)/models-real go test -count=1 -timeout 30m ./...

test-py: deps build import-deps
	$(PY) -m pytest -q tfmodels/zoo tools/import daemon/e2e/testdata

## The detect decoders' cases: raw outputs of the zoo detectors (and the real
## CenterNet) with what the numpy reference (tfmodels/zoo/detect_ref.py) makes of them.
plugins/detect/testdata/cases/.done: $(MODELS)/.tiny models-real plugins/detect/testdata/make_cases.py tfmodels/zoo/detect_ref.py
	rm -rf plugins/detect/testdata/cases
	$(PY) plugins/detect/testdata/make_cases.py $(MODELS) plugins/detect/testdata/cases
	touch $@

## The segment plugin's cases: raw outputs of the zoo segmenters (unet, fcn8s) and
## the real selfie model on frames of odd sizes, with what the numpy reference
## (tfmodels/zoo/segment_ref.py) makes of them; two tiny SavedModels for its tests.
plugins/segment/testdata/cases/.done: $(MODELS)/.tiny models-real plugins/segment/testdata/make_cases.py tfmodels/zoo/segment_ref.py
	rm -rf plugins/segment/testdata/cases
	$(PY) plugins/segment/testdata/make_cases.py $(MODELS) plugins/segment/testdata/cases
	touch $@

tfmodels/testdata/.fixtures: $(VENV)/.installed tfmodels/testdata/make_fixtures.py
	$(PY) tfmodels/testdata/make_fixtures.py tfmodels/testdata/fixtures
	touch $@

## bench: every benchmark.
bench: bench-tf bench-plugin bench-e2e bench-reload bench-post

## bench-post: the plugins' post-processing on its own: NMS on 10,000 boxes
## against the textbook loop, the dense CRF on a 640x480 softmax.
bench-post: deps
	go test -run XXX -bench NMS10000 -benchtime 5x ./plugins/common/boxes/
	go test -run XXX -bench Refine640x480 -benchtime 5x -count 5 ./plugins/common/crf/

## bench-reload: latency during 100 version swaps, memory of shared processes
## and waiting inputs, 200 swaps without leaks (the hot-reload end-to-end
## tests, which log these figures; run on an otherwise idle machine).
bench-reload: sysdeps build models
	EDGEINFER_MODELS=$(CURDIR)/$(MODELS) go test -count=1 -p 1 -timeout 30m -v \
	  -run 'TestHotReload100Swaps|TestOpsTwoPipelinesOnOneModel|TestOpsBrokenModelDoesNotStall|TestOps200ReloadCycles' ./daemon/e2e/ \
	  | grep -v level=DEBUG | grep -E '^(=== RUN|--- |ok|FAIL)|p99|p50|RSS|resident|rss|fds|shm|swaps|queued'

## bench-plugin: the daemon -> plugin -> daemon round trip of a 640x480 frame, no inference.
bench-plugin: deps
	go run ./bench/plugin $(BENCH_PLUGIN_FLAGS)

## bench-e2e: images over MQTT -> results over MQTT: edgeinferd vs a Python TensorFlow + paho service vs tfmodels alone.
bench-e2e: build models
	go run ./bench/e2e -python $(PY) -models $(MODELS) -bin $(BIN) $(BENCH_E2E_FLAGS)

## bench-tf: tfmodels vs Python TensorFlow on the same signatures (see BENCHMARKS.md).
bench-tf: deps models models-full
	go run ./bench/tf -models $(MODELS) -models-full $(MODELS)-full -python $(PY) $(BENCH_TF_FLAGS)

## run: build everything, export the demo models and run edgeinferd on
## config.toml with the embedded broker, over the sample digits. Watch with
## `make watch` (or bin/edgeinferd watch) in another terminal.
run: build models run/inbox
	cp testdata/digits/*.png run/inbox/
	$(BIN)/edgeinferd -config config.toml

run/inbox:
	mkdir -p $@

## run-real: the daemon on config.real.toml: a real facial-expression
## classifier over two real face photos, a real COCO detector and a real
## person segmenter over four real photos (all imported from TF.js).
run-real: models-real
	mkdir -p run/faces run/photos && cp build/real/photos/faces/*.png run/faces/ && cp build/real/photos/*.jpg build/real/photos/*.png run/photos/
	$(BIN)/edgeinferd -config config.real.toml

## watch: print what the demo daemon publishes.
watch:
	go run ./daemon/cmd/edgeinferd watch -config config.toml

## proto: regenerate plugins/sdk/taskpb from plugins/sdk/proto/task.proto
## (needs protoc; the generated code is committed).
proto:
	GOBIN=$(CURDIR)/build/gobin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	GOBIN=$(CURDIR)/build/gobin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.0
	cd plugins/sdk && PATH=$(CURDIR)/build/gobin:$$PATH protoc -I proto \
	  --go_out=. --go_opt=module=github.com/edgeinfer/edgeinfer/plugins/sdk \
	  --go-grpc_out=. --go-grpc_opt=module=github.com/edgeinfer/edgeinfer/plugins/sdk proto/task.proto

clean:
	rm -rf $(BIN) run build $(MODELS) $(MODELS)-full tfmodels/testdata/fixtures tfmodels/testdata/.fixtures
