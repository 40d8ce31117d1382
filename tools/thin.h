/* Thinning of Lua binary chunks at build time (see thin.c). */
#ifndef MOAT_TOOLS_THIN_H
#define MOAT_TOOLS_THIN_H

#include <stddef.h>

/* Writes chunk `in` (len bytes, lua_dump output) into `out` (room for len bytes) without the
 * names of locals and upvalues. Returns the new length, or 0 when `in` is not a chunk it reads. */
size_t thin_chunk(const unsigned char *in, size_t len, unsigned char *out);

#endif
