# beat — build, test, demo. Dependencies are Debian's packages; `make deps`
# installs the missing ones with apt-get (run as root, or with sudo).

PREFIX   ?= /usr/local
CC       ?= cc
PKGS     := lua5.4 libuv libgit2
DEB_PKGS := pkg-config liblua5.4-dev lua5.4 libuv1-dev libgit2-dev zlib1g-dev lua-cjson-dev \
            lua-busted libreadline-dev git tmux libxml2-utils slurm-wlm munge
WARN     := -Wall -Wextra -Wshadow -Wundef -Wmissing-prototypes -Wstrict-prototypes -Werror
CFLAGS   ?= -O2 -g
BEAT_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -Iengine -Ibuild
# lua-cjson is linked statically, from Debian's liblua5.4-cjson.a; so are
# readline and its terminfo (libreadline-dev's and libncurses-dev's archives),
# which only `beat repl` uses: as shared libraries every start loaded them
BEAT_LIBS   = -l:liblua5.4-cjson.a $(shell pkg-config --libs $(PKGS) 2>/dev/null) -l:libreadline.a -l:libtinfo.a

BUILD    ?= build
# engine/*.c and engine/git/*.c build to $(BUILD)/*.o and $(BUILD)/git/*.o;
# -MMD writes each object's header dependencies beside it.
C_SRC    := $(wildcard engine/*.c engine/*/*.c)
LUA_SRC  := $(sort $(shell find lua strategies -name '*.lua' 2>/dev/null))
OBJ      := $(patsubst engine/%.c,$(BUILD)/%.o,$(C_SRC)) $(BUILD)/embedded.o
# the embedded shim (below), linked into build/beat as bytes
OBJ      += $(BUILD)/shim_blob.o
# libgit2 and what it links (mbedTLS, libssh2 with OpenSSL's libcrypto,
# http-parser, PCRE2, zlib) are linked statically, from the archives of
# Debian's -dev packages that libgit2-dev depends on: loading them as ~17
# shared libraries cost ~3 ms at every `beat loop`, mostly the dynamic
# loader relocating them. Kerberos (GSSAPI), which Debian ships without an
# archive, is not linked: gss.c loads it with dlopen when libgit2 first calls
# it (only a remote would). While libgit2 initialises, init.c leaves out what
# only a remote would use: the CA bundle, libssh2's start, HAVEGE entropy
# (--wrap; see there).
GIT_LIBS := -l:libgit2.a -l:libmbedtls.a -l:libmbedx509.a -l:libmbedcrypto.a -l:libhttp_parser.a \
            -l:libssh2.a -l:libcrypto.a -l:libpcre2-8.a -l:libz.a -lrt -ldl -pthread \
            -Wl,--wrap=mbedtls_x509_crt_parse_file -Wl,--wrap=libssh2_init \
            -Wl,--wrap=mbedtls_havege_init -Wl,--wrap=mbedtls_ctr_drbg_seed
BEAT_LIBS := $(filter-out -lgit2,$(BEAT_LIBS)) $(GIT_LIBS)
BUSTED   := /usr/bin/busted
SPECS    ?= tests
# make test leaves out the torture family (tests/torture, tag #torture): make torture
TAGS     ?= --exclude-tags=torture

.PHONY: all deps test torture asan bench demo install clean FORCE

all: $(BUILD)/beat

# Installs the Debian packages that are missing, and node/npm (for the test
# that drives the real Claude Code CLI) when no node is on the PATH — a
# nodesource node already brings npm. Non-interactive.
deps:
	@missing=""; \
	for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "make deps: installing$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BUILD)/beat: $(OBJ) | deps
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(OBJ) $(BEAT_LIBS)

$(BUILD)/%.o: engine/%.c | $(BUILD) deps
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(BEAT_CFLAGS) -MMD -MP -c -o $@ $<

-include $(OBJ:.o=.d)

$(BUILD)/embedded.o: $(BUILD)/embedded.c
	$(CC) $(CFLAGS) $(BEAT_CFLAGS) -c -o $@ $<

# Every Lua file under lua/ and strategies/, compiled to bytecode (with its
# debug information) by tools/embed.c, which links the Lua library beat
# links; a syntax error fails the build. embedded.list holds the file list,
# rewritten only when it changes, so adding or removing a file rebuilds too.
$(BUILD)/embedded.c: $(BUILD)/embed $(LUA_SRC) $(BUILD)/embedded.list
	$(BUILD)/embed $(LUA_SRC) > $@.tmp && mv $@.tmp $@

$(BUILD)/embedded.list: FORCE | $(BUILD)
	@echo "$(LUA_SRC)" | cmp -s - $@ || echo "$(LUA_SRC)" > $@

FORCE:

# Never sanitized (make asan): it runs at build time only.
$(BUILD)/embed: tools/embed.c | $(BUILD) deps
	$(CC) -O1 -std=c11 $(WARN) $(shell pkg-config --cflags lua5.4 2>/dev/null) -o $@ $< \
		$(shell pkg-config --libs lua5.4 2>/dev/null)

