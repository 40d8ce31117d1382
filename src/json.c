/* moat.c.json: JSON text <-> Lua values through jansson, with a deterministic encoding. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>
#include <sodium.h>

#include "moat.h"

#define MAX_DEPTH 200
#define BOX_MT "moat.json.box"

/* json.null is this address as a light userdata. */
static const char null_sentinel = 0;
#define NULL_SENTINEL ((void *)&null_sentinel)

/* Upvalue index of json.array_mt in every module function. */
#define ARRAY_MT lua_upvalueindex(1)

/* jansson's memory can hold secret values (backend output is JSON), so every block it
 * frees is wiped first. The size sits in a header in front of the block. */
typedef union {
    size_t size;
    max_align_t align;
} Header;

static void *wiping_malloc(size_t size)
{
    if (size > SIZE_MAX - sizeof(Header))
        return NULL;
    Header *h = malloc(sizeof(Header) + size);
    if (h == NULL)
        return NULL;
    h->size = size;
    return h + 1;
}

static void wiping_free(void *p)
{
    if (p == NULL)
        return;
    Header *h = (Header *)p - 1;
    sodium_memzero(h, sizeof(Header) + h->size);
    free(h);
}

/* A jansson tree owned by a userdata, so a Lua error mid-conversion cannot leak it. */
typedef struct {
    json_t *root;
} Box;

static int m_box_gc(lua_State *L)
{
    Box *b = luaL_checkudata(L, 1, BOX_MT);
    if (b->root) {
        json_decref(b->root);
        b->root = NULL;
    }
    return 0;
}

static Box *new_box(lua_State *L)
{
    Box *b = lua_newuserdatauv(L, sizeof(Box), 0);
    b->root = NULL;
    luaL_setmetatable(L, BOX_MT);
    return b;
}

static void push_value(lua_State *L, json_t *v);

