/* Preloaded after the ASan runtime into lua5.4 by spec/asan/lua5.4 during `make test-asan`:
 * sets LD_PRELOAD back to what the caller asked for, so that only lua5.4 processes (which
 * load the instrumented C modules) carry the runtime. Other programs the specs start, such
 * as pgrep, can hang with it preloaded. */
#include <stdlib.h>

__attribute__((constructor)) static void unpreload(void)
{
    const char *want = getenv("MOAT_ASAN_CALLER_PRELOAD");
    if (want != NULL && *want != '\0')
        setenv("LD_PRELOAD", want, 1);
    else
        unsetenv("LD_PRELOAD");
    unsetenv("MOAT_ASAN_CALLER_PRELOAD");
}
