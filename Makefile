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

.PHONY: build deps sysdeps models models-trained models-full models-real import-deps run-real test test-go test-race test-py bench bench-post bench-tf bench-plugin bench-e2e bench-reload bench-security run watch proto clean
.PHONY: install uninstall deb pkg-bin test-install test-deb fuzz

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

## test: every test, Go and Python, and the install and the .deb (test-install, test-deb).
test: test-go test-race test-py test-install test-deb

## install: edgeinferd, the plugins, the unit, the sysusers.d file, a default
## /etc/edgeinfer/config.toml (never overwritten) and the demo model it serves,
## into $(DESTDIR)$(PREFIX) (packaging/install.sh; packaging/README.md). Run `make build` first.
## TENSORFLOW: build (the default: the plugins as `make build` linked them, finding
## TensorFlow in this checkout), outside (plugins linked to find it in
## $(PLUGINDIR)/tensorflow, which edgeinfer-fetch-tensorflow fills) or inside (the same,
## with its two libraries copied there: 850 MB).
## uninstall: removes what install put under $(PREFIX), its unit and sysusers.d file
## (not /etc/edgeinfer, not /var/lib/edgeinfer; `systemctl disable --now edgeinferd` first).
## deb: build/edgeinfer_$(VERSION)_<arch>.deb with nfpm: `make install PREFIX=/usr
## TENSORFLOW=outside` (or TENSORFLOW=inside) staged in build/pkg/root, the config a
## conffile, maintainer scripts that create the user and enable the unit without starting it.
VERSION    ?= 0.1.0
PREFIX     ?= /usr/local
DESTDIR    ?=
BINDIR     ?= $(PREFIX)/bin
SBINDIR    ?= $(PREFIX)/sbin
PLUGINDIR  ?= $(PREFIX)/lib/edgeinfer
DATADIR    ?= $(PREFIX)/share/edgeinfer
DOCDIR     ?= $(PREFIX)/share/doc/edgeinfer
# Fixed by the unit: ConfigurationDirectory=edgeinfer, StateDirectory=edgeinfer.
SYSCONFDIR := /etc
STATEDIR   := /var/lib/edgeinfer
# systemd reads units and sysusers.d files under /usr and /usr/local, not under other prefixes.
SYSTEMD_UNIT_DIR ?= $(if $(filter /usr /usr/local,$(PREFIX)),$(PREFIX)/lib/systemd/system,/etc/systemd/system)
SYSUSERS_DIR     ?= $(if $(filter /usr /usr/local,$(PREFIX)),$(PREFIX)/lib/sysusers.d,/etc/sysusers.d)
SEED_STATE ?= yes
PLUGINS    := classify detect segment embed video
INSTALL_TF  = $(or $(TENSORFLOW),build)
PKG_BIN    := build/pkg/bin
NFPM_VERSION := v2.48.0
NFPM       := build/tools/nfpm-$(NFPM_VERSION)/nfpm
DEB_ARCH    = $(shell go env GOARCH)
DEB         = build/edgeinfer_$(VERSION)_$(DEB_ARCH).deb
DEB_MAINTAINER ?= edgeinfer maintainers <root@localhost>

