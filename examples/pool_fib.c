/* pool_fib.c - the README's fibonacci pool: fib(25..32) computed by a pool of
 * worker processes, called from a few threads, results printed in order.
 * First with a worker program (pool_fib_worker, next to this program), then
 * with workers forked from this program (no second binary). */
#define _GNU_SOURCE
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llll.h"

#define FIRST 25
#define COUNT 8
#define THREADS 3

static long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

/* The forked workers' function: the same protocol as pool_fib_worker. */
static int answer(void *ctx, const void *arg, size_t len, llll_buf *result)
{
    (void)ctx;
    char text[32];
    if (len == 0 || len >= sizeof text)
        return 1;
    memcpy(text, arg, len);
    text[len] = '\0';
    char out[32];
    int n = snprintf(out, sizeof out, "%ld", fib(strtol(text, NULL, 10)));
    return llll_buf_set(result, out, (size_t)n) ? 1 : 0;
}

struct job {
    llll_pool *pool;
    atomic_int next;            /* the next index to compute */
    char results[COUNT][32];
    int rc[COUNT];
};

/* Each thread takes the next n, calls the pool, stores the answer by index. */
static void *caller(void *arg)
{
    struct job *job = arg;
    llll_buf result = LLLL_BUF_INIT;
    for (int i; (i = atomic_fetch_add(&job->next, 1)) < COUNT;) {
        char n[16];
        int len = snprintf(n, sizeof n, "%d", FIRST + i);
        job->rc[i] = llll_pool_call(job->pool, n, (size_t)len, &result);
        size_t k = result.len < 31 ? result.len : 31;
        memcpy(job->results[i], result.data, k);
        job->results[i][k] = '\0';
    }
    llll_buf_free(&result);
    return NULL;
}

static int run(const char *title, llll_pool *pool)
{
    struct job job = { .pool = pool };
    pthread_t th[THREADS];
    int started = 0;
    while (started < THREADS && pthread_create(&th[started], NULL, caller, &job) == 0)
        started++;
    caller(&job);   /* this thread works too */
    for (int t = 0; t < started; t++)
        pthread_join(th[t], NULL);
    printf("%s (%d workers):\n", title, llll_pool_size(pool));
    int failed = 0;
    for (int i = 0; i < COUNT; i++) {
        if (job.rc[i]) {
            printf("  fib(%d) failed: %s\n", FIRST + i, llll_strerror(job.rc[i]));
            failed = 1;
        } else {
            printf("  fib(%d) = %s\n", FIRST + i, job.results[i]);
        }
    }
    return failed;
}

int main(int argc, char **argv)
{
    (void)argc;
    /* The worker program sits next to this one. */
    char *self = strdup(argv[0]);
    char worker[4096];
    snprintf(worker, sizeof worker, "%s/pool_fib_worker", self ? dirname(self) : ".");
    free(self);

    llll_pool *pool;
    const char *const wargv[] = { worker, NULL };
    int rc = llll_pool_start(&pool, wargv, 0, NULL);
    if (rc) {
        fprintf(stderr, "pool_fib: cannot start %s: %s\n", worker, llll_strerror(rc));
        return 1;
    }
    int failed = run("worker programs", pool);
    llll_pool_free(pool);

    rc = llll_pool_fork(&pool, answer, NULL, 0, NULL);
    if (rc) {
        fprintf(stderr, "pool_fib: cannot fork workers: %s\n", llll_strerror(rc));
        return 1;
    }
    failed |= run("forked workers", pool);
    llll_pool_free(pool);
    return failed;
}
