/* moat.c.mask: a streaming matcher. It replaces every occurrence of any of the patterns it
 * is given in a byte stream, leftmost match first and the longest at a position, and holds
 * back only the bytes that could still be the start of a match. Bytes are held on content,
 * never on time, so a delayed write cannot leak a value. Which strings are patterns and what
 * replaces them is policy, decided in Lua (moat.scrub). */
#include <stdint.h>
#include <stdlib.h>

#include <sodium.h>

#include "moat.h"

#define MASKER_MT "moat.mask.masker"
#define MAX_TOTAL (16u << 20) /* bytes over all patterns; a node costs 26 bytes */

/* An Aho–Corasick automaton over all patterns plus a ring of undecided input. Node 0 is
 * the root. The input bytes still held are positions [pos, end) of the whole stream;
 * best[p % cap] is the longest complete match known to start at p. */
typedef struct {
    void *block;
    size_t block_size;
    uint32_t *fail;    /* longest proper suffix that is a node */
    uint32_t *depth;   /* length of the prefix a node stands for */
    uint32_t *child;   /* first child (0: none) */
    uint32_t *sibling; /* next child of the same parent */
    uint32_t *dict;    /* nearest proper suffix that is a whole pattern (0: none) */
    uint32_t *hold;    /* nearest suffix (self included) that has children */
    uint32_t *best;
    unsigned char *label;
    unsigned char *term; /* 1 where a pattern ends */
    unsigned char *ring;
    uint32_t root_next[256];
    /* Bit (a << 8 | b) is set when some pattern starts with the bytes a b, or is just a:
     * from the root, a byte whose pair with the next byte is clear starts no match. */
    uint64_t starts[1024];
    uint32_t nodes, cap, state;
    uint64_t pos, end;
} Masker;

static uint32_t find_child(const Masker *m, uint32_t s, unsigned char c)
{
    for (uint32_t t = m->child[s]; t; t = m->sibling[t])
        if (m->label[t] == c)
            return t;
    return 0;
}

static void insert(Masker *m, const unsigned char *p, size_t len)
{
    uint32_t s = 0;
    for (size_t i = 0; i < len; i++) {
        uint32_t t = find_child(m, s, p[i]);
        if (t == 0) {
            t = m->nodes++;
            m->label[t] = p[i];
            m->depth[t] = m->depth[s] + 1;
            m->sibling[t] = m->child[s];
            m->child[s] = t;
        }
        s = t;
    }
    m->term[s] = 1;
}

static void link_node(Masker *m, uint32_t u, uint32_t f)
{
    m->fail[u] = f;
    m->dict[u] = m->term[f] ? f : m->dict[f];
    m->hold[u] = m->child[u] ? u : m->hold[f];
}

/* Fills fail, dict and hold breadth-first, so every suffix is linked before its users. */
static void link_all(Masker *m, uint32_t *queue)
{
    uint32_t head = 0, tail = 0;
    m->hold[0] = 0;
    for (int c = 0; c < 256; c++)
        m->root_next[c] = find_child(m, 0, (unsigned char)c);
    for (uint32_t t = m->child[0]; t; t = m->sibling[t]) {
        link_node(m, t, 0);
        queue[tail++] = t;
    }
    while (head < tail) {
        uint32_t v = queue[head++];
        for (uint32_t u = m->child[v]; u; u = m->sibling[u]) {
            uint32_t f = m->fail[v], g = 0;
            while (f && (g = find_child(m, f, m->label[u])) == 0)
                f = m->fail[f];
            link_node(m, u, f ? g : m->root_next[m->label[u]]);
            queue[tail++] = u;
        }
    }
}

static void set_start(Masker *m, unsigned a, unsigned b)
{
    unsigned bit = a << 8 | b;
    m->starts[bit >> 6] |= (uint64_t)1 << (bit & 63);
}

/* Fills starts from the first two levels of the trie. */
static void mark_starts(Masker *m)
{
    for (uint32_t t = m->child[0]; t; t = m->sibling[t]) {
        if (m->term[t])
            for (unsigned b = 0; b < 256; b++)
                set_start(m, m->label[t], b);
        for (uint32_t u = m->child[t]; u; u = m->sibling[u])
            set_start(m, m->label[t], m->label[u]);
    }
}

