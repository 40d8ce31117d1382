# moat: a C host embedding Lua 5.4, C modules in src/<name>.c exposed as moat.c.<name>.
PREFIX   ?= /usr/local
SITE_DIR ?= /etc/moat
CC       ?= cc
BUILD    ?= build

LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
OPT        ?= -O2 -g
override CFLAGS += $(OPT) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -fPIC $(LUA_CFLAGS) \
              -DMOAT_SITE_DIR='"$(SITE_DIR)"' -DMOAT_VERSION='"$(VERSION)"'
LDLIBS     := -lyaml -ljansson -lsodium
VERSION    := 0.1.0

MODS     := $(filter-out main,$(basename $(notdir $(wildcard src/*.c))))
MOD_OBJS := $(MODS:%=$(BUILD)/obj/%.o)
MOD_SOS  := $(MODS:%=$(BUILD)/lib/moat/c/%.so)

DEB_PKGS := build-essential pkg-config lua5.4 liblua5.4-dev lua-busted lua-filesystem \
            libyaml-dev libjansson-dev libsodium-dev luarocks lua-check cppcheck \
            bubblewrap slirp4netns busybox-static docker.io podman runc uidmap clang \
            libclang-rt-14-dev valgrind zsh fish man-db
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all test check bench deps install rock-install clean asan test-asan valgrind fuzz fuzz-replay lint
all: $(BUILD)/moat $(MOD_SOS) $(BUILD)/moat-init

$(BUILD)/modlist.h: Makefile $(wildcard src/*.c) | $(BUILD)/obj
	@printf 'MOAT_MOD(%s)\n' $(MODS) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj $(BUILD)/lib/moat/c:
	mkdir -p $@

$(BUILD)/obj/%.o: src/%.c src/moat.h | $(BUILD)/obj
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/main.o: src/main.c src/moat.h $(BUILD)/modlist.h | $(BUILD)/obj
	$(CC) $(CFLAGS) -I$(BUILD) -c -o $@ $<

# The built-in Lua goes into the binary precompiled (tools/embed.c dumps each module with the
# liblua moat links); the sources are still installed, for listings, reading and the fallback.
LUA_SRCS := $(shell cd lua && find moat -name '*.lua' | LC_ALL=C sort)
$(BUILD)/embed: tools/embed.c tools/thin.c tools/thin.h | $(BUILD)/obj
	$(CC) -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(LUA_CFLAGS) -o $@ tools/embed.c tools/thin.c $(LUA_LIBS) -lm -ldl

$(BUILD)/chunks.c: $(BUILD)/embed $(LUA_SRCS:%=lua/%)
	$(BUILD)/embed $@ lua $(LUA_SRCS)

$(BUILD)/obj/chunks.o: $(BUILD)/chunks.c
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/moat: $(BUILD)/obj/main.o $(MOD_OBJS) $(BUILD)/obj/chunks.o
	$(CC) $(LDFLAGS) -o $@ $^ $(LUA_LIBS) $(LDLIBS) -lm -ldl

$(BUILD)/lib/moat/c/%.so: $(BUILD)/obj/%.o | $(BUILD)/lib/moat/c
	$(CC) $(LDFLAGS) -shared -o $@ $< $(LDLIBS)

# moat-init, the helper bind-mounted into containers (and wrapped around bwrap): its own
# program, not a Lua module; static where libc's static archive exists, so that it runs in
# any image (a dynamic one runs only in images with a compatible libc).
INIT_STATIC := $(shell printf 'int main(void){return 0;}' | $(CC) -static -x c -o /dev/null - 2>/dev/null && echo -static)
$(BUILD)/moat-init: init/moat-init.c init/reap.c init/reap.h | $(BUILD)/obj
	$(CC) -O2 -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror $(INIT_STATIC) -o $@ init/moat-init.c init/reap.c

test: all
	spec/run

# The quick loop: every spec but those named below, in well under a minute. A spec joins by
# being a spec/*_spec.lua; it stays out only if it starts real daemons (integration_*), runs
# the suite again (sanitizers), builds and installs copies (install), or drives moat through
# timed kill and fault scenarios (leaks, faults), or runs `make bench` (bench). `make test` runs
# all of them.
SPECS       := $(wildcard spec/*_spec.lua)
SLOW_SPECS  := $(wildcard spec/integration_*_spec.lua) spec/sanitizers_spec.lua spec/install_spec.lua \
               spec/leaks_spec.lua spec/faults_spec.lua spec/bench_spec.lua
CHECK_SPECS := $(filter-out $(SLOW_SPECS),$(SPECS))
check: all
	spec/run $(CHECK_SPECS)

bench: all
	spec/bench/run
	lua5.4 spec/bench/overhead.lua

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	        LDFLAGS="-fsanitize=address,undefined"

# The whole suite against build-asan. lua5.4 is not instrumented, so spec/asan/lua5.4 (first
# on PATH) preloads the ASan runtime into every lua5.4 process, and only into those. It sits
# in build-asan/lua/bin beside an include/ with Lua's headers, so luarocks, which derives
# its Lua prefix from the interpreter on PATH, still finds them. Leak checking is off because
# the interpreter exits without freeing its state (valgrind covers leaks); disable_coredump=0
# keeps the core limits the specs set themselves (ASan would zero them at start). Reports go to
# files under build-asan/reports; any report fails the target. sanitizers_spec.lua, which runs
# this target, stays out.
ASAN_REPORTS := $(CURDIR)/build-asan/reports
LUA_INCDIR   := $(or $(patsubst -I%,%,$(firstword $(filter -I%,$(LUA_CFLAGS)))),/usr/include/lua5.4)
build-asan/unpreload.so: spec/asan/unpreload.c
	mkdir -p build-asan && $(CC) -O2 -Wall -Wextra -Werror -shared -fPIC -o $@ $<

build-asan/lua/bin/lua5.4: spec/asan/lua5.4
	mkdir -p build-asan/lua/bin
	ln -sfn $(LUA_INCDIR) build-asan/lua/include
	ln -sf $(CURDIR)/spec/asan/lua5.4 $@

test-asan: asan build-asan/unpreload.so build-asan/lua/bin/lua5.4
	rm -rf $(ASAN_REPORTS) && mkdir -p $(ASAN_REPORTS)
	MOAT_ASAN_LUA=$$(command -v lua5.4) MOAT_ASAN_RUNTIME=$$($(CC) -print-file-name=libasan.so) \
	MOAT_ASAN_UNPRELOAD=$(CURDIR)/build-asan/unpreload.so PATH=$(CURDIR)/build-asan/lua/bin:$$PATH \
	MOAT_BUILD=$(CURDIR)/build-asan \
	ASAN_OPTIONS=detect_leaks=0:disable_coredump=0:log_path=$(ASAN_REPORTS)/asan \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:log_path=$(ASAN_REPORTS)/ubsan \
	  spec/run $(filter-out spec/sanitizers_spec.lua,$(SPECS)); status=$$?; \
	if [ -n "$$(ls -A $(ASAN_REPORTS))" ]; then cat $(ASAN_REPORTS)/*; echo "sanitizer findings above"; exit 1; fi; \
	exit $$status

# memcheck over the C module specs; a definite leak or any memory error fails.
VALGRIND := valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
            --show-leak-kinds=definite --trace-children=no
valgrind: all
	$(VALGRIND) lua5.4 $$(command -v busted) -o TAP $(wildcard spec/c_*_spec.lua)

# libFuzzer targets: spec/fuzz/fuzz_<name>.c with seeds in spec/fuzz/corpus/<name>/. New
# inputs go to build-fuzz/corpus/<name>, crashes to build-fuzz/crash-<name>-*.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_JOBS    ?= 1
FUZZ_TARGETS := $(patsubst spec/fuzz/fuzz_%.c,%,$(wildcard spec/fuzz/fuzz_*.c))
FUZZ_BINS    := $(FUZZ_TARGETS:%=build-fuzz/fuzz_%)
FUZZ_OBJS    := $(MODS:%=build-fuzz/obj/%.o)
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS  := -O1 -g -fno-omit-frame-pointer $(FUZZ_SAN) -std=c11 -D_GNU_SOURCE -Wall -Wextra \
                $(LUA_CFLAGS) -DMOAT_SITE_DIR='"$(SITE_DIR)"' -DMOAT_VERSION='"$(VERSION)"'

.SECONDARY: $(FUZZ_OBJS)
build-fuzz/obj build-fuzz/corpus:
	mkdir -p $@

build-fuzz/modlist.h: Makefile $(wildcard src/*.c) | build-fuzz/obj
	@printf 'MOAT_MOD(%s)\n' $(MODS) > $@.tmp && mv $@.tmp $@

build-fuzz/obj/%.o: src/%.c src/moat.h | build-fuzz/obj
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

build-fuzz/fuzz_%: spec/fuzz/fuzz_%.c spec/fuzz/harness.h build-fuzz/modlist.h $(FUZZ_OBJS)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -Ibuild-fuzz -DFUZZ_ROOT='"$(CURDIR)"' \
	  -o $@ $< $(FUZZ_OBJS) $(LUA_LIBS) $(LDLIBS) -lm -ldl

fuzz: $(FUZZ_BINS) | build-fuzz/corpus
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  build-fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	    -max_len=4096 -print_final_stats=1 -artifact_prefix=build-fuzz/crash-$$t- \
	    $$( [ -f spec/fuzz/$$t.dict ] && echo -dict=spec/fuzz/$$t.dict ) \
	    build-fuzz/corpus/$$t spec/fuzz/corpus/$$t || exit 1; \
	done

# Runs every corpus file once through the instrumented targets (make test replays them
# through the normal build).
fuzz-replay: $(FUZZ_BINS)
	@for t in $(FUZZ_TARGETS); do \
	  if build-fuzz/fuzz_$$t -runs=0 -artifact_prefix=build-fuzz/replay-$$t- spec/fuzz/corpus/$$t > build-fuzz/replay-$$t.log 2>&1; then \
	    echo "fuzz_$$t: $$(ls spec/fuzz/corpus/$$t | wc -l) corpus files replayed"; \
	  else cat build-fuzz/replay-$$t.log; exit 1; fi; \
	done

lint:
	spec/run spec/lint_spec.lua

deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/moat/lua
	install -m 0755 $(BUILD)/moat $(DESTDIR)$(PREFIX)/bin/moat
	install -m 0755 $(BUILD)/moat-init $(DESTDIR)$(PREFIX)/bin/moat-init
	cd lua && find moat -name '*.lua' -exec install -D -m 0644 {} $(DESTDIR)$(PREFIX)/share/moat/lua/{} \;
	@# The man page and completions come from the installed moat, away from any user or site Lua.
	install -d $(DESTDIR)$(PREFIX)/share/man/man1 $(DESTDIR)$(PREFIX)/share/bash-completion/completions \
	  $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	m="env MOAT_LUA_PATH= XDG_CONFIG_HOME=/nonexistent MOAT_SITE_DIR=/nonexistent $(DESTDIR)$(PREFIX)/bin/moat" && \
	  $$m help --man > $(DESTDIR)$(PREFIX)/share/man/man1/moat.1 && \
	  $$m completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/moat && \
	  $$m completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_moat && \
	  $$m completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/moat.fish

# Used by `luarocks make rocks/moat-scm-1.rockspec`: Lua layer to LUADIR, C modules to LIBDIR.
rock-install: all
	cd lua && find moat -name '*.lua' -exec install -D -m 0644 {} $(LUADIR)/{} \;
	install -d $(LIBDIR)/moat/c
	install -m 0755 $(MOD_SOS) $(LIBDIR)/moat/c/
	install -D -m 0755 $(BUILD)/moat $(BINDIR)/moat
	install -D -m 0755 $(BUILD)/moat-init $(BINDIR)/moat-init

clean:
	rm -rf build build-asan build-fuzz
