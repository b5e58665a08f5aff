# rsec - build, install and test the OpenSIPS module.
#
#   make            build target/rsec.so (release)
#   make install    copy it into the OpenSIPS modules directory
#   make test       every test: engine, multi-process, dlopen, and the real
#                   OpenSIPS/sipp/MariaDB integration tests (those skip with
#                   one line when OpenSIPS is not found, or fail instead
#                   with RSEC_REQUIRE_OPENSIPS=1)
#   make bench      engine benchmarks
#   make bench-pike rsec and the pike module side by side in a real OpenSIPS
#   make bench-mi   sec_ban_list paging, start-up load and a two-node sync
#                   with 1K, 100K and 1M bans (RSEC_BENCH_MI_SIZES), in a
#                   real OpenSIPS and MariaDB; table in target/bench-mi/
#   make check-abi  compare the hand-written ABI with OPENSIPS_SRC headers
#
# OPENSIPS_BIN selects the OpenSIPS the module is built for (its `-V` gives
# the version strings OpenSIPS checks at load time); MODULES_DIR overrides
# where `make install` puts the module.

CARGO ?= cargo
OPENSIPS_BIN ?= $(or $(shell command -v opensips 2>/dev/null),$(wildcard /opt/opensips/sbin/opensips))
OPENSIPS_PREFIX := $(if $(OPENSIPS_BIN),$(abspath $(dir $(OPENSIPS_BIN))/..),/usr/local)
MODULES_DIR ?= $(firstword $(wildcard $(OPENSIPS_PREFIX)/lib64/opensips/modules $(OPENSIPS_PREFIX)/lib/opensips/modules $(OPENSIPS_PREFIX)/lib/x86_64-linux-gnu/opensips/modules) $(OPENSIPS_PREFIX)/lib64/opensips/modules)
MODULE := target/rsec.so

export OPENSIPS_BIN

.PHONY: all build install test bench bench-pike bench-mi check-abi clean

all: build

build:
	$(CARGO) build --release --lib
	@# A new file renamed over the old one: an OpenSIPS running with the old
	@# module keeps its mapping; rewriting the file in place crashes it.
	cp target/release/librsec.so $(MODULE).tmp
	mv -f $(MODULE).tmp $(MODULE)
	@echo "built $(abspath $(MODULE))"

install: build
	install -d $(DESTDIR)$(MODULES_DIR)
	install -m 0644 $(MODULE) $(DESTDIR)$(MODULES_DIR)/rsec.so
	@echo "installed $(DESTDIR)$(MODULES_DIR)/rsec.so"

# Every test; the benchmarks are not run, but must keep compiling.
test: build
	RSEC_SO=$(abspath $(MODULE)) $(CARGO) test --release --tests -- --test-threads=2
	$(CARGO) bench --no-run

bench:
	$(CARGO) bench --bench engine

bench-pike: build
	RSEC_SO=$(abspath $(MODULE)) $(CARGO) bench --bench versus_pike

bench-mi: build
	RSEC_SO=$(abspath $(MODULE)) $(CARGO) bench --bench mi_scale

check-abi:
	@test -n "$(OPENSIPS_SRC)" || { echo "set OPENSIPS_SRC to an OpenSIPS 3.6 source tree"; exit 1; }
	OPENSIPS_SRC=$(OPENSIPS_SRC) $(CARGO) build --release --lib

clean:
	$(CARGO) clean
