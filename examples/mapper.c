/* mapper.c - the mapper in three uses:
 * 1. a million cheap items on threads (results written by index);
 * 2. Python llll's composition: a map whose fn is llll_pool_call, so each
 *    mapper thread keeps one worker process busy, results in order;
 * 3. a generator: two threads make items ahead, the main thread takes them. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llll.h"

static long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

/* 1. Squares of 0..N-1. */
enum { N = 1000000 };

static int square(void *ctx, size_t i)
{
    uint64_t *out = ctx;
    out[i] = (uint64_t)i * i;
    return 0;
}

/* 2. The workers' function: "n" in, fib(n) out, both as decimal text. */
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

enum { FIRST = 1, COUNT = 32 };   /* fib(1..32), as in the original README */

struct calls {
    llll_pool *pool;
    llll_buf result[COUNT];     /* one buffer per item: no sharing between threads */
};

static int call_worker(void *ctx, size_t i)
{
    struct calls *c = ctx;
    char n[16];
    int len = snprintf(n, sizeof n, "%d", FIRST + (int)i);
    return llll_pool_call(c->pool, n, (size_t)len, &c->result[i]);
}

/* 3. Hands out 1..LIMIT, then NULL; called by the generator's threads. */
enum { LIMIT = 20 };

static void *next_number(void *ctx)
{
    atomic_uintptr_t *next = ctx;
    uintptr_t v = atomic_fetch_add(next, 1);
    return v <= LIMIT ? (void *)v : NULL;
}

int main(void)
{
    /* Fork the pool's workers first: a forked child holds only the forking
     * thread, so starting them before any other thread keeps them simple. */
    llll_pool *pool;
    int rc = llll_pool_fork(&pool, answer, NULL, 0, NULL);
    if (rc) {
        fprintf(stderr, "mapper: cannot fork workers: %s\n", llll_strerror(rc));
        return 1;
    }

    /* As many mapper threads as workers: each thread keeps one busy. */
    llll_mapper *m;
    rc = llll_mapper_new(&m, llll_pool_size(pool));
    if (rc) {
        fprintf(stderr, "mapper: %s\n", llll_strerror(rc));
        llll_pool_free(pool);
        return 1;
    }

    uint64_t *sq = malloc(N * sizeof *sq);
    rc = sq ? llll_mapper_map(m, N, square, sq) : -ENOMEM;
    if (rc == 0)
        printf("squares: %d items on %d threads, the last is %llu\n", N,
               llll_pool_size(pool), (unsigned long long)sq[N - 1]);
    free(sq);

    struct calls c = { .pool = pool };
    if (rc == 0) {
        rc = llll_mapper_map(m, COUNT, call_worker, &c);
        printf("fib by %d worker processes, in order:\n", llll_pool_size(pool));
        for (int i = 0; i < COUNT; i++)
            printf("  fib(%d) = %.*s\n", FIRST + i, (int)c.result[i].len,
                   c.result[i].data ? (char *)c.result[i].data : "");
        if (rc)
            printf("  (the first failure: %s)\n", llll_strerror(rc));
    }
    for (int i = 0; i < COUNT; i++)
        llll_buf_free(&c.result[i]);
    llll_mapper_free(m);
    llll_pool_free(pool);

    if (rc == 0) {
        atomic_uintptr_t next = 1;
        llll_gen *g;
        rc = llll_gen_new(&g, next_number, &next, 2, 4);
        if (rc == 0) {
            uintptr_t sum = 0;
            void *item;
            while ((rc = llll_gen_get(g, &item, -1)) == 0)
                sum += (uintptr_t)item;
            if (rc == LLLL_EOF)
                rc = 0;
            printf("generator: the sum of 1..%d made by 2 threads is %lu\n", LIMIT, (unsigned long)sum);
            llll_gen_free(g);
        }
    }
    if (rc)
        fprintf(stderr, "mapper: %s\n", llll_strerror(rc));
    return rc ? 1 : 0;
}