# The shim every command starts through (engine/shim.c + proctree.c) as a
# helper of its own that links only a libc, statically: musl's (musl-tools)
# when there, whose start-up is a fraction of glibc's (glibc probes the CPU
# with CPUID at every start, which traps to the hypervisor on a VM), else
# glibc's libc.a, else glibc dynamically. It is carried inside build/beat as
# a byte array and executed from a memfd (engine/exec.c), so build/beat
# stays one copyable file. Never sanitized: ASan cannot link statically.
# -z noseparate-code: two segments to map instead of four, at every command.
DEB_PKGS    += musl-tools
SHIM_SRC    := engine/shim.c engine/proctree.c
SHIM_CFLAGS := -O2 -std=c11 -D_GNU_SOURCE $(WARN) -DBEAT_SHIM_STANDALONE
SHIM_CC     := $(shell command -v musl-gcc 2>/dev/null || echo $(CC))
SHIM_STATIC := $(if $(or $(findstring musl,$(SHIM_CC)),$(wildcard $(shell $(CC) -print-file-name=libc.a))),-static)
$(BUILD)/beat-shim: $(SHIM_SRC) engine/shim.h | $(BUILD)
	$(SHIM_CC) $(SHIM_CFLAGS) $(SHIM_STATIC) -s -Wl,-z,noseparate-code -o $@ $(SHIM_SRC)

$(BUILD)/shim_blob.c: $(BUILD)/beat-shim $(BUILD)/bin2c
	$(BUILD)/bin2c beat_shim_blob $(BUILD)/beat-shim > $@.tmp && mv $@.tmp $@

$(BUILD)/shim_blob.o: $(BUILD)/shim_blob.c engine/shim.h
	$(CC) $(CFLAGS) $(BEAT_CFLAGS) -c -o $@ $<

$(BUILD)/bin2c: tools/bin2c.c | $(BUILD)
	$(CC) -O1 -o $@ $<

$(BUILD):
	mkdir -p $(BUILD)

# Every spec runs inside the real runtime: busted is a Lua program and
# build/beat runs it like any recipe. The specs' temp dirs live in one
# directory, removed afterwards.
test: $(BUILD)/beat
	@sh tests/fixtures/install-claude.sh >/dev/null 2>&1 || true
	@sh tests/fixtures/mcp-install-sdk.sh >/dev/null 2>&1 || true
	@tmp=$$(mktemp -d /tmp/beat-tests-XXXXXX); \
	echo "BEAT_BIN=$(abspath $(BUILD)/beat) TMPDIR=$$tmp XDG_STATE_HOME=$$tmp/state $(BUILD)/beat run $(BUSTED) $(TAGS) $(SPECS)"; \
	BEAT_BIN=$(abspath $(BUILD)/beat) TMPDIR=$$tmp XDG_STATE_HOME=$$tmp/state $(BUILD)/beat run $(BUSTED) $(TAGS) $(SPECS); \
	rc=$$?; rm -rf $$tmp; exit $$rc

# Long trials of what must never lose work (kill -9, hostile agents, edits
# during evals, ...), each printing NAME: X/Y ok. BEAT_TORTURE_N sets the trials.
torture:
	@$(MAKE) --no-print-directory test SPECS=tests/torture TAGS=--tags=torture

# The whole suite again, on a build with AddressSanitizer and UBSan.
asan:
	$(MAKE) BUILD=build-asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" \
		LDFLAGS="-fsanitize=address,undefined" build-asan/beat
	@tmp=$$(mktemp -d /tmp/beat-tests-XXXXXX); \
	echo "ASAN_OPTIONS=... BEAT_BIN=$(abspath build-asan/beat) TMPDIR=$$tmp XDG_STATE_HOME=$$tmp/state build-asan/beat run $(BUSTED) $(TAGS) $(SPECS)"; \
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
		BEAT_BIN=$(abspath build-asan/beat) TMPDIR=$$tmp XDG_STATE_HOME=$$tmp/state build-asan/beat run $(BUSTED) $(TAGS) $(SPECS); \
	rc=$$?; rm -rf $$tmp; exit $$rc

# loop.lua first: the others delete the thousands of files they made when
# they end, and on ext4 without a journal (this VM's) files created in the
# next ~30 s are slow to create, which the loop's figures would measure.
BENCHES := tests/bench/loop.lua $(filter-out tests/bench/loop.lua,$(wildcard tests/bench/*.lua))
bench: $(BUILD)/beat
	@rc=0; for b in $(BENCHES); do echo "== $$b"; $(BUILD)/beat run $$b || rc=1; done; exit $$rc

demo: $(BUILD)/beat
	$(BUILD)/beat run recipes/tune-demo.lua

install: $(BUILD)/beat
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1
	install -m 755 $(BUILD)/beat $(DESTDIR)$(PREFIX)/bin/beat
	install -m 644 docs/beat.1 $(DESTDIR)$(PREFIX)/share/man/man1/beat.1

clean:
	rm -rf build build-asan
