# rsec - build, install and test the OpenSIPS module.
#
#   make            build target/rsec.so (release) and target/rsec-replay,
#                   which replays a pcap/pcapng capture or a SIP log through
#                   the engine with an opensips.cfg's thresholds and reports
#                   what rsec would have banned (README, "rsec-replay")
#   make install    copy it into the OpenSIPS modules directory
#   make test       every test: engine, multi-process, dlopen, and the real
#                   OpenSIPS/sipp/MariaDB integration tests (those skip with
#                   one line when OpenSIPS is not found, or fail instead
#                   with RSEC_REQUIRE_OPENSIPS=1)
#   make bench      bench-engine, then bench-plot when gnuplot is installed
#   make bench-engine  the engine benchmark: every hot path (flood check of a
#                   known and of a new source, ban lookup, rate limit,
#                   whitelist, sweep) at 1K, 64K, 1M and 16M entries, and the
#                   flood check from 1, 2 and 4 processes; prints a table and
#                   writes target/bench-engine/engine.csv. Set RSEC_BENCH_SIZES,
#                   _OPS, _REPEAT, _PROCS, _CASES, _CSV to change
#                   it (see benches/engine.rs); 16M entries need ~8 GiB free
#   make bench-plot draw docs/engine-bench.png from that CSV (gnuplot)
#   make bench-pike rsec and the pike module side by side in a real OpenSIPS
#   make bench-opensips
#                   no check, pike, pike+ratelimit and rsec in a real
#                   OpenSIPS: CPU per request (paced and saturated, perf
#                   shares per module), an attack with legitimate traffic,
#                   then a million sources; results in target/bench-opensips/
#                   and docs/under-attack.png. Sized by RSEC_BENCH_* (see
#                   benches/in_opensips/knobs.rs), e.g. RSEC_BENCH_ROUNDS=2
#                   RSEC_BENCH_SECS=2 RSEC_BENCH_SCENARIO=cost,attack
#   make bench-million
#                   only the million-sources scenario of bench-opensips
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
REPLAY := target/rsec-replay

export OPENSIPS_BIN

# The engine benchmark's CSV, and the plot drawn from it.
RSEC_BENCH_CSV ?= $(CURDIR)/target/bench-engine/engine.csv
BENCH_PNG ?= docs/engine-bench.png
BENCH_TITLE ?= rsec engine benchmark ($(shell nproc) CPUs, $(shell date +%Y-%m-%d))
export RSEC_BENCH_CSV

.PHONY: all build install test bench bench-engine bench-plot bench-pike bench-opensips bench-million bench-mi check-abi clean

all: build

build:
	$(CARGO) build --release --lib --bin rsec-replay
	@# A new file renamed over the old one: an OpenSIPS running with the old
	@# module keeps its mapping; rewriting the file in place crashes it.
	cp target/release/librsec.so $(MODULE).tmp
	mv -f $(MODULE).tmp $(MODULE)
	cp target/release/rsec-replay $(REPLAY).tmp
	mv -f $(REPLAY).tmp $(REPLAY)
	@echo "built $(abspath $(MODULE)) and $(abspath $(REPLAY))"

install: build
	install -d $(DESTDIR)$(MODULES_DIR)
	install -m 0644 $(MODULE) $(DESTDIR)$(MODULES_DIR)/rsec.so
	@echo "installed $(DESTDIR)$(MODULES_DIR)/rsec.so"

# Every test; the benchmarks are not run, but must keep compiling.
test: build
	RSEC_SO=$(abspath $(MODULE)) $(CARGO) test --release --tests -- --test-threads=2
	$(CARGO) bench --no-run

bench: bench-engine
	@if command -v gnuplot >/dev/null 2>&1; then \
		$(MAKE) --no-print-directory bench-plot; \
	else \
		echo "gnuplot not found: no plot drawn (make bench-plot draws it later)"; \
	fi

bench-engine:
	$(CARGO) bench --bench engine

bench-plot:
	@test -f "$(RSEC_BENCH_CSV)" || { echo "no $(RSEC_BENCH_CSV): run make bench-engine first"; exit 1; }
	mkdir -p $(dir $(BENCH_PNG))
	gnuplot -e "csv='$(RSEC_BENCH_CSV)'; out='$(BENCH_PNG)'; title='$(BENCH_TITLE)'" benches/plot/engine.gp
	@echo "drew $(abspath $(BENCH_PNG))"

bench-pike: build
	RSEC_SO=$(abspath $(MODULE)) $(CARGO) bench --bench versus_pike

bench-opensips: build
	RSEC_SO=$(abspath $(MODULE)) $(CARGO) bench --bench in_opensips

bench-million: build
	RSEC_BENCH_SCENARIO=million RSEC_SO=$(abspath $(MODULE)) $(CARGO) bench --bench in_opensips
bench-mi: build
	RSEC_SO=$(abspath $(MODULE)) $(CARGO) bench --bench mi_scale

check-abi:
	@test -n "$(OPENSIPS_SRC)" || { echo "set OPENSIPS_SRC to an OpenSIPS 3.6 source tree"; exit 1; }
	OPENSIPS_SRC=$(OPENSIPS_SRC) $(CARGO) build --release --lib

clean:
	$(CARGO) clean