/* Carves the node arrays, the ring and best[] out of one block. */
static int allocate(Masker *m, uint32_t nodes, uint32_t cap)
{
    size_t words = (size_t)nodes * 6 + cap, bytes = (size_t)nodes * 2 + cap;
    m->block_size = words * sizeof(uint32_t) + bytes;
    m->block = calloc(1, m->block_size);
    if (m->block == NULL)
        return 0;
    uint32_t *w = m->block;
    m->fail = w, w += nodes;
    m->depth = w, w += nodes;
    m->child = w, w += nodes;
    m->sibling = w, w += nodes;
    m->dict = w, w += nodes;
    m->hold = w, w += nodes;
    m->best = w, w += cap;
    unsigned char *b = (unsigned char *)w;
    m->label = b, b += nodes;
    m->term = b, b += nodes;
    m->ring = b;
    return 1;
}

static void wipe(Masker *m)
{
    if (m->block) {
        sodium_memzero(m->block, m->block_size);
        free(m->block);
    }
    sodium_memzero(m, sizeof *m);
}

static Masker *check_masker(lua_State *L)
{
    Masker *m = luaL_checkudata(L, 1, MASKER_MT);
    if (m->block == NULL)
        luaL_error(L, "masker is closed");
    return m;
}

/* Checks mask.new's patterns (index 1): raises on misuse; returns the total and longest
 * length through the pointers. */
static void check_patterns(lua_State *L, size_t *total, size_t *longest)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Unsigned n = lua_rawlen(L, 1);
    *total = *longest = 0;
    for (lua_Unsigned i = 1; i <= n; i++) {
        size_t len;
        if (lua_rawgeti(L, 1, (lua_Integer)i) != LUA_TSTRING)
            luaL_error(L, "bad argument #1 to 'new' (patterns[%d] is a %s, expected a string)",
                       (int)i, luaL_typename(L, -1));
        lua_tolstring(L, -1, &len);
        lua_pop(L, 1);
        if (len == 0)
            luaL_error(L, "bad argument #1 to 'new' (patterns[%d] is empty)", (int)i);
        *total += len;
        *longest = len > *longest ? len : *longest;
        if (*total > MAX_TOTAL)
            luaL_error(L, "mask.new: the patterns are too large to mask");
    }
}

/* mask.new(patterns, replacement) -> masker: patterns is an array of non-empty byte
 * strings, each occurrence of which becomes the replacement string. */
static int l_new(lua_State *L)
{
    size_t total, longest;
    check_patterns(L, &total, &longest);
    luaL_checkstring(L, 2);
    lua_settop(L, 2);
    Masker *m = lua_newuserdatauv(L, sizeof *m, 1);
    memset(m, 0, sizeof *m);
    lua_pushvalue(L, 2);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, MASKER_MT);
    m->cap = longest > 0 ? (uint32_t)longest : 1;
    if (!allocate(m, (uint32_t)total + 1, m->cap))
        return luaL_error(L, "mask.new: out of memory");
    m->nodes = 1;
    lua_Unsigned n = lua_rawlen(L, 1);
    for (lua_Unsigned i = 1; i <= n; i++) {
        size_t len;
        lua_rawgeti(L, 1, (lua_Integer)i);
        const char *p = lua_tolstring(L, -1, &len);
        insert(m, (const unsigned char *)p, len);
        lua_pop(L, 1);
    }
    uint32_t *queue = lua_newuserdatauv(L, (size_t)m->nodes * sizeof *queue, 0);
    link_all(m, queue);
    mark_starts(m);
    lua_pop(L, 1);
    return 1;
}

static uint32_t next_state(const Masker *m, uint32_t s, unsigned char c)
{
    for (; s; s = m->fail[s]) {
        uint32_t t = find_child(m, s, c);
        if (t)
            return t;
    }
    return m->root_next[c];
}

/* Emits the decided positions [pos, limit): a replacement for each chosen match, the
 * byte itself elsewhere. A replacement may carry pos past limit. */
static void emit(Masker *m, uint64_t limit, luaL_Buffer *out, const char *repl, size_t rlen)
{
    while (m->pos < limit) {
        uint32_t i = (uint32_t)(m->pos % m->cap), len = m->best[i];
        if (len) {
            luaL_addlstring(out, repl, rlen);
            m->pos += len;
        } else {
            luaL_addchar(out, (char)m->ring[i]);
            m->pos++;
        }
    }
}

