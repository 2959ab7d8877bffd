# The two commands (README): `make run` and `make test`. Both install what is
# missing (Debian 12, apt-get, as root), configure meson once, and build.
BUILD    ?= build
DATA     ?= ./data
PKGS     := meson ninja-build pkg-config gcc liburing-dev libwolfssl-dev liblmdb-dev \
            libxxhash-dev libcriterion-dev libinih-dev zlib1g-dev curl python3 \
            strace mosquitto mosquitto-clients python3-paho-mqtt openssl testssl.sh \
            lmdb-utils
RUN_ARGS ?=

# what the comparisons in bench/ run against (not needed by make test)
BENCH_PKGS := wrk nginx-light util-linux

.PHONY: all deps bench-deps build run test clean

all: build

deps:
	@missing=$$(for p in $(PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | \
		grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then \
			echo "sluice: missing Debian packages: $$missing"; \
			echo "sluice: run 'sudo make deps' (or apt-get install them) and retry"; exit 1; \
		fi; \
		echo "sluice: installing $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

bench-deps:
	@$(MAKE) --no-print-directory deps PKGS="$(BENCH_PKGS)"

$(BUILD)/build.ninja:
	meson setup $(BUILD)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

run: build
	@./scripts/demo-init.sh $(BUILD) $(DATA)
	exec $(BUILD)/sluiced --data-dir $(DATA) $(RUN_ARGS)

test: build
	meson test -C $(BUILD) --print-errorlogs

clean:
	rm -rf $(BUILD)