static void push_array(lua_State *L, json_t *v)
{
    size_t i, n = json_array_size(v);
    lua_createtable(L, n > INT32_MAX ? INT32_MAX : (int)n, 0);
    for (i = 0; i < n; i++) {
        push_value(L, json_array_get(v, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_pushvalue(L, ARRAY_MT);
    lua_setmetatable(L, -2);
}

static void push_object(lua_State *L, json_t *v)
{
    const char *key;
    size_t klen;
    json_t *item;
    size_t n = json_object_size(v);
    lua_createtable(L, 0, n > INT32_MAX ? INT32_MAX : (int)n);
    json_object_keylen_foreach(v, key, klen, item) {
        lua_pushlstring(L, key, klen);
        push_value(L, item);
        lua_rawset(L, -3);
    }
}

/* jansson bounds the nesting it parses (2048), so this recursion is bounded too. */
static void push_value(lua_State *L, json_t *v)
{
    luaL_checkstack(L, 4, "json: nested too deeply");
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        push_object(L, v);
        break;
    case JSON_ARRAY:
        push_array(L, v);
        break;
    case JSON_STRING:
        lua_pushlstring(L, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        lua_pushinteger(L, (lua_Integer)json_integer_value(v));
        break;
    case JSON_REAL:
        lua_pushnumber(L, (lua_Number)json_real_value(v));
        break;
    case JSON_TRUE:
        lua_pushboolean(L, 1);
        break;
    case JSON_FALSE:
        lua_pushboolean(L, 0);
        break;
    case JSON_NULL:
    default:
        lua_pushlightuserdata(L, NULL_SENTINEL);
        break;
    }
}

/* jansson's own error text can quote the input (which may be a secret), so the
 * message is built from the error code alone. */
static const char *describe(enum json_error_code code)
{
    switch (code) {
    case json_error_out_of_memory: return "out of memory";
    case json_error_stack_overflow: return "nested too deeply";
    case json_error_invalid_utf8: return "invalid UTF-8";
    case json_error_premature_end_of_input: return "unexpected end of input";
    case json_error_end_of_input_expected: return "unexpected text after the value";
    case json_error_invalid_syntax: return "invalid syntax";
    case json_error_invalid_format: return "invalid format";
    case json_error_null_character: return "NUL character";
    case json_error_null_byte_in_key: return "NUL byte in an object key";
    case json_error_duplicate_key: return "duplicate key";
    case json_error_numeric_overflow: return "number out of range";
    default: return "cannot parse";
    }
}

/* json.decode(text) -> value | nil, "invalid JSON at line L, column C: what" */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    json_error_t err;
    Box *b = new_box(L);
    b->root = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    if (b->root == NULL) {
        lua_pushfstring(L, "invalid JSON at line %d, column %d: %s", err.line, err.column,
                        describe(json_error_code(&err)));
        return moat_fail(L, lua_tostring(L, -1), 0);
    }
    push_value(L, b->root);
    json_decref(b->root);
    b->root = NULL;
    return 1;
}

/* State of one encode: the first problem found stops it. */
typedef struct {
    lua_State *L;
    const char *problem;
} Enc;

static json_t *to_json(Enc *e, int idx, int depth);

static int fail(Enc *e, const char *problem)
{
    if (e->problem == NULL)
        e->problem = problem;
    return 0;
}

/* Fills array `arr` from t[1..n]. Returns 0 on failure. */
static int fill_array(Enc *e, json_t *arr, int idx, lua_Integer n, int depth)
{
    lua_State *L = e->L;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        json_t *v = to_json(e, lua_gettop(L), depth);
        lua_pop(L, 1);
        if (v == NULL || json_array_append_new(arr, v) != 0)
            return fail(e, "out of memory");
    }
    return 1;
}

static int fill_object(Enc *e, json_t *obj, int idx, int depth)
{
    lua_State *L = e->L;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            return fail(e, "table mixes list items and keys, or has a key that is not a string");
        }
        size_t klen;
        const char *key = lua_tolstring(L, -2, &klen);
        json_t *v = to_json(e, lua_gettop(L), depth);
        lua_pop(L, 1);
        if (v == NULL)
            return 0;
        if (json_object_setn_new(obj, key, klen, v) != 0) {
            lua_pop(L, 1);
            return fail(e, "object key is not valid UTF-8");
        }
    }
    return 1;
}

/* Length n when the table's keys are exactly 1..n, else 0. */
static lua_Integer sequence_length(lua_State *L, int idx)
{
    lua_Integer count = 0, max = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1) {
            lua_pop(L, 1);
            return 0;
        }
        lua_Integer k = lua_tointeger(L, -1);
        if (k > max)
            max = k;
        count++;
    }
    return count == max ? max : 0;
}

static json_t *table_to_json(Enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    if (depth > MAX_DEPTH) {
        fail(e, "nested more than 200 levels deep (or a table contains itself)");
        return NULL;
    }
    luaL_checkstack(L, 6, "json: nested too deeply");
    int is_array = 0;
    lua_Integer n = 0;
    if (lua_getmetatable(L, idx)) {
        is_array = lua_rawequal(L, -1, ARRAY_MT);
        lua_pop(L, 1);
        n = is_array ? (lua_Integer)lua_rawlen(L, idx) : 0;
    }
    if (!is_array) {
        n = sequence_length(L, idx);
        is_array = n > 0;
    }
    json_t *out = is_array ? json_array() : json_object();
    if (out == NULL) {
        fail(e, "out of memory");
        return NULL;
    }
    /* A Lua error below (out of memory) must not leak `out`: keep it in a box meanwhile. */
    int top = lua_gettop(L);
    Box *b = new_box(L);
    b->root = out;
    int ok = is_array ? fill_array(e, out, idx, n, depth + 1) : fill_object(e, out, idx, depth + 1);
    b->root = NULL;
    lua_settop(L, top);
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* Converts the Lua value at idx; NULL (with e->problem set) when it cannot. */
static json_t *to_json(Enc *e, int idx, int depth)
{
    lua_State *L = e->L;
    json_t *v = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        v = json_stringn(s, len);
        if (v == NULL)
            fail(e, "string is not valid UTF-8");
        return v;
    }
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            v = json_integer((json_int_t)lua_tointeger(L, idx));
        } else {
            double d = (double)lua_tonumber(L, idx);
            if (!isfinite(d)) {
                fail(e, "number is NaN or infinite");
                return NULL;
            }
            v = json_real(d);
        }
        break;
    case LUA_TBOOLEAN:
        v = json_boolean(lua_toboolean(L, idx));
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) != NULL_SENTINEL) {
            fail(e, "cannot encode a light userdata other than json.null");
            return NULL;
        }
        v = json_null();
        break;
    case LUA_TTABLE:
        return table_to_json(e, idx, depth);
    case LUA_TFUNCTION:
        fail(e, "cannot encode a function");
        return NULL;
    case LUA_TNIL:
    case LUA_TNONE:
        fail(e, "cannot encode nil (use json.null)");
        return NULL;
    default:
        fail(e, "cannot encode a userdata or thread");
        return NULL;
    }
    if (v == NULL)
        fail(e, "out of memory");
    return v;
}