static void step(Masker *m, unsigned char c, luaL_Buffer *out, const char *repl, size_t rlen)
{
    uint32_t s = m->state = next_state(m, m->state, c);
    uint32_t i = (uint32_t)(m->end % m->cap);
    m->ring[i] = c;
    m->best[i] = 0;
    m->end++;
    for (uint32_t n = m->term[s] ? s : m->dict[s]; n; n = m->dict[n]) {
        uint32_t len = m->depth[n];
        if (len <= m->end - m->pos) { /* a match starting before pos lies in a decided part */
            uint32_t *b = &m->best[(m->end - len) % m->cap];
            if (len > *b)
                *b = len;
        }
    }
    /* Hold the longest pending suffix that is a proper prefix of a pattern; everything
     * before it is decided, since no match can start there any more. */
    uint32_t h = m->hold[s];
    for (;;) {
        while (m->depth[h] > m->end - m->pos)
            h = m->hold[m->fail[h]];
        uint64_t limit = m->end - m->depth[h];
        if (m->pos >= limit)
            break;
        emit(m, limit, out, repl, rlen);
    }
}

static int may_start(const Masker *m, unsigned char a, unsigned char b)
{
    unsigned bit = (unsigned)a << 8 | b;
    return (m->starts[bit >> 6] >> (bit & 63)) & 1;
}

/* How many of the n bytes at p pass straight through from the root: each of them with
 * the byte after it starts no pattern, so the automaton would be back at the root after
 * every one of them with nothing held (see starts). The last byte is left to step, as
 * what follows it is not known yet. */
static size_t skip(const Masker *m, const unsigned char *p, size_t n)
{
    size_t k = 0;
    while (k + 1 < n && !may_start(m, p[k], p[k + 1]))
        k++;
    return k;
}

/* At a depth-1 state the one held byte a is decided as itself when a and the next byte c
 * start no pattern: the state after c is then what the root would give for c. */
static void release_one(Masker *m, unsigned char c, luaL_Buffer *out)
{
    uint32_t s = m->state;
    if (s && m->depth[s] == 1 && m->pos + 1 == m->end && !may_start(m, m->label[s], c)) {
        luaL_addchar(out, (char)m->label[s]);
        m->pos++;
        m->state = 0;
    }
}

/* m:feed(data) -> the output that can no longer be part of a match, masked */
static int m_feed(lua_State *L)
{
    Masker *m = check_masker(L);
    size_t len, rlen;
    const unsigned char *data = (const unsigned char *)luaL_checklstring(L, 2, &len);
    lua_settop(L, 2);
    lua_getiuservalue(L, 1, 1);
    const char *repl = lua_tolstring(L, 3, &rlen);
    luaL_Buffer out;
    luaL_buffinitsize(L, &out, len);
    for (size_t k = 0; k < len;) {
        release_one(m, data[k], &out);
        size_t run = m->state == 0 && m->pos == m->end ? skip(m, data + k, len - k) : 0;
        if (run) {
            luaL_addlstring(&out, (const char *)data + k, run);
            m->pos = m->end += run;
            k += run;
        } else {
            step(m, data[k++], &out, repl, rlen);
        }
    }
    luaL_pushresult(&out);
    return 1;
}

/* m:finish() -> the held bytes, masked; the masker then starts a fresh stream */
static int m_finish(lua_State *L)
{
    Masker *m = check_masker(L);
    size_t rlen;
    lua_settop(L, 1);
    lua_getiuservalue(L, 1, 1);
    const char *repl = lua_tolstring(L, 2, &rlen);
    luaL_Buffer out;
    luaL_buffinit(L, &out);
    emit(m, m->end, &out, repl, rlen);
    m->pos = m->end;
    m->state = 0;
    luaL_pushresult(&out);
    return 1;
}

static int m_close(lua_State *L)
{
    wipe(luaL_checkudata(L, 1, MASKER_MT));
    return 0;
}

static const luaL_Reg masker_methods[] = {
    { "feed", m_feed },
    { "finish", m_finish },
    { "close", m_close },
    { NULL, NULL }
};

static const luaL_Reg masker_meta[] = {
    { "__gc", m_close },
    { "__close", m_close },
    { NULL, NULL }
};

static const luaL_Reg funcs[] = {
    { "new", l_new },
    { NULL, NULL }
};

int luaopen_moat_c_mask(lua_State *L)
{
    moat_class(L, MASKER_MT, masker_meta, masker_methods);
    luaL_newlib(L, funcs);
    return 1;
}
