/* bench/mapper.c - llll_mapper_map against OpenMP in the same run.
 *
 * (a) 20 M items of out[i] = in[i] * 2 + 1, 2 threads, vs
 *     `omp parallel for schedule(static)`; both call the item through the same
 *     function pointer (read from a volatile, so nothing is inlined).
 * (b) the same vs schedule(dynamic, 1).
 * (c) 64 coarse items (naive fib(27) each): speedup over a sequential loop.
 * Each pair is run alternately, 5 times (15 for c); the figures are medians. */
#define _GNU_SOURCE
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "llll.h"
#include "bench.h"

/* (c) is short (~15 ms a run), so it takes more runs for a stable median. */
enum { N = 20000000, REPS = 5, COARSE_REPS = 15, COARSE = 64, FIB = 27, THREADS = 2 };

typedef struct {
    const uint32_t *in;
    uint32_t *out;
} arrays;

static int item_fn(void *ctx, size_t i)
{
    arrays *a = ctx;
    a->out[i] = a->in[i] * 2 + 1;
    return 0;
}

static unsigned fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static volatile unsigned fib_n = FIB;

static int fib_fn(void *ctx, size_t i)
{
    unsigned *out = ctx;
    out[i] = fib(fib_n);
    return 0;
}

/* Read through a volatile, so every loop below makes an indirect call. */
static llll_map_fn *volatile item_ptr = item_fn;
static llll_map_fn *volatile fib_ptr = fib_fn;

static int fails;

static void check(const arrays *a, const char *what)
{
    for (size_t i = 0; i < N; i++)
        if (a->out[i] != a->in[i] * 2 + 1) {
            fprintf(stderr, "bench/mapper: %s: wrong result at %zu\n", what, i);
            fails = 1;
            return;
        }
}

static double run_llll(llll_mapper *m, size_t n, llll_map_fn *fn, void *ctx)
{
    double t = now();
    int rc = llll_mapper_map(m, n, fn, ctx);
    t = now() - t;
    if (rc != 0) {
        fprintf(stderr, "bench/mapper: map: %s\n", llll_strerror(rc));
        fails = 1;
    }
    return t;
}

static double run_seq(size_t n, llll_map_fn *fn, void *ctx)
{
    double t = now();
    for (size_t i = 0; i < n; i++)
        fn(ctx, i);
    return now() - t;
}

static double run_omp_static(size_t n, llll_map_fn *fn, void *ctx)
{
    double t = now();
#pragma omp parallel for schedule(static) num_threads(THREADS)
    for (size_t i = 0; i < n; i++)
        fn(ctx, i);
    return now() - t;
}

static double run_omp_dynamic(size_t n, llll_map_fn *fn, void *ctx)
{
    double t = now();
#pragma omp parallel for schedule(dynamic, 1) num_threads(THREADS)
    for (size_t i = 0; i < n; i++)
        fn(ctx, i);
    return now() - t;
}

static void clear(arrays *a)
{
    for (size_t i = 0; i < N; i++)
        a->out[i] = 0;
}

int main(void)
{
    uint32_t *in = malloc(N * sizeof *in), *out = malloc(N * sizeof *out);
    unsigned *fibs = calloc(COARSE, sizeof *fibs);
    llll_mapper *m;
    if (!in || !out || !fibs || llll_mapper_new(&m, THREADS) != 0) {
        fprintf(stderr, "bench/mapper: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < N; i++)
        in[i] = (uint32_t)(i * 2654435761u);
    arrays a = {in, out};
    clear(&a);  /* fault the pages in before any timing */
    llll_map_fn *fn = item_ptr, *ffn = fib_ptr;

    /* Warm up both pools (thread start, first wake-up). */
    run_llll(m, N, fn, &a);
    run_omp_static(N, fn, &a);
    run_omp_dynamic(1000, fn, &a);

    double seq[REPS], l[REPS], s[REPS], rs[REPS], l2[REPS], d[REPS], rd[REPS];
    for (int r = 0; r < REPS; r++) {
        clear(&a);
        seq[r] = run_seq(N, fn, &a);
        check(&a, "sequential");
        clear(&a);
        l[r] = run_llll(m, N, fn, &a);
        check(&a, "llll");
        clear(&a);
        s[r] = run_omp_static(N, fn, &a);
        check(&a, "omp static");
        rs[r] = l[r] / s[r];
    }
    for (int r = 0; r < REPS; r++) {
        clear(&a);
        d[r] = run_omp_dynamic(N, fn, &a);
        check(&a, "omp dynamic");
        clear(&a);
        l2[r] = run_llll(m, N, fn, &a);
        check(&a, "llll");
        rd[r] = l2[r] / d[r];
    }
    printf("(a) %d M items of in[i]*2+1 via a function pointer, %d threads, median of %d\n",
           N / 1000000, THREADS, REPS);
    printf("    sequential loop          %8.2f ms\n", median(seq, REPS) * 1e3);
    printf("    llll_mapper_map          %8.2f ms\n", median(l, REPS) * 1e3);
    printf("    omp schedule(static)     %8.2f ms\n", median(s, REPS) * 1e3);
    printf("    llll / omp static        %8.2f   (target <= 1.3; pairwise median)\n", median(rs, REPS));
    printf("(b) the same against schedule(dynamic, 1)\n");
    printf("    llll_mapper_map          %8.2f ms\n", median(l2, REPS) * 1e3);
    printf("    omp schedule(dynamic,1)  %8.2f ms\n", median(d, REPS) * 1e3);
    printf("    llll / omp dynamic,1     %8.2f   (below 1: llll faster)\n", median(rd, REPS));

    double cs[COARSE_REPS], cl[COARSE_REPS], sp[COARSE_REPS];
    for (int r = 0; r < COARSE_REPS; r++) {
        cs[r] = run_seq(COARSE, ffn, fibs);
        cl[r] = run_llll(m, COARSE, ffn, fibs);
        sp[r] = cs[r] / cl[r];
    }
    for (int i = 0; i < COARSE; i++)
        if (fibs[i] != 196418u)
            fails = 1;
    printf("(c) %d coarse items, naive fib(%d) each\n", COARSE, FIB);
    printf("    sequential loop          %8.2f ms\n", median(cs, COARSE_REPS) * 1e3);
    printf("    llll_mapper_map          %8.2f ms\n", median(cl, COARSE_REPS) * 1e3);
    printf("    speedup over sequential  %8.2f   (target >= 1.85 on 2 cores)\n", median(sp, COARSE_REPS));

    llll_mapper_free(m);
    free(in);
    free(out);
    free(fibs);
    return fails;
}
