# llll - build, test, demo, bench. GNU make.
#   make            libllll.a and libllll.so
#   make test       every test in t/ (Check); SANITIZE=1 for ASan+UBSan,
#                   TSAN=1 for ThreadSanitizer; CROSS=aarch64-linux-gnu
#                   QEMU=qemu-aarch64-static cross-builds and runs under qemu-user;
#                   CK_VERBOSITY=verbose lists every test with its time
#   make test-faults  fault injection: signal storms, fd and process limits,
#                   failed allocations, bad peers (t/faults.c)
#   make test-valgrind  every test in t/ under valgrind memcheck, one process
#   make demo       build and run examples/
#   make bench      build and run bench/ (ratios against a baseline in the same run)
#   make fuzz       libFuzzer on the frame reader (clang), FUZZ_SECONDS=60
#   make test-slurm srun workers on a one-node Slurm cluster of its own (root,
#                   slurm-wlm installed); make bench-slurm: frames through srun
# CC, CPPFLAGS, CFLAGS, LDFLAGS, LDLIBS and PKG_CONFIG from the command line
# are honoured (CC, CPPFLAGS and PKG_CONFIG from the environment too); the
# warning flags and -std=c11 -pthread are always added.

MAJOR := $(shell sed -n 's/^\#define LLLL_VERSION_MAJOR \([0-9]*\)/\1/p' llll.h)
MINOR := $(shell sed -n 's/^\#define LLLL_VERSION_MINOR \([0-9]*\)/\1/p' llll.h)
PATCH := $(shell sed -n 's/^\#define LLLL_VERSION_PATCH \([0-9]*\)/\1/p' llll.h)
VERSION := $(MAJOR).$(MINOR).$(PATCH)

CFLAGS = -O2 -g
LDFLAGS =
LDLIBS =
WARN = -Wall -Wextra -Wpedantic
BASE = -std=c11 -pthread $(WARN)

ifeq ($(SANITIZE),1)
SAN = -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
B = build/san
else ifeq ($(TSAN),1)
SAN = -fsanitize=thread
B = build/tsan
else ifneq ($(CROSS),)
SAN =
B = build/$(CROSS)
else
SAN =
B = build
endif

# A cross build (CROSS=triplet) uses that triplet's gcc and the Check of that
# Debian architecture (check:arm64, ...). Without binfmt_misc the host cannot
# exec its programs, so with QEMU set the test runner runs under $(QEMU) and
# each helper program is a /bin/sh script that execs $(QEMU) on helper.bin.
ifneq ($(CROSS),)
CC = $(CROSS)-gcc
AR = $(CROSS)-ar
export PKG_CONFIG_LIBDIR = /usr/lib/$(CROSS)/pkgconfig
endif

ALL_CFLAGS = $(BASE) $(SAN) $(CPPFLAGS) $(CFLAGS)
ALL_LDFLAGS = -pthread $(SAN) $(LDFLAGS)

SRCS = llll.c sbc.c pool.c mapper.c
OBJS = $(SRCS:%.c=$(B)/%.o)
LIB_A = $(B)/libllll.a
SONAME = libllll.so.$(MAJOR)
LIB_SO = $(B)/libllll.so.$(VERSION)

