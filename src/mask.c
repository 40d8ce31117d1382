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
#define GRAMS (1u << 16)       /* hash buckets of four-byte grams */
#define WINDOW_MAX 32

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
    unsigned char *shift; /* GRAMS entries: see mark_window */
    uint32_t root_next[256];
    /* Bit (a << 8 | b) is set when some pattern starts with the bytes a b, or is just a:
     * from the root, a byte whose pair with the next byte is clear starts no match. */
    uint64_t starts[1024];
    /* Bit gram(p) is set when some pattern starts with the four bytes at p. */
    uint64_t prefix[GRAMS / 64];
    uint32_t nodes, cap, state;
    uint32_t window; /* the shortest pattern's length, at most WINDOW_MAX; 0: no window scan */
    uint64_t pos, end;
} Masker;

/* Where feed's output goes: the input's own bytes are counted (lit) while they come out in
 * order and unchanged, and only copied into the buffer once something else comes out, so
 * that a chunk with nothing to mask is returned as the same string. */
typedef struct {
    luaL_Buffer b;
    lua_State *L;
    const unsigned char *data;
    size_t len;
    uint64_t base; /* the stream position of data[0] */
    size_t lit;
    int open;
    const char *repl;
    size_t rlen;
} Out;

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

static uint32_t gram(const unsigned char *p)
{
    uint32_t x;
    memcpy(&x, p, sizeof x);
    return (x * 2654435761u) >> 16;
}

static int may_prefix(const Masker *m, const unsigned char *p)
{
    uint32_t g = gram(p);
    return (m->prefix[g >> 6] >> (g & 63)) & 1;
}

/* Fills prefix and shift for a window of the w first bytes of every pattern (w is at least
 * 4: every pattern is that long). shift[gram(p)] is how far a window whose last four bytes
 * are p may move on and skip no start of a match: the least, over every place those four
 * bytes end at offset o < w in some pattern's window, of w - 1 - o; w - 3 where they end
 * nowhere. (Wu and Manber's multi-pattern search, with a block of four bytes.) */
static void mark_window(Masker *m, lua_State *L, uint32_t w)
{
    memset(m->shift, (int)(w - 3), GRAMS);
    lua_Unsigned n = lua_rawlen(L, 1);
    for (lua_Unsigned i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i);
        const unsigned char *p = (const unsigned char *)lua_tostring(L, -1);
        uint32_t g = gram(p);
        m->prefix[g >> 6] |= (uint64_t)1 << (g & 63);
        for (uint32_t o = 3; o < w; o++) {
            unsigned char *s = &m->shift[gram(p + o - 3)];
            if (*s > w - 1 - o)
                *s = (unsigned char)(w - 1 - o);
        }
        lua_pop(L, 1);
    }
    m->window = w;
}

/* Carves the node arrays, the ring and best[] out of one block. */
static int allocate(Masker *m, uint32_t nodes, uint32_t cap)
{
    size_t words = (size_t)nodes * 6 + cap, bytes = (size_t)nodes * 2 + cap + GRAMS;
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
    m->shift = b, b += GRAMS;
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

/* Checks mask.new's patterns (index 1): raises on misuse; returns the total, longest and
 * shortest length through the pointers. */
static void check_patterns(lua_State *L, size_t *total, size_t *longest, size_t *shortest)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Unsigned n = lua_rawlen(L, 1);
    *total = *longest = 0;
    *shortest = SIZE_MAX;
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
        *shortest = len < *shortest ? len : *shortest;
        if (*total > MAX_TOTAL)
            luaL_error(L, "mask.new: the patterns are too large to mask");
    }
}

/* mask.new(patterns, replacement) -> masker: patterns is an array of non-empty byte
 * strings, each occurrence of which becomes the replacement string. */
