/* pool_map.c - bulk maps over a pool of worker processes: fib(n) for n in
 * 1..32, results printed in order as they come, then a million trivial items
 * through one map (batched both ways, so they cost no round trip each). */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "llll.h"

static long fib(long n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

/* The workers' function: "fib" items carry a long n, trivial ones a uint32. */
static int work(void *ctx, const void *arg, size_t len, llll_buf *result)
{
    (void)ctx;
    if (len == sizeof(long)) {
        long n, v;
        memcpy(&n, arg, sizeof n);
        v = fib(n);
        return llll_buf_set(result, &v, sizeof v) ? 1 : 0;
    }
    uint32_t x;
    if (len != sizeof x)
        return llll_buf_set(result, "bad argument", 12), 1;
    memcpy(&x, arg, sizeof x);
    x = x * 2 + 1;
    return llll_buf_set(result, &x, sizeof x) ? 1 : 0;
}

/* Item i of the fib map is n = i + 1. */
static int fib_arg(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    long n = (long)i + 1;
    return llll_buf_set(arg, &n, sizeof n);
}

static int fib_result(void *ctx, size_t i, int rc, const void *result, size_t len)
{
    (void)ctx;
    long v;
    if (rc || len != sizeof v) {
        printf("  fib(%zu) failed: %s\n", i + 1, llll_strerror(rc));
        return 0;
    }
    memcpy(&v, result, sizeof v);
    printf("  fib(%zu) = %ld\n", i + 1, v);
    return 0;
}

static int trivial_arg(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    uint32_t x = (uint32_t)i;
    return llll_buf_set(arg, &x, sizeof x);
}

static int trivial_result(void *ctx, size_t i, int rc, const void *result, size_t len)
{
    uint64_t *sum = ctx;
    uint32_t y;
    if (rc || len != sizeof y)
        return rc ? rc : -1;   /* stops the map */
    memcpy(&y, result, sizeof y);
    if (y != (uint32_t)i * 2 + 1)
        return -1;
    *sum += y;
    return 0;
}

int main(void)
{
    llll_pool *pool;
    int rc = llll_pool_fork(&pool, work, NULL, 0, NULL);
    if (rc) {
        fprintf(stderr, "pool_map: cannot fork workers: %s\n", llll_strerror(rc));
        return 1;
    }
    printf("fib over 1..32 with %d workers:\n", llll_pool_size(pool));
    rc = llll_pool_map(pool, 32, fib_arg, fib_result, NULL, NULL);
    if (rc) {
        fprintf(stderr, "pool_map: fib map: %s\n", llll_strerror(rc));
        llll_pool_free(pool);
        return 1;
    }

    uint64_t sum = 0;
    size_t n = 1000000;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = llll_pool_map(pool, n, trivial_arg, trivial_result, &sum, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc) {
        fprintf(stderr, "pool_map: trivial map: %s\n", llll_strerror(rc));
        llll_pool_free(pool);
        return 1;
    }
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    printf("a million items x -> 2x + 1: sum %llu, %.0f items/s\n", (unsigned long long)sum, (double)n / s);
    llll_pool_free(pool);
    return 0;
}
