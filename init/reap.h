/* moat-init --reap: the watchdog that cleans up after a moat that died (see reap.c). */
#ifndef MOAT_INIT_REAP_H
#define MOAT_INIT_REAP_H

#include <sys/types.h>

/* Watches moat (pid parent, this process's parent) until it is gone, then kills the children
 * it saw and runs cleanup (a NULL-terminated argv, possibly empty) in passes. Returns 0. */
int run_reap(pid_t parent, char **cleanup);

#endif