static int l_new(lua_State *L)
{
    size_t total, longest, shortest;
    check_patterns(L, &total, &longest, &shortest);
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
    if (shortest >= 4 && shortest != SIZE_MAX)
        mark_window(m, L, shortest < WINDOW_MAX ? (uint32_t)shortest : WINDOW_MAX);
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

/* Copies what came out so far into the buffer, which from now on takes everything. */
static void open_out(Out *o)
{
    if (o->open)
        return;
    o->open = 1;
    luaL_buffinitsize(o->L, &o->b, o->len + o->rlen);
    luaL_addlstring(&o->b, (const char *)o->data, o->lit);
}

static void put_other(Out *o, const char *s, size_t n)
{
    open_out(o);
    luaL_addlstring(&o->b, s, n);
}

/* Puts the n input bytes at data[at] out. */
static void put_input(Out *o, size_t at, size_t n)
{
    if (!o->open && at == o->lit)
        o->lit += n;
    else
        put_other(o, (const char *)o->data + at, n);
}

/* Puts out the byte c that is at stream position at. */
static void put_byte(Out *o, uint64_t at, unsigned char c)
{
    if (o->data && at >= o->base)
        put_input(o, (size_t)(at - o->base), 1);
    else
        put_other(o, (const char *)&c, 1);
}

/* Pushes what came out: the input string itself when that is all it was. */
static void push_out(Out *o, int input)
{
    if (o->open)
        luaL_pushresult(&o->b);
    else if (input && o->lit == o->len)
        lua_pushvalue(o->L, input);
    else
        lua_pushlstring(o->L, o->lit ? (const char *)o->data : "", o->lit);
}

/* Emits the decided positions [pos, limit): a replacement for each chosen match, the
 * byte itself elsewhere. A replacement may carry pos past limit. */
static void emit(Masker *m, uint64_t limit, Out *o)
{
    while (m->pos < limit) {
        uint32_t i = (uint32_t)(m->pos % m->cap), len = m->best[i];
        if (len) {
            put_other(o, o->repl, o->rlen);
            m->pos += len;
        } else {
            put_byte(o, m->pos, m->ring[i]);
            m->pos++;
        }
    }
}

static void step(Masker *m, unsigned char c, Out *o)
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
        emit(m, limit, o);
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

/* The same with the window (see mark_window), for patterns of four bytes or more: slides a
 * window of the shortest pattern's length over the n bytes at p by the shift of its last
 * four bytes, and where that is 0 looks at the four bytes at its start. Returns how many
 * bytes at p start no match; the last three are left to step. */
static size_t scan(const Masker *m, const unsigned char *p, size_t n)
{
    size_t q = 0, w = m->window, far = w - 3;
    while (q + w <= n) {
        /* Most windows move by the whole of far: four of them are looked up at once, as
         * their loads do not wait on each other (a shift is at most far, so the AND of four
         * is far only when each is). */
        if (q + w + 3 * far <= n) {
            const unsigned char *e = p + q + w - 4;
            if ((m->shift[gram(e)] & m->shift[gram(e + far)] & m->shift[gram(e + 2 * far)] &
                 m->shift[gram(e + 3 * far)]) == far) {
                q += 4 * far;
                continue;
            }
        }
        unsigned s = m->shift[gram(p + q + w - 4)];
        if (s)
            q += s;
        else if (may_prefix(m, p + q))
            return q;
        else
            q++;
    }
    while (q + 4 <= n && !may_prefix(m, p + q))
        q++;
    return q;
}

/* At a depth-1 state the one held byte a is decided as itself when a and the next byte c
 * start no pattern: the state after c is then what the root would give for c. */
static void release_one(Masker *m, unsigned char c, Out *o)
{
    uint32_t s = m->state;
    if (s && m->depth[s] == 1 && m->pos + 1 == m->end && !may_start(m, m->label[s], c)) {
        put_byte(o, m->pos, m->label[s]);
        m->pos++;
        m->state = 0;
    }
}

/* With the window: when none of the few held bytes (the last ones of data[0, k)) starts a
 * match, they are decided as themselves and the automaton goes back to the root, where
 * scan can skip again. Without this, text made of the patterns' own alphabet (hex, base64)
 * keeps the automaton off the root for good. */
static void reset_if_clear(Masker *m, const unsigned char *data, size_t k, size_t len, Out *o)
{
    uint64_t held = m->end - m->pos;
    if (held > 4 || held > k)
        return;
    for (size_t j = k - (size_t)held; j < k; j++) {
        if (j + 4 > len || m->best[(m->pos + j - (k - held)) % m->cap] || may_prefix(m, data + j))
            return;
    }
    put_input(o, k - (size_t)held, (size_t)held);
    m->pos = m->end;
    m->state = 0;
}

/* How many bytes at data[k] pass straight through, given the state. */
static size_t clear_run(Masker *m, const unsigned char *data, size_t k, size_t len, Out *o)
{
    if (m->window) {
        if (m->state || m->pos != m->end)
            reset_if_clear(m, data, k, len, o);
        return m->state == 0 && m->pos == m->end ? scan(m, data + k, len - k) : 0;
    }
    release_one(m, data[k], o);
    return m->state == 0 && m->pos == m->end ? skip(m, data + k, len - k) : 0;
}

static void out_init(Out *o, lua_State *L, int repl_idx, const unsigned char *data, size_t len,
                     uint64_t base)
{
    memset(o, 0, sizeof *o);
    o->L = L;
    o->repl = lua_tolstring(L, repl_idx, &o->rlen);
    o->data = data;
    o->len = len;
    o->base = base;
}

/* m:feed(data) -> the output that can no longer be part of a match, masked */
static int m_feed(lua_State *L)
{
    Masker *m = check_masker(L);
    size_t len;
    const unsigned char *data = (const unsigned char *)luaL_checklstring(L, 2, &len);
    lua_settop(L, 2);
    lua_getiuservalue(L, 1, 1);
    Out o;
    out_init(&o, L, 3, data, len, m->end);
    for (size_t k = 0; k < len;) {
        size_t run = clear_run(m, data, k, len, &o);
        if (run) {
            put_input(&o, k, run);
            m->pos = m->end += run;
            k += run;
        } else {
            step(m, data[k++], &o);
        }
    }
    push_out(&o, 2);
    return 1;
}

/* m:finish() -> the held bytes, masked; the masker then starts a fresh stream */
static int m_finish(lua_State *L)
{
    Masker *m = check_masker(L);
    lua_settop(L, 1);
    lua_getiuservalue(L, 1, 1);
    Out o;
    out_init(&o, L, 2, NULL, 0, m->end);
    emit(m, m->end, &o);
    m->pos = m->end;
    m->state = 0;
    push_out(&o, 0);
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