TEST_SRCS ?= $(wildcard t/test_*.c)
HELPER_SRCS = $(wildcard t/helper_*.c)
HELPERS = $(HELPER_SRCS:t/%.c=$(B)/t/%)
EXAMPLE_SRCS = $(wildcard examples/*.c)
EXAMPLES = $(EXAMPLE_SRCS:examples/%.c=$(B)/examples/%)
DEMOS = $(filter-out %_worker,$(EXAMPLES))
BENCH_SRCS = $(wildcard bench/*.c)
BENCHES = $(BENCH_SRCS:bench/%.c=$(B)/bench/%)

.PHONY: all test run-tests check-dep demo demo-build bench bench-build fuzz clean
all: $(LIB_A) $(B)/libllll.so

$(B)/%.o: %.c llll.h | $(B)/.dirs
	$(CC) $(ALL_CFLAGS) -fPIC -c -o $@ $<

$(B)/.dirs:
	mkdir -p $(B)/t $(B)/examples $(B)/bench
	touch $@

$(LIB_A): $(OBJS)
	rm -f $@
	$(AR) rcs $@ $^

$(LIB_SO): $(OBJS)
	$(CC) $(ALL_LDFLAGS) -shared -Wl,-soname,$(SONAME) -o $@ $^ $(LDLIBS)

$(B)/libllll.so: $(LIB_SO)
	ln -sf libllll.so.$(VERSION) $(B)/$(SONAME)
	ln -sf $(SONAME) $@

# ---------------------------------------------------------------- tests
# Check's flags come from $(PKG_CONFIG), else from a test link: -lcheck alone,
# or with what a static libcheck needs (Debian's links subunit). check-dep
# writes them to $(B)/check.mk for the run-tests that follows. Without Check,
# as root with apt-get, it installs Debian's check and pkg-config (so this
# happens once); otherwise it stops with a one-line hint.
PKG_CONFIG ?= pkg-config
CHECK_MK = $(B)/check.mk
CHECK_PROBE = $(B)/t/check-probe

check-dep: | $(B)/.dirs
	@find_check() { \
	  if cf=$$($(PKG_CONFIG) --cflags check 2>/dev/null) && cl=$$($(PKG_CONFIG) --libs check 2>/dev/null); then :; else \
	    cf=; cl=; \
	    printf '#include <check.h>\nint main(void) { return srunner_ntests_run(0); }\n' > $(CHECK_PROBE).c; \
	    for l in "-lcheck" "-lcheck -lsubunit -lm -lrt"; do \
	      if $(CC) $(ALL_CFLAGS) -o $(CHECK_PROBE) $(CHECK_PROBE).c $(ALL_LDFLAGS) $$l $(LDLIBS) >/dev/null 2>&1; then cl=$$l; break; fi; \
	    done; \
	    rm -f $(CHECK_PROBE) $(CHECK_PROBE).c; \
	    [ -n "$$cl" ] || return 1; \
	  fi; \
	  printf 'CHECK_CFLAGS = %s\nCHECK_LIBS = %s\n' "$$cf" "$$cl" > $(CHECK_MK).new; \
	  if cmp -s $(CHECK_MK).new $(CHECK_MK); then rm $(CHECK_MK).new; else mv $(CHECK_MK).new $(CHECK_MK); fi; \
	}; \
	find_check && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "llll: the tests need Check; installing the Debian packages 'check' and 'pkg-config' with apt-get"; \
	  (apt-get install -y -qq check pkg-config >/dev/null 2>&1 || \
	   (apt-get update -qq >/dev/null 2>&1; apt-get install -y -qq check pkg-config >/dev/null 2>&1)) && \
	  find_check && exit 0; \
	fi; \
	echo "llll: the tests need Check (https://libcheck.github.io/check/): install it, e.g. 'apt-get install check pkg-config' on Debian, then run 'make test' again" >&2; \
	exit 1

test: check-dep
	@$(MAKE) --no-print-directory run-tests

-include $(CHECK_MK)
CHECK_CFLAGS ?= $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS ?= $(shell $(PKG_CONFIG) --libs check 2>/dev/null)

# Compile-only: t/header_alone.c includes llll.h and nothing else, and uses
# the errno names its functions return, so it builds only if llll.h gives
# them by itself. The runner is built after it.
$(B)/t/header_alone.o: t/header_alone.c llll.h | $(B)/.dirs
	$(CC) $(ALL_CFLAGS) -I. -c -o $@ $<

$(B)/t/run: t/main.c $(TEST_SRCS) t/t.h $(LIB_A) $(B)/t/header_alone.o $(wildcard $(CHECK_MK)) | $(B)/.dirs
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -I. -o $@ t/main.c $(TEST_SRCS) $(ALL_LDFLAGS) $(LIB_A) $(CHECK_LIBS) $(LDLIBS)

$(B)/t/helper_%: t/helper_%.c t/t.h $(LIB_A) | $(B)/.dirs
ifeq ($(QEMU),)
	$(CC) $(ALL_CFLAGS) -I. -o $@ $< $(ALL_LDFLAGS) $(LIB_A) $(LDLIBS)
else
	$(CC) $(ALL_CFLAGS) -I. -o $@.bin $< $(ALL_LDFLAGS) $(LIB_A) $(LDLIBS)
	printf '#!/bin/sh\nexec %s %s "$$@"\n' '$(QEMU)' '$(abspath $@).bin' > $@
	chmod +x $@
endif

run-tests: $(B)/t/run $(HELPERS)
	LLLL_T_DIR=$(B)/t LLLL_T_QEMU='$(QEMU)' $(QEMU) $(B)/t/run

# The fault tests: their own runner, whose malloc, calloc and realloc can be
# made to fail (so neither a sanitizer nor valgrind may replace them).
FAULT_SRCS = t/faults.c
$(B)/t/faults: t/main.c $(FAULT_SRCS) t/t.h $(LIB_A) $(wildcard $(CHECK_MK)) | $(B)/.dirs
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -I. -o $@ t/main.c $(FAULT_SRCS) $(ALL_LDFLAGS) $(LIB_A) $(CHECK_LIBS) $(LDLIBS)

.PHONY: test-faults run-faults test-valgrind run-valgrind
test-faults: check-dep
	@$(MAKE) --no-print-directory run-faults

# No stack cache in glibc: a thread's TLS block is then freed when it ends,
# so the count of heap blocks comes back to where it was.
run-faults: $(B)/t/faults $(HELPERS)
	GLIBC_TUNABLES=glibc.pthread.stack_cache_size=0 LLLL_T_DIR=$(B)/t LLLL_T_QEMU='$(QEMU)' $(QEMU) $(B)/t/faults

# Every test in one process (CK_FORK=no), so one leak report covers them all.
# Children the tests fork are not checked (--child-silent-after-fork: their
# memory is a copy of the parent's, whose other threads they lack), and as
# valgrind's exit code would then be theirs too, the verdict is read from the
# parent's log: no error, no definite leak. By default valgrind holds up to
# 20 MB of freed blocks back from reuse, to catch a use after free: in the
# test that bounds RSS (a 10,000,000-item stream) they counted as 5-7 MiB of
# growth. 2 MB still catches a use soon after its free (ASan's quarantine,
# in make test SANITIZE=1, is far larger).
VALGRIND = valgrind --leak-check=full --errors-for-leak-kinds=definite \
  --show-leak-kinds=definite --child-silent-after-fork=yes --trace-children=no \
  --freelist-vol=2000000
test-valgrind: check-dep
	@$(MAKE) --no-print-directory run-valgrind

run-valgrind: $(B)/t/run $(HELPERS)
	@rc=0; LLLL_T_DIR=$(B)/t LLLL_T_VALGRIND=1 CK_FORK=no $(VALGRIND) --log-file=$(B)/valgrind.log $(B)/t/run || rc=$$?; \
	grep -A3 'definitely lost in' $(B)/valgrind.log; grep 'ERROR SUMMARY' $(B)/valgrind.log; \
	[ $$rc = 0 ] && grep -q 'ERROR SUMMARY: 0 errors' $(B)/valgrind.log

# ---------------------------------------------------------------- demo, bench
$(B)/examples/%: examples/%.c $(LIB_A) | $(B)/.dirs
	$(CC) $(ALL_CFLAGS) -I. -o $@ $< $(ALL_LDFLAGS) $(LIB_A) $(LDLIBS)

demo-build: $(EXAMPLES)
demo: $(EXAMPLES)
	@for d in $(DEMOS); do echo "== $$d =="; ./$$d || exit 1; echo; done

BENCH_OMP = -fopenmp
$(B)/bench/mapper: bench/mapper.c bench/bench.h $(LIB_A) | $(B)/.dirs
	$(CC) $(ALL_CFLAGS) $(BENCH_OMP) -I. -o $@ $< $(ALL_LDFLAGS) $(BENCH_OMP) $(LIB_A) $(LDLIBS)

$(B)/bench/%: bench/%.c bench/bench.h $(LIB_A) | $(B)/.dirs
	$(CC) $(ALL_CFLAGS) -I. -o $@ $< $(ALL_LDFLAGS) $(LIB_A) $(LDLIBS)

bench-build: $(BENCHES)
bench: $(BENCHES)
	@for b in $(BENCHES); do echo "== $$b =="; ./$$b || exit 1; echo; done

# ---------------------------------------------------------------- fuzz
FUZZ_CC = clang
FUZZ_SECONDS = 60
$(B)/fuzz_frame: t/fuzz_frame.c sbc.c llll.h | $(B)/.dirs
	$(FUZZ_CC) -std=c11 -g -O1 $(WARN) -fsanitize=fuzzer,address,undefined -I. -o $@ t/fuzz_frame.c sbc.c

fuzz: $(B)/fuzz_frame
	mkdir -p $(B)/fuzz-corpus
	$(B)/fuzz_frame -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 $(B)/fuzz-corpus

clean:
	rm -rf build

# ---------------------------------------------------------------- Slurm
# t/slurm/cluster.sh runs a one-node cluster in a temporary folder on free
# ports (root and Debian's slurm-wlm needed; nothing is installed here), the
# tests run against it, the queue must drain, the daemons are stopped by pid.
SLURM_TEST_SRCS = t/slurm/test_srun.c t/slurm/test_pool_srun.c t/slurm/test_pool_srun_map.c
SLURM_HELPERS = $(B)/t/slurm/helper_echo $(B)/t/slurm/helper_worker
SLURM_BENCHES = $(B)/t/slurm/bench_srun $(B)/t/slurm/bench_pool_srun
SLURM_ROUNDS = 5
.PHONY: test-slurm bench-slurm

$(B)/t/slurm/.dir: | $(B)/.dirs
	mkdir -p $(B)/t/slurm
	touch $@

$(B)/t/slurm/run: t/main.c $(SLURM_TEST_SRCS) t/t.h t/slurm/srun.h t/slurm/pool_srun.h $(LIB_A) $(wildcard $(CHECK_MK)) | $(B)/t/slurm/.dir
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -I. -It -It/slurm -o $@ t/main.c $(SLURM_TEST_SRCS) $(ALL_LDFLAGS) $(LIB_A) $(CHECK_LIBS) $(LDLIBS)

$(B)/t/slurm/helper_%: t/slurm/helper_%.c $(LIB_A) | $(B)/t/slurm/.dir
	$(CC) $(ALL_CFLAGS) -I. -o $@ $< $(ALL_LDFLAGS) $(LIB_A) $(LDLIBS)

$(B)/t/slurm/bench_%: t/slurm/bench_%.c t/slurm/srun.h bench/bench.h $(LIB_A) | $(B)/t/slurm/.dir
	$(CC) $(ALL_CFLAGS) -I. -It/slurm -Ibench -o $@ $< $(ALL_LDFLAGS) $(LIB_A) $(LDLIBS)

test-slurm: $(B)/t/slurm/run $(SLURM_HELPERS)
	t/slurm/cluster.sh run sh -c 'LLLL_T_DIR=$(B)/t/slurm $(B)/t/slurm/run && t/slurm/cluster.sh drained'

# Round trips through srun against local; as root, again with TCP quick ACKs
# on the loopback routes (t/slurm/quickack.sh puts them back).
bench-slurm: $(SLURM_BENCHES) $(SLURM_HELPERS)
	t/slurm/cluster.sh run sh -c 'export LLLL_T_DIR=$(B)/t/slurm; \
	  for b in $(SLURM_BENCHES); do \
	    echo "== $$b, loopback routes as they are"; $$b $(SLURM_ROUNDS) || exit 1; \
	    if [ "$$(id -u)" = 0 ] && command -v ip >/dev/null; then \
	      echo "== $$b, with quickack 1 on the loopback routes"; \
	      t/slurm/quickack.sh run $$b $(SLURM_ROUNDS) || exit 1; fi; \
	  done'

# ---------------------------------------------------------------- install
PREFIX = /usr/local
DESTDIR =
LIBDIR = $(PREFIX)/lib
INCLUDEDIR = $(PREFIX)/include
MANDIR = $(PREFIX)/share/man
PKGCONFIGDIR = $(LIBDIR)/pkgconfig
MANPAGES = $(wildcard man/*.3)

# Which page documents a function: by its prefix.
man_page_of = $(if $(filter llll_proc_% llll_print_line,$(1)),llll_proc,$(if $(filter llll_sbc_% llll_buf_%,$(1)),llll_sbc,$(if $(filter llll_instance_%,$(1)),llll_instance,$(if $(filter llll_pool_% llll_serve,$(1)),llll_pool,$(if $(filter llll_mapper_% llll_fifo_% llll_gen_%,$(1)),llll_mapper,llll)))))
FUNCS = $(shell grep -v '^typedef' llll.h | grep -o '^[a-z][a-z_ ]*[ *]llll_[a-z_]*' | grep -o 'llll_[a-z_]*$$')

.PHONY: install uninstall test-install test-vendor musl size
$(B)/llll.pc: llll.h Makefile | $(B)/.dirs
	printf '%s\n' 'prefix=$(PREFIX)' 'libdir=$(LIBDIR)' 'includedir=$(INCLUDEDIR)' '' \
	  'Name: llll' 'Description: child processes, framed channels, process pools and a thread mapper' \
	  'Version: $(VERSION)' 'Libs: -L$${libdir} -lllll' 'Libs.private: -pthread' \
	  'Cflags: -I$${includedir}' > $@

install: all $(B)/llll.pc
	install -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man3
	install -m 644 llll.h $(DESTDIR)$(INCLUDEDIR)/llll.h
	install -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libllll.a
	install -m 755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/libllll.so.$(VERSION)
	ln -sf libllll.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libllll.so
	install -m 644 $(B)/llll.pc $(DESTDIR)$(PKGCONFIGDIR)/llll.pc
	install -m 644 $(MANPAGES) $(DESTDIR)$(MANDIR)/man3/
	$(foreach f,$(FUNCS),$(if $(wildcard man/$(f).3),,echo '.so man3/$(call man_page_of,$(f)).3' > $(DESTDIR)$(MANDIR)/man3/$(f).3;))

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/llll.h $(DESTDIR)$(LIBDIR)/libllll.a \
	  $(DESTDIR)$(LIBDIR)/libllll.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	  $(DESTDIR)$(LIBDIR)/libllll.so $(DESTDIR)$(PKGCONFIGDIR)/llll.pc
	rm -f $(addprefix $(DESTDIR)$(MANDIR)/man3/,$(notdir $(MANPAGES)) $(addsuffix .3,$(FUNCS)))

# Checks that the man pages name (NAME) and declare (SYNOPSIS) exactly the
# functions of llll.h, installs into a temporary DESTDIR, then builds
# t/smoke.c against it with pkg-config, fully static, runs it, shows a man
# page, and uninstalls.
test-install: all
	@hdr=$$(printf '%s\n' $(FUNCS) | sort -u); \
	named=$$(sed -n '/^\.SH NAME/,/^\.SH [^N]/p' man/*.3 | grep -o 'llll_[a-z_]*' | sort -u); \
	declared=$$(sed -n '/^\.SH SYNOPSIS/,/^\.SH [^S]/p' man/*.3 | grep -v typedef | grep -o 'llll_[a-z_]*([a-z]' | sed 's/(.//' | sort -u); \
	for w in named declared; do \
	  eval "m=\$$$$w"; \
	  only_h=$$(printf '%s\n' "$$hdr" | grep -vxF "$$m" || true); \
	  only_m=$$(printf '%s\n' "$$m" | grep -vxF "$$hdr" || true); \
	  [ -z "$$only_h" ] || { echo "test-install: in llll.h but not $$w in a man page:" $$only_h; exit 1; }; \
	  [ -z "$$only_m" ] || { echo "test-install: $$w in a man page but not in llll.h:" $$only_m; exit 1; }; \
	done; \
	echo "test-install: the man pages name and declare the $$(printf '%s\n' "$$hdr" | wc -l) functions of llll.h, no more"
	@bad=$$(awk '/\/\*/ { c = ""; inc = 1 } inc { c = c $$0 } /\*\// { inc = 0 } \
	  /^[a-z][a-z_ ]*[ *]llll_[a-z_]*\(/ && !/^typedef/ { match($$0, /llll_[a-z_]*\(/); f = substr($$0, RSTART, RLENGTH - 1); \
	    if (c !~ /Thread-safety/) print f " (no Thread-safety in llll.h)"; \
	    if (/^int / && c !~ /[Ee]rrors/) print f " (no errors in llll.h)" }' llll.h); \
	for sec in ERRORS 'THREAD SAFETY'; do \
	  text=$$(sed -n "/^\.SH $$sec\$$/,/^\.SH /p" man/*.3); \
	  for f in $(FUNCS); do \
	    printf '%s\n' "$$text" | grep -Eq "(^|[^a-z_])$$f([^a-z_]|\$$)" || bad="$$bad $$f (not in a man page's $$sec)"; \
	  done; \
	done; \
	[ -z "$$bad" ] || { echo "test-install: errors or thread-safety undocumented:" $$bad; exit 1; }; \
	echo "test-install: llll.h and the man pages give every function's errors and thread-safety"
	@set -e; d=$$(mktemp -d); trap 'rm -rf "$$d"' EXIT; \
	$(MAKE) --no-print-directory -s install DESTDIR="$$d" PREFIX=/usr; \
	flags=$$(PKG_CONFIG_PATH="$$d/usr/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$$d" $(PKG_CONFIG) --static --cflags --libs llll); \
	echo "test-install: cc t/smoke.c $$flags -static"; \
	$(CC) -std=c11 $(WARN) $(CFLAGS) -o "$$d/smoke" t/smoke.c $$flags -static; \
	"$$d/smoke"; \
	if command -v man >/dev/null; then \
	  for page in llll llll_proc_start llll_sbc_recv llll_instance_fork llll_pool_call llll_gen_get; do \
	    MANWIDTH=80 man -M "$$d/usr/share/man" -P cat $$page 2>&1 | grep -q "$$page" || \
	      { echo "test-install: 'man $$page' does not show it"; exit 1; }; \
	  done; \
	  echo "test-install: man pages found for the overview and each area"; \
	else echo "test-install: no 'man' on this machine: man pages not checked"; fi; \
	$(MAKE) --no-print-directory -s uninstall DESTDIR="$$d" PREFIX=/usr; \
	left=$$(find "$$d/usr" -type f -o -type l); \
	if [ -n "$$left" ]; then echo "test-install: uninstall left $$left"; exit 1; fi; \
	echo "test-install: passed"

# Copies llll.h and the four sources into a temporary folder and builds them
# the way a vendoring project would: one cc line, no configuration.
test-vendor:
	@d=$$(mktemp -d) && trap 'rm -rf "$$d"' EXIT && \
	cp llll.h $(SRCS) t/smoke.c "$$d" && cd "$$d" && \
	echo "test-vendor: cc -std=c11 -pthread -c $(SRCS)" && \
	$(CC) -std=c11 -pthread $(WARN) -Werror -c $(SRCS) && \
	$(CC) -std=c11 -pthread -o smoke smoke.c $(SRCS:.c=.o) && ./smoke && echo "test-vendor: passed"

# Builds the library with musl-gcc and links t/smoke.c fully static.
musl:
	$(MAKE) --no-print-directory all B=build/musl CC=musl-gcc CFLAGS="-O2 -Werror"
	musl-gcc -std=c11 $(WARN) -Werror -static -I. -o build/musl/smoke t/smoke.c build/musl/libllll.a
	file build/musl/smoke 2>/dev/null || true
	build/musl/smoke

# Footprint: text size of the library built with -Os.
size:
	@$(MAKE) --no-print-directory -s B=build/os CFLAGS="-Os" build/os/libllll.a
	@size build/os/libllll.a | awk 'NR==1 {print} NR>1 {print; t += $$1} END {printf "total text: %d bytes\n", t}'

# ---------------------------------------------------------------- remote
# Pools whose workers run through a real OpenSSH server, started for the run
# on 127.0.0.1 with temporary keys and configuration (t/remote/with_sshd;
# needs Debian's openssh-server). bench-remote measures the same pools.
.PHONY: test-remote bench-remote
$(B)/t/remote_run: t/main.c t/remote/test_remote.c t/t.h t/t_hosts.h $(LIB_A) $(wildcard $(CHECK_MK)) | $(B)/.dirs
	$(CC) $(ALL_CFLAGS) $(CHECK_CFLAGS) -I. -It -o $@ t/main.c t/remote/test_remote.c $(ALL_LDFLAGS) $(LIB_A) $(CHECK_LIBS) $(LDLIBS)

$(B)/t/remote_bench: t/remote/bench_remote.c bench/bench.h $(LIB_A) | $(B)/.dirs
	$(CC) $(ALL_CFLAGS) -I. -o $@ $< $(ALL_LDFLAGS) $(LIB_A) $(LDLIBS)

test-remote: check-dep
	@$(MAKE) --no-print-directory $(B)/t/remote_run $(B)/t/helper_remote_worker
	LLLL_T_DIR=$(B)/t t/remote/with_sshd $(B)/t/remote_run

bench-remote:
	@$(MAKE) --no-print-directory $(B)/t/remote_bench $(B)/t/helper_remote_worker
	t/remote/with_sshd $(B)/t/remote_bench $(B)/t/helper_remote_worker
