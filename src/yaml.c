/* moat.c.yaml: YAML text -> plain node tables, parsed event by event under hard limits. */
#include <stdarg.h>
#include <stdio.h>

#include <yaml.h>

#include "moat.h"

#define LIMIT_BYTES 1048576
#define LIMIT_DEPTH 64
#define LIMIT_NODES 10000

#define PARSER_MT "moat.yaml.parser"

/* The libyaml state lives in a userdata so that a Lua error (out of memory while
 * building tables) can never leak it: __gc deletes whatever is still live. */
typedef struct {
    yaml_parser_t parser;
    yaml_event_t event;
    int parser_live;
    int event_live;
} Parser;

typedef enum { FRAME_SEQ, FRAME_MAP } FrameKind;

/* One open collection. Its node table sits at stack index `node`, its items/pairs
 * table at node + 1 and, for a mapping, the table of keys seen so far at node + 2. */
typedef struct {
    FrameKind kind;
    int node;
    lua_Integer count;
    int want_key;
} Frame;

typedef struct {
    lua_State *L;
    Parser *p;
    const char *chunk;
    Frame frames[LIMIT_DEPTH];
    int depth;
    int nodes;
    int documents;
    int root; /* stack index of the root node once complete, else 0 */
} Load;

static void release(Parser *p)
{
    if (p->event_live) {
        yaml_event_delete(&p->event);
        p->event_live = 0;
    }
    if (p->parser_live) {
        yaml_parser_delete(&p->parser);
        p->parser_live = 0;
    }
}

static int m_gc(lua_State *L)
{
    release(luaL_checkudata(L, 1, PARSER_MT));
    return 0;
}

/* Pushes "chunk:line:col: message" built from fmt; returns nothing useful. */
static void refuse(Load *ld, size_t line, size_t col, const char *fmt, ...)
{
    lua_State *L = ld->L;
    va_list ap;
    luaL_checkstack(L, 4, "yaml: stack");
    lua_pushfstring(L, "%s:%I:%I: ", ld->chunk, (lua_Integer)line, (lua_Integer)col);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
}

static void refuse_at(Load *ld, yaml_mark_t m, const char *fmt, const char *arg)
{
    refuse(ld, m.line + 1, m.column + 1, fmt, arg);
}

/* Pushes {kind = kind, line = L, col = C} for the mark. */
static void push_node(lua_State *L, const char *kind, yaml_mark_t m, int extra)
{
    lua_createtable(L, 0, 3 + extra);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, (lua_Integer)m.line + 1);
    lua_setfield(L, -2, "line");
    lua_pushinteger(L, (lua_Integer)m.column + 1);
    lua_setfield(L, -2, "col");
}

/* A short, printable rendering of a key for messages: keys are names, but keep
 * control bytes and long text out of the terminal. */
static const char *key_label(lua_State *L, const unsigned char *s, size_t n)
{
    char buf[68];
    size_t i, k = 0;
    for (i = 0; i < n && k < 64; i++)
        buf[k++] = (s[i] < 0x20 || s[i] == 0x7f) ? '?' : (char)s[i];
    if (i < n) {
        buf[k++] = '.';
        buf[k++] = '.';
        buf[k++] = '.';
    }
    return lua_pushlstring(L, buf, k);
}

/* Refuses anchors and tags on a node event; returns 0 when refused. */
static int check_props(Load *ld, yaml_char_t *anchor, yaml_char_t *tag, yaml_mark_t m)
{
    if (anchor) {
        refuse_at(ld, m, "anchors and aliases are not allowed%s", "");
        return 0;
    }
    if (tag) {
        refuse_at(ld, m, "tags (like !!str or !name) are not allowed%s", "");
        return 0;
    }
    return 1;
}

/* Counts one more node; returns 0 (with the message pushed) past the limit. */
static int count_node(Load *ld, yaml_mark_t m)
{
    if (++ld->nodes > LIMIT_NODES) {
        refuse(ld, m.line + 1, m.column + 1,
               "more than %d nodes (every key, value and list item counts); that is the limit",
               LIMIT_NODES);
        return 0;
    }
    return 1;
}

/* Checks a scalar about to become a mapping key: merge keys and duplicates.
 * Records it in the mapping's seen-table. Returns 0 when refused. */
static int check_key(Load *ld, Frame *f, yaml_event_t *ev)
{
    lua_State *L = ld->L;
    const char *v = (const char *)ev->data.scalar.value;
    size_t n = ev->data.scalar.length;
    yaml_mark_t m = ev->start_mark;
    if (ev->data.scalar.plain_implicit && ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE
        && n == 2 && v[0] == '<' && v[1] == '<') {
        refuse_at(ld, m, "merge keys (<<) are not allowed%s", "");
        return 0;
    }
    lua_pushlstring(L, v, n);
    if (lua_rawget(L, f->node + 2) != LUA_TNIL) {
        const char *first = lua_tostring(L, -1);
        const char *label = key_label(L, ev->data.scalar.value, n);
        refuse(ld, m.line + 1, m.column + 1, "duplicate key '%s' (first at %s)", label, first);
        return 0;
    }
    lua_pop(L, 1);
    lua_pushlstring(L, v, n);
    lua_pushfstring(L, "%I:%I", (lua_Integer)m.line + 1, (lua_Integer)m.column + 1);
    lua_rawset(L, f->node + 2);
    return 1;
}

