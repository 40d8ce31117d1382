/* The moat host: a Lua 5.4 state with the C modules preloaded, running lua/moat/boot.lua. */
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moat.h"
#include "modlist.h"
#undef MOAT_MOD

#ifndef MOAT_LUA_DIR
#define MOAT_LUA_DIR ""
#endif

static const luaL_Reg preloads[] = {
#define MOAT_MOD(name) { "moat.c." #name, luaopen_moat_c_##name },
#include "modlist.h"
#undef MOAT_MOD
    { NULL, NULL }
};

/* The built-in Lua, compiled at build time by tools/embed.c into build/chunks.c (sorted by
 * name). These chunks are the only bytecode moat ever loads: nothing is read as bytecode
 * from any directory. */
struct moat_chunk { const char *name, *file; const unsigned char *data; size_t len; };
extern const struct moat_chunk moat_chunks[];
extern const size_t moat_nchunks;

static char lua_dir[PATH_MAX];    /* the built-in directory, for sources and listings */
static int dev_tree;              /* lua_dir is the source tree beside build/ */
static struct timespec exe_mtime; /* in a source tree, a source newer than this wins */

static int by_name(const void *key, const void *elem)
{
    return strcmp(key, ((const struct moat_chunk *)elem)->name);
}

/* The embedded chunk of module `name`, or NULL. Run from the source tree, a module whose
 * source changed after the binary was linked is not taken from the binary (its source loads
 * instead), so an edit counts before the next `make`. */
static const struct moat_chunk *chunk(const char *name)
{
    const struct moat_chunk *c = bsearch(name, moat_chunks, moat_nchunks, sizeof *c, by_name);
    if (c == NULL || !dev_tree)
        return c;
    char path[PATH_MAX];
    struct stat st;
    int n = snprintf(path, sizeof path, "%s/%s", lua_dir, c->file);
    if (n < 0 || (size_t)n >= sizeof path || stat(path, &st) != 0)
        return c;
    if (st.st_mtim.tv_sec > exe_mtime.tv_sec
        || (st.st_mtim.tv_sec == exe_mtime.tv_sec && st.st_mtim.tv_nsec > exe_mtime.tv_nsec))
        return NULL;
    return c;
}

/* has_chunk(name) -> true when module `name` can load from the binary. */
static int l_has_chunk(lua_State *L)
{
    lua_pushboolean(L, chunk(luaL_checkstring(L, 1)) != NULL);
    return 1;
}

/* load_chunk(name) -> function | nil, message: the embedded chunk of module `name`. */
static int l_load_chunk(lua_State *L)
{
    const struct moat_chunk *c = chunk(luaL_checkstring(L, 1));
    if (c == NULL) {
        luaL_pushfail(L);
        lua_pushfstring(L, "no built-in chunk %s", lua_tostring(L, 1));
        return 2;
    }
    if (luaL_loadbufferx(L, (const char *)c->data, c->len, c->file, "b") != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    return 1;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL)
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    luaL_traceback(L, L, msg, 1);
    return 1;
}

static int exists(const char *dir)
{
    char path[PATH_MAX];
    int n = snprintf(path, sizeof path, "%s/moat/boot.lua", dir);
    return n > 0 && (size_t)n < sizeof path && access(path, R_OK) == 0;
}

/* The built-in Lua lives beside the binary: <prefix>/share/moat/lua when installed,
 * <repo>/lua when run from the build tree, <tree>/share/lua/5.4 from a luarocks tree. */
static const char *builtin_dir(char *buf, size_t len)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            static const char *const rel[] = { "../share/moat/lua", "../lua", "../share/lua/5.4" };
            for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
                int m = snprintf(buf, len, "%s/%s", exe, rel[i]);
                if (m > 0 && (size_t)m < len && exists(buf)) {
                    struct stat st;
                    *slash = '/';
                    dev_tree = i == 1 && stat(exe, &st) == 0;
                    if (dev_tree)
                        exe_mtime = st.st_mtim;
                    return buf;
                }
            }
        }
    }
    if (MOAT_LUA_DIR[0] && exists(MOAT_LUA_DIR))
        return MOAT_LUA_DIR;
    return NULL;
}