install: $(if $(filter build,$(INSTALL_TF)),,pkg-bin)
	DESTDIR='$(DESTDIR)' BINDIR='$(BINDIR)' SBINDIR='$(SBINDIR)' PLUGINDIR='$(PLUGINDIR)' DATADIR='$(DATADIR)' \
	  DOCDIR='$(DOCDIR)' SYSCONFDIR='$(SYSCONFDIR)' STATEDIR='$(STATEDIR)' UNITDIR='$(SYSTEMD_UNIT_DIR)' \
	  SYSUSERSDIR='$(SYSUSERS_DIR)' SRC_BIN='$(if $(filter build,$(INSTALL_TF)),$(BIN),$(PKG_BIN))' PLUGINS='$(PLUGINS)' \
	  MODELS='$(MODELS)' TENSORFLOW='$(INSTALL_TF)' TF_LIBDIR="$$(pkg-config --variable=libdir tensorflow)" \
	  SEED_STATE='$(SEED_STATE)' packaging/install.sh
	@test -n '$(DESTDIR)' || echo 'next: systemd-sysusers; systemctl daemon-reload; edgeinferd -check -config /etc/edgeinfer/config.toml; systemctl enable --now edgeinferd'

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/edgeinferd $(DESTDIR)$(SBINDIR)/edgeinfer-fetch-tensorflow $(patsubst %,$(DESTDIR)$(PLUGINDIR)/edgeinfer-%,$(PLUGINS)) \
	  $(DESTDIR)$(PLUGINDIR)/tensorflow/libtensorflow_cc.so.2 $(DESTDIR)$(PLUGINDIR)/tensorflow/libtensorflow_framework.so.2 \
	  $(DESTDIR)$(SYSTEMD_UNIT_DIR)/edgeinferd.service $(DESTDIR)$(SYSUSERS_DIR)/edgeinfer.conf $(DESTDIR)$(DATADIR)/config.toml \
	  $(DESTDIR)$(DOCDIR)/README.md $(DESTDIR)$(DOCDIR)/systemd.md $(DESTDIR)$(DOCDIR)/packaging.md
	rm -rf $(DESTDIR)$(DATADIR)/models/lenet5
	-rmdir $(DESTDIR)$(PLUGINDIR)/tensorflow $(DESTDIR)$(PLUGINDIR) $(DESTDIR)$(DATADIR)/models $(DESTDIR)$(DATADIR) $(DESTDIR)$(DOCDIR)

## pkg-bin: edgeinferd and the plugins in build/pkg/bin for install and deb: no
## paths of this checkout in them (-trimpath), stripped, and the plugins' only
## RUNPATH $(PLUGINDIR)/tensorflow (an absolute path: edgeinferd runs a copy of a
## plugin from /tmp, so $$ORIGIN would not do).
## Go's build cache keys a -trimpath build by neither the checkout's folder nor what
## pkg-config prints, so a package compiled in another checkout would bring that
## checkout's -L along; naming the library folder in CGO_LDFLAGS puts it in the key.
PKG_GO = PKG_CONFIG_PATH=$(CURDIR)/build/pkg/pkgconfig CGO_LDFLAGS="-O2 -g -L$$(pkg-config --variable=libdir tensorflow)" \
  go build -trimpath -ldflags='-s -w'
pkg-bin: $(PC)
	mkdir -p build/pkg/pkgconfig $(PKG_BIN)
	sed 's|-Wl,-rpath,[^ ]*|-Wl,-rpath,$(PLUGINDIR)/tensorflow|' $(PC) > build/pkg/pkgconfig/tensorflow.pc
	$(PKG_GO) -o $(PKG_BIN)/edgeinferd ./daemon/cmd/edgeinferd
	for p in $(PLUGINS); do $(PKG_GO) -o $(PKG_BIN)/edgeinfer-$$p ./plugins/$$p || exit 1; done

deb: $(PC) $(MODELS)/lenet5/1/saved_model.pb $(NFPM)
	@case '$(or $(TENSORFLOW),outside)' in outside|inside) ;; *) echo 'make deb: TENSORFLOW is outside or inside' >&2; exit 1;; esac
	rm -rf build/pkg/root
	$(MAKE) --no-print-directory install PREFIX=/usr DESTDIR=$(CURDIR)/build/pkg/root TENSORFLOW=$(or $(TENSORFLOW),outside) SEED_STATE=no
	VERSION='$(VERSION)' DEB_ARCH='$(DEB_ARCH)' DEB_MAINTAINER='$(DEB_MAINTAINER)' \
	  PKG_ROOT=build/pkg/root $(NFPM) package --config packaging/nfpm.yaml --packager deb --target $(DEB)
	@ls -l $(DEB)