/* The finished node on top of the stack joins its parent (or becomes the root). */
static void attach(Load *ld)
{
    lua_State *L = ld->L;
    if (ld->depth == 0) {
        ld->root = lua_gettop(L);
        return;
    }
    Frame *f = &ld->frames[ld->depth - 1];
    if (f->kind == FRAME_SEQ) {
        lua_rawseti(L, f->node + 1, ++f->count);
    } else if (f->want_key) {
        /* The pair table stays on the stack until its value arrives. */
        lua_createtable(L, 0, 2);
        lua_insert(L, -2);
        lua_setfield(L, -2, "key");
        f->want_key = 0;
    } else {
        lua_setfield(L, -2, "value");
        lua_rawseti(L, f->node + 1, ++f->count);
        f->want_key = 1;
    }
}

static int on_scalar(Load *ld, yaml_event_t *ev)
{
    lua_State *L = ld->L;
    yaml_mark_t m = ev->start_mark;
    if (!check_props(ld, ev->data.scalar.anchor, ev->data.scalar.tag, m) || !count_node(ld, m))
        return 0;
    if (ld->depth > 0) {
        Frame *f = &ld->frames[ld->depth - 1];
        if (f->kind == FRAME_MAP && f->want_key && !check_key(ld, f, ev))
            return 0;
    }
    push_node(L, "scalar", m, 2);
    lua_pushlstring(L, (const char *)ev->data.scalar.value, ev->data.scalar.length);
    lua_setfield(L, -2, "value");
    lua_pushboolean(L, ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE);
    lua_setfield(L, -2, "plain");
    attach(ld);
    return 1;
}

static int on_start(Load *ld, yaml_event_t *ev, FrameKind kind)
{
    lua_State *L = ld->L;
    yaml_mark_t m = ev->start_mark;
    yaml_char_t *anchor = kind == FRAME_MAP ? ev->data.mapping_start.anchor
                                            : ev->data.sequence_start.anchor;
    yaml_char_t *tag = kind == FRAME_MAP ? ev->data.mapping_start.tag
                                         : ev->data.sequence_start.tag;
    if (!check_props(ld, anchor, tag, m) || !count_node(ld, m))
        return 0;
    if (ld->depth > 0) {
        Frame *parent = &ld->frames[ld->depth - 1];
        if (parent->kind == FRAME_MAP && parent->want_key) {
            refuse_at(ld, m, "complex mapping keys (a list or mapping used as a key) are not allowed%s", "");
            return 0;
        }
    }
    if (ld->depth >= LIMIT_DEPTH) {
        refuse(ld, m.line + 1, m.column + 1, "nested more than %d levels deep; the limit is %d",
               LIMIT_DEPTH, LIMIT_DEPTH);
        return 0;
    }
    Frame *f = &ld->frames[ld->depth++];
    f->kind = kind;
    f->count = 0;
    f->want_key = 1;
    push_node(L, kind == FRAME_MAP ? "map" : "seq", m, 1);
    f->node = lua_gettop(L);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    lua_setfield(L, f->node, kind == FRAME_MAP ? "pairs" : "items");
    if (kind == FRAME_MAP)
        lua_newtable(L);
    return 1;
}

static void on_end(Load *ld)
{
    Frame *f = &ld->frames[--ld->depth];
    lua_settop(ld->L, f->node);
    attach(ld);
}

/* Pushes libyaml's own account of a syntax or encoding error. */
static void refuse_syntax(Load *ld, const char *text, size_t len)
{
    yaml_parser_t *y = &ld->p->parser;
    const char *problem = y->problem ? y->problem : "cannot parse the YAML";
    if (y->error == YAML_READER_ERROR) {
        /* Reader errors carry a byte offset, not a mark: count lines up to it. */
        size_t line = 1, col = 1, i, end = y->problem_offset < len ? y->problem_offset : len;
        for (i = 0; i < end; i++) {
            unsigned char c = (unsigned char)text[i];
            if (c == '\n') {
                line++;
                col = 1;
            } else if ((c & 0xC0) != 0x80) {
                col++;
            }
        }
        refuse(ld, line, col, "invalid text: %s (the file must be UTF-8 without control characters)",
               problem);
        return;
    }
    if (y->error == YAML_MEMORY_ERROR) {
        refuse(ld, 1, 1, "out of memory while parsing%s", "");
        return;
    }
    yaml_mark_t m = y->problem_mark;
    if (y->context) {
        refuse(ld, m.line + 1, m.column + 1, "%s (%s that starts at %I:%I)", problem, y->context,
               (lua_Integer)y->context_mark.line + 1, (lua_Integer)y->context_mark.column + 1);
    } else {
        refuse(ld, m.line + 1, m.column + 1, "%s", problem);
    }
}

