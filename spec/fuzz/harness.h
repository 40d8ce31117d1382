/* The libFuzzer driver shared by every spec/fuzz/fuzz_<name>.c: an embedded Lua 5.4 with the
 * C modules (compiled from src/ with coverage and sanitizers) in package.preload runs
 * check(data) of spec/fuzz/targets/<name>.lua, the same function the busted replay spec
 * runs. A Lua error is a finding and aborts. Lua itself is not instrumented, so a line hook
 * feeds edges between Lua lines to libFuzzer as extra counters. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#ifndef FUZZ_TARGET
#error "define FUZZ_TARGET before including harness.h"
#endif
#ifndef FUZZ_ROOT
#define FUZZ_ROOT "."
#endif

#define MOAT_MOD(name) int luaopen_moat_c_##name(lua_State *L);
#include "modlist.h"
#undef MOAT_MOD

#define EDGES (1u << 16)

__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t lua_edges[EDGES];

static lua_State *fuzz_L;
static int check_ref = LUA_NOREF;
static unsigned long runs;

static void line_hook(lua_State *L, lua_Debug *ar)
{
    static uintptr_t prev;
    if (!lua_getinfo(L, "S", ar))
        return;
    uintptr_t here = (uintptr_t)ar->source * 0x9E3779B1u ^ (uintptr_t)ar->currentline * 0x85EBCA6Bu;
    lua_edges[(here ^ prev) % EDGES]++;
    prev = here >> 1;
}

static int traceback(lua_State *L)
{
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

static void die(const char *what)
{
    fprintf(stderr, "fuzz_%s: %s\n", FUZZ_TARGET, what);
    abort();
}

static void cleanup(void)
{
    if (fuzz_L == NULL)
        return;
    lua_getglobal(fuzz_L, "require");
    lua_pushliteral(fuzz_L, "fuzz.targets." FUZZ_TARGET);
    if (lua_pcall(fuzz_L, 1, 1, 0) == LUA_OK && lua_getfield(fuzz_L, -1, "cleanup") == LUA_TFUNCTION)
        lua_pcall(fuzz_L, 0, 0, 0);
    lua_close(fuzz_L);
    fuzz_L = NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    lua_State *L = fuzz_L = luaL_newstate();
    if (L == NULL)
        die("cannot create a Lua state");
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
#define MOAT_MOD(name)                                   \
    lua_pushcfunction(L, luaopen_moat_c_##name);         \
    lua_setfield(L, -2, "moat.c." #name);
#include "modlist.h"
#undef MOAT_MOD
    lua_pop(L, 1);
    lua_pushcfunction(L, traceback);
    /* FUZZ_LUA_PATH (templates, ';'-separated) goes first: a way to keep fuzzing past a
     * known bug with a locally patched module. */
    int ok = luaL_dostring(L, "local first = os.getenv('FUZZ_LUA_PATH')\n"
                              "package.path = (first and first .. ';' or '') .. '" FUZZ_ROOT
                              "/lua/?.lua;" FUZZ_ROOT "/spec/?.lua;' .. package.path\n"
                              "return require('fuzz.targets." FUZZ_TARGET "').check") == LUA_OK;
    if (!ok || !lua_isfunction(L, -1))
        die(lua_tostring(L, -1) ? lua_tostring(L, -1) : "the target has no check function");
    check_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    lua_sethook(L, line_hook, LUA_MASKLINE, 0);
    atexit(cleanup);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = fuzz_L;
    lua_pushcfunction(L, traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, check_ref);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 1) != LUA_OK)
        die(lua_tostring(L, -1) ? lua_tostring(L, -1) : "check raised a non-string error");
    lua_settop(L, 0);
    /* Collect now and then, so __gc paths run under the sanitizers and memory stays flat. */
    if (++runs % 64 == 0)
        lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