$(NFPM):
	GOBIN=$(CURDIR)/$(dir $(NFPM)) go install github.com/goreleaser/nfpm/v2/cmd/nfpm@$(NFPM_VERSION)

## The demo model install and deb take; `make models` exports it with the rest of the tiny zoo.
$(MODELS)/lenet5/1/saved_model.pb:
	$(MAKE) --no-print-directory models

## test-install: `make install DESTDIR=<tmp> PREFIX=/usr` lays the files out, its unit
## passes systemd-analyze verify and security, its config edgeinferd -check (no root).
test-install: sysdeps build $(MODELS)/lenet5/1/saved_model.pb
	packaging/test-install.sh

## test-deb: builds the .deb, installs it with dpkg on this machine (as root, or with
## sudo), checks the user, the unit, the conffile, the plugins' RUNPATH and the config,
## then purges it, leaving the machine as it was (packaging/test-deb.sh).
test-deb: sysdeps deb
	$$(test "$$(id -u)" = 0 || echo sudo) packaging/test-deb.sh $(DEB) "$$(pkg-config --variable=libdir tensorflow)"

## fuzz: every Fuzz* target of the module (Go's native fuzzing), one after
## the other, each for FUZZTIME on one worker; not part of test. The targets
## are found in the sources (go test -list would build and run every test
## binary, and daemon/e2e's builds the daemon and the plugins first). A
## crash stops the run and is written to <package>/testdata/fuzz/<target>/,
## where plain go test runs it from then on.
FUZZTIME ?= 30s
# How long the fuzzer may spend shrinking an input it found (Go's default,
# 60s, is spent on every new input that widens coverage).
FUZZMINIMIZETIME ?= 5s
fuzz: deps models tfmodels/testdata/.fixtures
	@set -e; \
	for file in $$(grep -rlE --include='*_test.go' --exclude-dir=.venv --exclude-dir=build --exclude-dir=node_modules '^func Fuzz\w*\(f \*testing\.F\)' . | sort); do \
	  pkg=./$$(dirname $${file#./}); \
	  for name in $$(sed -nE 's/^func (Fuzz\w*)\(f \*testing\.F\).*/\1/p' $$file); do \
	    echo "== $$name ($$pkg), $(FUZZTIME)"; \
	    EDGEINFER_MODELS=$(CURDIR)/$(MODELS) EDGEINFER_REAL_MODELS=$(CURDIR)/models-real \
	      go test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZETIME) -parallel 1 $$pkg; \
	  done; \
	done

## test-race: the packages that hold concurrency, under the race detector
## (no TensorFlow: the lifecycle and the worker run with sdk.NewFake).
RACE_PKGS := ./daemon/ ./daemon/broker/ ./daemon/serving/ ./daemon/router/ ./daemon/pipeline/ ./daemon/crop/ ./daemon/repo/ ./daemon/config/ ./daemon/metrics/ \
             ./daemon/health/ ./daemon/homeassistant/ ./daemon/snapshot/ ./daemon/outbox/ ./plugins/sdk/ ./plugins/embed/identify/ \
             ./internal/fsqueue/ ./internal/sdnotify/ ./internal/logging/
test-race: sysdeps deps
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
bench: bench-tf bench-plugin bench-e2e bench-reload bench-post bench-security

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

## bench-security: what the protections cost: plugin starts confined vs not vs
## Python, vetting (op check, signature) vs hashing and loading every model,
## the embedded broker with users and ACL vs open vs Mosquitto.
bench-security: sysdeps build models models-real
	TF_ENABLE_ONEDNN_OPTS=0 TF_CPP_MIN_LOG_LEVEL=2 go run ./bench/security -bin $(BIN) -python $(PY) \
	  -models $(MODELS),models-real $(BENCH_SECURITY_FLAGS)

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