/* A Lua state with the standard libraries and the C modules in package.preload. */
static lua_State *new_state(void)
{
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return NULL;
    /* LUA_PATH / LUA_CPATH must not add module directories outside moat's search order. */
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    for (const luaL_Reg *r = preloads; r->name; r++) {
        lua_pushcfunction(L, r->func);
        lua_setfield(L, -2, r->name);
    }
    lua_pop(L, 1);
    return L;
}

/* A closed 0, 1 or 2 gets /dev/null, so the next file moat opens (the audit log, a trust
 * record) cannot become its stdout or stderr and receive its messages. */
static int fill_stdio(void)
{
    for (int fd = 0; fd <= 2; fd++) {
        if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
            continue;
        int nfd = open("/dev/null", O_RDWR);
        if (nfd < 0)
            return -1;
        if (nfd != fd) { /* lower fds are open by now, so this would be a kernel surprise */
            close(nfd);
            return -1;
        }
    }
    return 0;
}

/* Pushes boot.lua's chunk: the embedded one, else the source (text only). */
static int load_boot(lua_State *L)
{
    const struct moat_chunk *c = chunk("moat.boot");
    if (c)
        return luaL_loadbufferx(L, (const char *)c->data, c->len, c->file, "b");
    char boot[PATH_MAX];
    int n = snprintf(boot, sizeof boot, "%s/moat/boot.lua", lua_dir);
    if (n < 0 || (size_t)n >= sizeof boot) {
        lua_pushliteral(L, "the built-in Lua directory's path is too long");
        return LUA_ERRFILE;
    }
    return luaL_loadfilex(L, boot, "t");
}

/* Pushes what boot.lua gets first: where the built-in Lua is, the precompiled chunks, the
 * site directory and the version. */
static void push_info(lua_State *L)
{
    lua_createtable(L, 0, 5);
    lua_pushstring(L, lua_dir);
    lua_setfield(L, -2, "lua_dir");
    lua_pushcfunction(L, l_has_chunk);
    lua_setfield(L, -2, "has_chunk");
    lua_pushcfunction(L, l_load_chunk);
    lua_setfield(L, -2, "load_chunk");
    lua_pushstring(L, MOAT_SITE_DIR);
    lua_setfield(L, -2, "site_dir");
    lua_pushstring(L, MOAT_VERSION);
    lua_setfield(L, -2, "version");
}

int main(int argc, char **argv)
{
    if (fill_stdio() != 0)
        return 71;
    /* The relay turns output into strings of up to a MiB that die at once: taken from the
     * heap and kept there, they reuse the same pages, where mmap and trimming would fault
     * every page in anew for each chunk (a third of the masked relay's time). */
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 8 << 20);
    char buf[PATH_MAX];
    const char *dir = builtin_dir(buf, sizeof buf);
    if (dir == NULL) {
        fprintf(stderr, "moat: cannot find the built-in Lua modules (moat/boot.lua)\n");
        return 70;
    }
    if (!realpath(dir, lua_dir) && snprintf(lua_dir, sizeof lua_dir, "%s", dir) >= (int)sizeof lua_dir) {
        fprintf(stderr, "moat: the built-in Lua directory's path is too long\n");
        return 70;
    }

    lua_State *L = new_state();
    if (L == NULL) {
        fprintf(stderr, "moat: out of memory\n");
        return 70;
    }
    lua_pushcfunction(L, traceback);
    if (load_boot(L) != LUA_OK) {
        fprintf(stderr, "moat: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 70;
    }
    push_info(L);
    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    int status = 70;
    if (lua_pcall(L, 2, 1, 1) != LUA_OK) {
        fprintf(stderr, "moat: internal error: %s\n", lua_tostring(L, -1));
    } else if (lua_isinteger(L, -1)) {
        status = (int)lua_tointeger(L, -1);
    } else {
        status = 0;
    }
    /* moat exits without freeing the Lua state: freeing it object by object was a tenth of a
     * run's CPU, and the kernel takes the memory back at once. What the finalizers would do
     * that matters is done here: children of open handles are ended (the reaper, which must
     * outlive moat to clean up, excepted), their buffers wiped.
     * exit() flushes what Lua's io library still buffers. */
    fflush(stdout);
    moat_proc_end_all();
    return status;
}