/* Handles one event; returns 1 to go on, 0 when refused (message pushed), 2 at the end. */
static int on_event(Load *ld, yaml_event_t *ev)
{
    /* Room for a new collection's slots, a pending pair and the scalar being built. */
    luaL_checkstack(ld->L, 12, "yaml: stack");
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++ld->documents > 1) {
            refuse_at(ld, ev->start_mark,
                      "more than one document (---) in the file; keep one%s", "");
            return 0;
        }
        if (ev->data.document_start.tag_directives.start != ev->data.document_start.tag_directives.end) {
            refuse_at(ld, ev->start_mark, "tags (%%TAG directives) are not allowed%s", "");
            return 0;
        }
        return 1;
    case YAML_ALIAS_EVENT:
        refuse_at(ld, ev->start_mark, "anchors and aliases are not allowed%s", "");
        return 0;
    case YAML_SCALAR_EVENT:
        return on_scalar(ld, ev);
    case YAML_SEQUENCE_START_EVENT:
        return on_start(ld, ev, FRAME_SEQ);
    case YAML_MAPPING_START_EVENT:
        return on_start(ld, ev, FRAME_MAP);
    case YAML_SEQUENCE_END_EVENT:
    case YAML_MAPPING_END_EVENT:
        on_end(ld);
        return 1;
    case YAML_STREAM_END_EVENT:
        return 2;
    default:
        return 1;
    }
}

/* Runs the parser to the end; returns 1 with the root (or nothing) on the stack,
 * or 0 with the refusal message on top. */
static int run(Load *ld, const char *text, size_t len)
{
    Parser *p = ld->p;
    for (;;) {
        if (!yaml_parser_parse(&p->parser, &p->event)) {
            refuse_syntax(ld, text, len);
            return 0;
        }
        p->event_live = 1;
        int r = on_event(ld, &p->event);
        yaml_event_delete(&p->event);
        p->event_live = 0;
        if (r != 1)
            return r == 2;
    }
}

/* yaml.load(text[, chunkname]) -> root node | nil, "chunk:line:col: message" */
static int l_load(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    Load ld = { .L = L, .chunk = luaL_optstring(L, 2, "yaml") };
    lua_settop(L, 2);
    if (len > LIMIT_BYTES) {
        refuse(&ld, 1, 1, "file is %I bytes; the limit is 1 MiB", (lua_Integer)len);
        return moat_fail(L, lua_tostring(L, -1), 0);
    }
    ld.p = lua_newuserdatauv(L, sizeof(Parser), 0);
    memset(ld.p, 0, sizeof(Parser));
    luaL_setmetatable(L, PARSER_MT);
    if (!yaml_parser_initialize(&ld.p->parser))
        return luaL_error(L, "yaml: out of memory");
    ld.p->parser_live = 1;
    yaml_parser_set_encoding(&ld.p->parser, YAML_UTF8_ENCODING);
    yaml_parser_set_input_string(&ld.p->parser, (const unsigned char *)text, len);
    int ok = run(&ld, text, len);
    release(ld.p);
    if (!ok)
        return moat_fail(L, lua_tostring(L, -1), 0);
    if (ld.root) {
        lua_pushvalue(L, ld.root);
        lua_getfield(L, -1, "plain");
        lua_getfield(L, -2, "value");
        /* "---" alone yields an empty plain scalar: a document with no content. */
        int empty = lua_toboolean(L, -2) && lua_rawlen(L, -1) == 0;
        lua_pop(L, 2);
        if (!empty)
            return 1;
    }
    yaml_mark_t origin = { 0, 0, 0 };
    push_node(L, "empty", origin, 0);
    return 1;
}

static const luaL_Reg funcs[] = {
    { "load", l_load },
    { NULL, NULL },
};

static const luaL_Reg parser_meta[] = {
    { "__gc", m_gc },
    { "__close", m_gc },
    { NULL, NULL },
};

int luaopen_moat_c_yaml(lua_State *L)
{
    moat_class(L, PARSER_MT, parser_meta, NULL);
    luaL_newlib(L, funcs);
    static const struct { const char *name; lua_Integer value; } limits[] = {
        { "bytes", LIMIT_BYTES }, { "depth", LIMIT_DEPTH }, { "nodes", LIMIT_NODES },
    };
    lua_createtable(L, 0, 3);
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        lua_pushinteger(L, limits[i].value);
        lua_setfield(L, -2, limits[i].name);
    }
    lua_setfield(L, -2, "LIMITS");
    return 1;
}
