#include "CKernelsPool.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__x86_64__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define MAX_THREADS 256
// Spin iterations before a worker sleeps: ~100 microseconds, longer than the gap between the
// kernels of one decode step, far shorter than any pause between steps that matters.
#define SPIN_LIMIT 20000

static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;     // one job at a time
static pthread_mutex_t sleep_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;

static int pool_threads = 1;            // threads per job, caller included
static int workers_started = 0;         // worker threads alive (they never exit)
static atomic_uint_fast64_t generation; // bumped once per job
static atomic_int sleepers;

static rqat_task_fn job_fn;
static void *job_context;
static size_t job_tasks;
static atomic_size_t next_task;
static atomic_int busy_workers;         // workers that have not yet finished the current job
// Set on a thread while it runs a job's tasks: a task that starts a parallel loop of its own
// (a head transform inside attention's loop over heads, say) runs that loop itself, since the
// pool runs one job at a time and waiting for it would deadlock.
static _Thread_local int running_a_job;

static void run_tasks(void) {
    running_a_job = 1;
    for (;;) {
        size_t t = atomic_fetch_add_explicit(&next_task, 1, memory_order_relaxed);
        if (t >= job_tasks) break;
        job_fn(job_context, t);
    }
    running_a_job = 0;
}

struct worker_start { int index; uint_fast64_t generation; };

static void *worker_main(void *arg) {
    struct worker_start start = *(struct worker_start *)arg;
    free(arg);
    int index = start.index;              // 1-based: the caller is 0
    // The generation at creation, not at the time this thread first runs: a job published in
    // between must still be seen as new.
    uint_fast64_t seen = start.generation;
    for (;;) {
        int spins = 0;
        uint_fast64_t now;
        while ((now = atomic_load_explicit(&generation, memory_order_acquire)) == seen) {
            if (++spins < SPIN_LIMIT) { cpu_relax(); continue; }
            pthread_mutex_lock(&sleep_lock);
            atomic_fetch_add(&sleepers, 1);
            while ((now = atomic_load_explicit(&generation, memory_order_acquire)) == seen)
                pthread_cond_wait(&wake, &sleep_lock);
            atomic_fetch_sub(&sleepers, 1);
            pthread_mutex_unlock(&sleep_lock);
            break;
        }
        seen = now;
        // Every started worker acknowledges every job exactly once (the caller waits for all
        // of them before the next job can start), so no job can be missed or counted twice.
        // Workers beyond the current thread setting only acknowledge.
        if (index < pool_threads) run_tasks();
        atomic_fetch_sub_explicit(&busy_workers, 1, memory_order_release);
    }
    return NULL;
}

void rqat_pool_set_threads(int threads) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    pthread_mutex_lock(&job_lock);
    while (workers_started < threads - 1) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        struct worker_start *start = malloc(sizeof *start);
        if (!start) break;
        start->index = workers_started + 1;
        start->generation = atomic_load(&generation);
        if (pthread_create(&t, &attr, worker_main, start) != 0) { free(start); break; }
        pthread_attr_destroy(&attr);
        workers_started++;
    }
    pool_threads = workers_started + 1 < threads ? workers_started + 1 : threads;
    pthread_mutex_unlock(&job_lock);
}

int rqat_pool_threads(void) { return pool_threads; }

void rqat_pool_run(size_t tasks, rqat_task_fn fn, void *context) {
    if (tasks == 0) return;
    if (pool_threads == 1 || tasks == 1 || running_a_job) {
        for (size_t t = 0; t < tasks; t++) fn(context, t);
        return;
    }
    pthread_mutex_lock(&job_lock);
    job_fn = fn;
    job_context = context;
    job_tasks = tasks;
    atomic_store_explicit(&next_task, 0, memory_order_relaxed);
    atomic_store_explicit(&busy_workers, workers_started, memory_order_relaxed);
    atomic_fetch_add_explicit(&generation, 1, memory_order_release);
    if (atomic_load(&sleepers) > 0) {
        pthread_mutex_lock(&sleep_lock);
        pthread_cond_broadcast(&wake);
        pthread_mutex_unlock(&sleep_lock);
    }
    run_tasks();
    while (atomic_load_explicit(&busy_workers, memory_order_acquire) > 0) cpu_relax();
    pthread_mutex_unlock(&job_lock);
}
