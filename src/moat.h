/* Shared declarations of the C core: each src/<name>.c is the Lua module moat.c.<name>. */
#ifndef MOAT_H
#define MOAT_H

#include <errno.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/* The one way an expected failure reaches Lua: nil, message[, errno]. */
static inline int moat_fail(lua_State *L, const char *what, int err)
{
    lua_pushnil(L);
    if (err) {
        lua_pushfstring(L, "%s: %s", what, strerror(err));
        lua_pushinteger(L, err);
        return 3;
    }
    lua_pushstring(L, what);
    return 2;
}

#define MOAT_MOD(name) int luaopen_moat_c_##name(lua_State *L);

#endif
