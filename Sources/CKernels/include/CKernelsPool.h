#ifndef RQAT_CKERNELS_POOL_H
#define RQAT_CKERNELS_POOL_H
#include <stddef.h>

// A fixed pool of worker threads for the many short parallel loops of decoding (a few
// microseconds each, hundreds per token). Workers spin briefly between jobs, then sleep, so
// a job costs no thread wake-up when jobs come back to back, and an idle process uses no CPU.
typedef void (*rqat_task_fn)(void *context, size_t task);

// Sets the number of threads taking part in a job (the caller counts as one). Not thread-safe:
// call it while no job runs.
void rqat_pool_set_threads(int threads);
int rqat_pool_threads(void);

// Runs fn(context, t) for t in [0, tasks) across the pool and returns when all are done.
// Jobs from several threads at once are serialised.
void rqat_pool_run(size_t tasks, rqat_task_fn fn, void *context);

#endif
