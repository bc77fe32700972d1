# raftkv: build, run a local 3-node cluster, test.
#
#   make run     build, then start nodes 1-3 on 127.0.0.1 (client ports 2379,
#                22379, 32379; peer ports 2380, 22380, 32380; data in ./data)
#                in the foreground; Ctrl-C stops all three.
#   make test    every test (unit, storage conformance, real-process
#                integration tests, etcdctl compatibility).

CARGO ?= cargo
PROFILE ?= release
ifeq ($(PROFILE),release)
  BIN_DIR := $(or $(CARGO_TARGET_DIR),target)/release
  CARGO_PROFILE_FLAG := --release
else
  BIN_DIR := $(or $(CARGO_TARGET_DIR),target)/debug
  CARGO_PROFILE_FLAG :=
endif
DATA ?= ./data
INITIAL_CLUSTER := 1=127.0.0.1:2380,2=127.0.0.1:22380,3=127.0.0.1:32380

.PHONY: build run test test-unit test-integration lint clean

build:
	$(CARGO) build $(CARGO_PROFILE_FLAG) --locked --bins

run: build
	@mkdir -p $(DATA)
	@echo "starting raftkv nodes 1-3 (logs: $(DATA)/node*.log); Ctrl-C stops them"
	@trap 'kill 0' INT TERM EXIT; \
	for n in 1 2 3; do \
	  case $$n in 1) c=2379; p=2380;; 2) c=22379; p=22380;; 3) c=32379; p=32380;; esac; \
	  $(BIN_DIR)/kvd --id $$n --data-dir $(DATA)/node$$n \
	    --listen-client 127.0.0.1:$$c --listen-peer 127.0.0.1:$$p \
	    --initial-cluster $(INITIAL_CLUSTER) 2>&1 | sed -u "s/^/[node$$n] /" | tee $(DATA)/node$$n.log & \
	done; \
	wait

test:
	$(CARGO) test --locked --all-targets

test-unit:
	$(CARGO) test --locked --lib --bins

test-integration:
	$(CARGO) test --locked --test it

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps

clean:
	$(CARGO) clean
	rm -rf $(DATA)
