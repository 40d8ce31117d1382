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
            bubblewrap busybox-static docker.io podman runc uidmap clang
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all test bench deps install rock-install clean asan
all: $(BUILD)/moat $(MOD_SOS)

$(BUILD)/modlist.h: Makefile $(wildcard src/*.c) | $(BUILD)/obj
	@printf 'MOAT_MOD(%s)\n' $(MODS) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj $(BUILD)/lib/moat/c:
	mkdir -p $@

$(BUILD)/obj/%.o: src/%.c src/moat.h | $(BUILD)/obj
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/obj/main.o: src/main.c src/moat.h $(BUILD)/modlist.h | $(BUILD)/obj
	$(CC) $(CFLAGS) -I$(BUILD) -c -o $@ $<

$(BUILD)/moat: $(BUILD)/obj/main.o $(MOD_OBJS)
	$(CC) $(LDFLAGS) -o $@ $^ $(LUA_LIBS) $(LDLIBS) -lm -ldl

$(BUILD)/lib/moat/c/%.so: $(BUILD)/obj/%.o | $(BUILD)/lib/moat/c
	$(CC) $(LDFLAGS) -shared -o $@ $< $(LDLIBS)

test: all
	spec/run

bench: all
	spec/bench/run
	lua5.4 spec/bench/overhead.lua

asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer" \
	        LDFLAGS="-fsanitize=address,undefined"

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
	cd lua && find moat -name '*.lua' -exec install -D -m 0644 {} $(DESTDIR)$(PREFIX)/share/moat/lua/{} \;

# Used by `luarocks make rocks/moat-scm-1.rockspec`: Lua layer to LUADIR, C modules to LIBDIR.
rock-install: all
	cd lua && find moat -name '*.lua' -exec install -D -m 0644 {} $(LUADIR)/{} \;
	install -d $(LIBDIR)/moat/c
	install -m 0755 $(MOD_SOS) $(LIBDIR)/moat/c/
	install -D -m 0755 $(BUILD)/moat $(BINDIR)/moat

clean:
	rm -rf build build-asan