static size_t encode_flags(lua_State *L, int idx)
{
    size_t flags = JSON_SORT_KEYS | JSON_COMPACT | JSON_ENCODE_ANY;
    if (lua_isnoneornil(L, idx))
        return flags;
    luaL_checktype(L, idx, LUA_TTABLE);
    int pretty = 0, canonical = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : "";
        if (strcmp(k, "pretty") == 0)
            pretty = lua_toboolean(L, -1);
        else if (strcmp(k, "canonical") == 0)
            canonical = lua_toboolean(L, -1);
        else
            luaL_argerror(L, idx, "unknown option (known: canonical, pretty)");
        lua_pop(L, 1);
    }
    if (pretty && canonical)
        luaL_argerror(L, idx, "canonical and pretty exclude each other");
    if (pretty)
        flags = JSON_SORT_KEYS | JSON_INDENT(2) | JSON_ENCODE_ANY;
    return flags;
}

/* json.encode(value[, {canonical = true} | {pretty = true}]) -> string | nil, message */
static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    size_t flags = encode_flags(L, 2);
    lua_settop(L, 1);
    Enc e = { .L = L, .problem = NULL };
    Box *b = new_box(L);
    b->root = to_json(&e, 1, 0);
    if (b->root == NULL)
        return moat_fail(L, e.problem ? e.problem : "cannot encode", 0);
    size_t n = json_dumpb(b->root, NULL, 0, flags);
    if (n == 0)
        return moat_fail(L, "cannot encode", 0);
    luaL_Buffer buf;
    char *p = luaL_buffinitsize(L, &buf, n);
    json_dumpb(b->root, p, n, flags);
    luaL_pushresultsize(&buf, n);
    json_decref(b->root);
    b->root = NULL;
    return 1;
}

/* json.array(t) -> t, marked so that it encodes as an array even when empty */
static int l_array(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_pushvalue(L, ARRAY_MT);
    lua_setmetatable(L, 1);
    return 1;
}

static const luaL_Reg funcs[] = {
    { "decode", l_decode },
    { "encode", l_encode },
    { "array", l_array },
    { NULL, NULL },
};

static const luaL_Reg box_meta[] = {
    { "__gc", m_box_gc },
    { "__close", m_box_gc },
    { NULL, NULL },
};

int luaopen_moat_c_json(lua_State *L)
{
    static int wiping;
    if (!wiping) {
        /* Set once, before this process makes any jansson value. */
        json_set_alloc_funcs(wiping_malloc, wiping_free);
        wiping = 1;
    }
    moat_class(L, BOX_MT, box_meta, NULL);
    luaL_newlibtable(L, funcs);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__name");
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, "array_mt");
    luaL_setfuncs(L, funcs, 1);
    lua_pushlightuserdata(L, NULL_SENTINEL);
    lua_setfield(L, -2, "null");
    return 1;
}
