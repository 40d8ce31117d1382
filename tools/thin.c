/* Build-time: thins a Lua 5.4 binary chunk (lua_dump output) by dropping the names of local
 * variables and upvalues from its debug information, and keeping the rest (source, line info).
 * Undumping interns every one of those names as a Lua string, which was most of what loading
 * moat's built-in modules cost; errors and tracebacks still name file and line, they just say
 * "?" where they would name a local. The format is ldump.c's: the caller checks the result by
 * loading it and comparing its stripped dump with the original's, so a liblua whose format
 * differs fails the build instead of producing a broken binary. */
#include <stddef.h>
#include <string.h>

#include "thin.h"

#define HEADER_AFTER_SIGNATURE (1 + 1 + 6 + 1 + 1 + 1 + 8 + 8) /* version..LUAC_NUM */

/* Constant type tags (lobject.h's variants). */
enum { VNIL = 0x00, VFALSE = 0x01, VTRUE = 0x11, VNUMINT = 0x03, VNUMFLT = 0x13, VSHRSTR = 0x04, VLNGSTR = 0x14 };

struct rd {
    const unsigned char *p, *end;
    int bad;
};

struct wr {
    unsigned char *p, *end;
    int bad;
};

static void put(struct wr *w, const unsigned char *p, size_t n)
{
    if (w->bad || (size_t)(w->end - w->p) < n) {
        w->bad = 1;
        return;
    }
    memcpy(w->p, p, n);
    w->p += n;
}

/* Copies n bytes from r to w (w NULL: skips them). */
static void take(struct rd *r, struct wr *w, size_t n)
{
    if (r->bad || (size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return;
    }
    if (w)
        put(w, r->p, n);
    r->p += n;
}

/* ldump.c's dumpSize: 7 bits a byte, most significant first, the last byte marked 0x80. */
static size_t size_of(struct rd *r, struct wr *w)
{
    size_t x = 0;
    const unsigned char *start = r->p;
    for (;;) {
        if (r->p >= r->end || x >> (sizeof x * 8 - 7)) {
            r->bad = 1;
            return 0;
        }
        unsigned char b = *r->p++;
        x = (x << 7) | (b & 0x7f);
        if (b & 0x80)
            break;
    }
    if (w)
        put(w, start, (size_t)(r->p - start));
    return x;
}

static void put_size0(struct wr *w)
{
    static const unsigned char zero = 0x80;
    put(w, &zero, 1);
}

/* A string: its size + 1 (0: NULL), then its bytes. */
static void string_of(struct rd *r, struct wr *w)
{
    size_t n = size_of(r, w);
    if (n > 0)
        take(r, w, n - 1);
}

static void constants(struct rd *r, struct wr *w)
{
    size_t n = size_of(r, w);
    for (size_t i = 0; i < n && !r->bad; i++) {
        unsigned char tag = r->p < r->end ? *r->p : 0xff;
        take(r, w, 1);
        if (tag == VNUMINT || tag == VNUMFLT)
            take(r, w, 8);
        else if (tag == VSHRSTR || tag == VLNGSTR)
            string_of(r, w);
        else if (tag != VNIL && tag != VFALSE && tag != VTRUE)
            r->bad = 1;
    }
}

/* Line info is copied; local variable and upvalue names are replaced by empty lists. */
static void debug_info(struct rd *r, struct wr *w)
{
    take(r, w, size_of(r, w)); /* lineinfo: one byte an instruction */
    size_t n = size_of(r, w);  /* abslineinfo: pc, line */
    for (size_t i = 0; i < n && !r->bad; i++) {
        size_of(r, w);
        size_of(r, w);
    }
    n = size_of(r, NULL); /* locvars: name, startpc, endpc */
    for (size_t i = 0; i < n && !r->bad; i++) {
        string_of(r, NULL);
        size_of(r, NULL);
        size_of(r, NULL);
    }
    put_size0(w);
    n = size_of(r, NULL); /* upvalue names */
    for (size_t i = 0; i < n && !r->bad; i++)
        string_of(r, NULL);
    put_size0(w);
}

static void function(struct rd *r, struct wr *w, int depth)
{
    if (depth > 200) {
        r->bad = 1;
        return;
    }
    string_of(r, w);       /* source */
    size_of(r, w);         /* linedefined */
    size_of(r, w);         /* lastlinedefined */
    take(r, w, 3);         /* numparams, is_vararg, maxstacksize */
    take(r, w, 4 * size_of(r, w)); /* code */
    constants(r, w);
    take(r, w, 3 * size_of(r, w)); /* upvalues: instack, idx, kind */
    size_t n = size_of(r, w);      /* nested functions */
    for (size_t i = 0; i < n && !r->bad; i++)
        function(r, w, depth + 1);
    debug_info(r, w);
}

size_t thin_chunk(const unsigned char *in, size_t len, unsigned char *out)
{
    struct rd r = { in, in + len, 0 };
    struct wr w = { out, out + len, 0 };
    if (len < 4 || memcmp(in, "\x1bLua", 4) != 0)
        return 0;
    take(&r, &w, 4 + HEADER_AFTER_SIGNATURE + 1); /* header, then the main closure's upvalue count */
    function(&r, &w, 0);
    if (r.bad || w.bad || r.p != r.end)
        return 0;
    return (size_t)(w.p - out);
}
