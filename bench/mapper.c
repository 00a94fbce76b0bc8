/* bench/mapper.c - llll_mapper_map against every OpenMP schedule, same run.
 *
 * Five workloads on 2 threads, each item called through the same function
 * pointer (read from a volatile, so nothing is inlined):
 *   trivial  20 M items of out[i] = in[i] * 2 + 1
 *   equal    64 items of naive fib(27)
 *   front    64 items of fib(27), the first 8 repeating it 50 times
 *   back     the same, the last 8 slow
 *   random   2000 items of busy work from 1 us to 2 ms, Pareto-tailed
 *            (alpha 0.5, fixed seed)
 * Each round runs llll and OpenMP static, dynamic,1, dynamic,64 and guided
 * once, in an order that rotates from round to round, each run after 10 ms
 * idle. "best" is the OpenMP
 * schedule with the lowest median; "ratio" is the median over rounds of
 * llll / best (below 1: llll faster). Rows of uneven items also run the items
 * one by one, timing each, and report llll against the ideal
 * max(total work / 2, longest item). Row names as arguments run only those. */
#define _GNU_SOURCE
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llll.h"
#include "bench.h"

enum { THREADS = 2, N_TRIVIAL = 20000000, COARSE = 64, SLOW = 8, SLOW_X = 50, FIB = 27,
       N_RANDOM = 2000 };

enum { V_LLLL, V_STATIC, V_DYN1, V_DYN64, V_GUIDED, NV };
static const char *const vname[NV] = {"llll", "static", "dynamic,1", "dynamic,64", "guided"};

static int fails;

/* ---------------------------------------------------------------- items */

typedef struct {
    const uint32_t *in;
    uint32_t *out;
} arrays;

static int trivial_fn(void *ctx, size_t i)
{
    arrays *a = ctx;
    a->out[i] = a->in[i] * 2 + 1;
    return 0;
}

static unsigned fib(unsigned n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

static volatile unsigned fib_n = FIB;

/* reps[i] times fib(27), the sum into out[i]. */
typedef struct {
    const unsigned *reps;
    unsigned *out;
} fibs;

static int fib_fn(void *ctx, size_t i)
{
    fibs *f = ctx;
    unsigned s = 0;
    for (unsigned r = 0; r < f->reps[i]; r++)
        s += fib(fib_n);
    f->out[i] = s;
    return 0;
}

/* iters[i] rounds of a multiply-add chain, the last value into out[i]. */
typedef struct {
    const uint64_t *iters;
    uint64_t *out;
} spins;

static uint64_t spin(uint64_t k, uint64_t x)
{
    for (uint64_t r = 0; r < k; r++)
        x = x * 6364136223846793005u + 1442695040888963407u;
    return x;
}

static int spin_fn(void *ctx, size_t i)
{
    spins *s = ctx;
    s->out[i] = spin(s->iters[i], i);
    return 0;
}

/* Read through a volatile, so every loop below makes an indirect call. */
static llll_map_fn *volatile trivial_ptr = trivial_fn;
static llll_map_fn *volatile fib_ptr = fib_fn;
static llll_map_fn *volatile spin_ptr = spin_fn;

/* ---------------------------------------------------------------- runners */

#define OMP_RUNNER(name, sched)                                                \
    static void name(size_t n, llll_map_fn *fn, void *ctx)                     \
    {                                                                          \
        _Pragma(sched) for (size_t i = 0; i < n; i++) fn(ctx, i);              \
    }
OMP_RUNNER(omp_static, "omp parallel for schedule(static) num_threads(THREADS)")
OMP_RUNNER(omp_dyn1, "omp parallel for schedule(dynamic, 1) num_threads(THREADS)")
OMP_RUNNER(omp_dyn64, "omp parallel for schedule(dynamic, 64) num_threads(THREADS)")
OMP_RUNNER(omp_guided, "omp parallel for schedule(guided) num_threads(THREADS)")

static llll_mapper *mapper;

static double run(int v, size_t n, llll_map_fn *fn, void *ctx)
{
    double t = now();
    switch (v) {
    case V_LLLL: {
        int rc = llll_mapper_map(mapper, n, fn, ctx);
        if (rc != 0) {
            fprintf(stderr, "bench/mapper: map: %s\n", llll_strerror(rc));
            fails = 1;
        }
        break;
    }
    case V_STATIC: omp_static(n, fn, ctx); break;
    case V_DYN1: omp_dyn1(n, fn, ctx); break;
    case V_DYN64: omp_dyn64(n, fn, ctx); break;
    default: omp_guided(n, fn, ctx); break;
    }
    return now() - t;
}

/* OpenMP's threads spin for a while (here 1-3 ms) after a parallel loop, on
 * the CPUs the next run needs: every run starts after 10 ms of idleness, so
 * each finds the other's threads asleep, as its own. */
static void settle(void)
{
    struct timespec pause = {0, 10000000};
    nanosleep(&pause, NULL);
}

/* The items one by one: total and longest time. */
static void run_each(size_t n, llll_map_fn *fn, void *ctx, double *total, double *longest)
{
    *total = *longest = 0;
    for (size_t i = 0; i < n; i++) {
        double t = now();
        fn(ctx, i);
        t = now() - t;
        *total += t;
        if (t > *longest)
            *longest = t;
    }
}

typedef struct {
    const char *name;
    size_t n;
    llll_map_fn *fn;
    void *ctx;
    int rounds;
    int uneven;                 /* also measure against the ideal */
    void (*reset)(void *ctx);   /* clears the outputs before a run */
    int (*ok)(void *ctx);       /* checks them after */
} row;

static void bench_row(const row *r)
{
    double t[NV][64], ratio[NV][64], ideal[64], vs_ideal[64];
    run(V_LLLL, r->n, r->fn, r->ctx); /* warm up */
    for (int k = 0; k < r->rounds; k++) {
        for (int s = 0; s < NV; s++) {
            int v = (k + s) % NV;
            r->reset(r->ctx);
            settle();
            t[v][k] = run(v, r->n, r->fn, r->ctx);
            if (!r->ok(r->ctx)) {
                fprintf(stderr, "bench/mapper: %s: %s: wrong result\n", r->name, vname[v]);
                fails = 1;
            }
        }
        for (int v = 1; v < NV; v++)
            ratio[v][k] = t[V_LLLL][k] / t[v][k];
        if (r->uneven) {
            double total, longest;
            run_each(r->n, r->fn, r->ctx, &total, &longest);
            ideal[k] = total / THREADS > longest ? total / THREADS : longest;
            vs_ideal[k] = t[V_LLLL][k] / ideal[k];
        }
    }
    double med[NV];
    int best = V_STATIC;
    for (int v = 0; v < NV; v++) {
        double c[64];
        memcpy(c, t[v], sizeof c);
        med[v] = median(c, r->rounds);
        if (v > V_LLLL && med[v] < med[best])
            best = v;
    }
    printf("%-8s %8.2f %8.2f %8.2f %8.2f %8.2f  %-10s %5.2f", r->name, med[V_LLLL] * 1e3,
           med[V_STATIC] * 1e3, med[V_DYN1] * 1e3, med[V_DYN64] * 1e3, med[V_GUIDED] * 1e3,
           vname[best], median(ratio[best], r->rounds));
    if (r->uneven)
        printf("  %8.2f %5.2f", median(ideal, r->rounds) * 1e3, median(vs_ideal, r->rounds));
    printf("\n");
    fflush(stdout);
}

/* ---------------------------------------------------------------- rows */

static void trivial_reset(void *ctx)
{
    arrays *a = ctx;
    memset(a->out, 0, N_TRIVIAL * sizeof *a->out);
}

static int trivial_ok(void *ctx)
{
    arrays *a = ctx;
    for (size_t i = 0; i < N_TRIVIAL; i++)
        if (a->out[i] != a->in[i] * 2 + 1)
            return 0;
    return 1;
}

static unsigned fib_value;

static void fib_reset(void *ctx)
{
    fibs *f = ctx;
    memset(f->out, 0, COARSE * sizeof *f->out);
}

static int fib_ok(void *ctx)
{
    fibs *f = ctx;
    for (size_t i = 0; i < COARSE; i++)
        if (f->out[i] != f->reps[i] * fib_value)
            return 0;
    return 1;
}

static void spin_reset(void *ctx)
{
    spins *s = ctx;
    memset(s->out, 0, N_RANDOM * sizeof *s->out);
}

static uint64_t spin_want[N_RANDOM];

static int spin_ok(void *ctx)
{
    spins *s = ctx;
    return memcmp(s->out, spin_want, sizeof spin_want) == 0;
}

/* splitmix64: a fixed sequence whatever the libc. */
static uint64_t rnd(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

/* Rounds of spin() per microsecond on this machine. */
static double spin_rate(void)
{
    double best = 0;
    for (int k = 0; k < 5; k++) {
        double t = now();
        volatile uint64_t x = spin(2000000, (uint64_t)k);
        (void)x;
        double rate = 2000000 / ((now() - t) * 1e6);
        if (rate > best)
            best = rate;
    }
    return best;
}

int main(int argc, char **argv)
{
    uint32_t *in = malloc(N_TRIVIAL * sizeof *in), *out = malloc(N_TRIVIAL * sizeof *out);
    if (!in || !out || llll_mapper_new(&mapper, THREADS) != 0) {
        fprintf(stderr, "bench/mapper: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < N_TRIVIAL; i++)
        in[i] = (uint32_t)(i * 2654435761u);
    arrays a = {in, out};
    trivial_reset(&a); /* fault the pages in before any timing */

    fib_value = fib(FIB);
    unsigned equal[COARSE], front[COARSE], back[COARSE], fout[COARSE];
    for (int i = 0; i < COARSE; i++) {
        equal[i] = 1;
        front[i] = i < SLOW ? SLOW_X : 1;
        back[i] = i >= COARSE - SLOW ? SLOW_X : 1;
    }
    fibs fe = {equal, fout}, ff = {front, fout}, fb = {back, fout};

    static uint64_t iters[N_RANDOM], sout[N_RANDOM];
    double per_us = spin_rate();
    uint64_t seed = 11;
    for (size_t i = 0; i < N_RANDOM; i++) {
        /* Pareto, alpha 0.5 (P(cost > x us) = 1 / sqrt(x)), cut at 2 ms. */
        double u = ((double)(rnd(&seed) >> 11) + 1) / 9007199254740993.0;
        double us = 1.0 / (u * u);
        if (us > 2000)
            us = 2000;
        iters[i] = (uint64_t)(us * per_us);
        spin_want[i] = spin(iters[i], i);
    }
    spins sp = {iters, sout};

    const row rows[] = {
        {"trivial", N_TRIVIAL, trivial_ptr, &a, 7, 0, trivial_reset, trivial_ok},
        {"equal", COARSE, fib_ptr, &fe, 21, 1, fib_reset, fib_ok},
        {"front", COARSE, fib_ptr, &ff, 11, 1, fib_reset, fib_ok},
        {"back", COARSE, fib_ptr, &fb, 11, 1, fib_reset, fib_ok},
        {"random", N_RANDOM, spin_ptr, &sp, 11, 1, spin_reset, spin_ok},
    };
    printf("%d threads; times in ms, medians; ratio = median of llll / best in the same round\n",
           THREADS);
    printf("%-8s %8s %8s %8s %8s %8s  %-10s %5s  %8s %5s\n", "row", "llll", "static", "dyn,1",
           "dyn,64", "guided", "best", "ratio", "ideal", "/ideal");
    for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
        int picked = argc < 2;
        for (int a = 1; a < argc; a++)
            picked |= strcmp(argv[a], rows[k].name) == 0;
        if (picked)
            bench_row(&rows[k]);
    }
    printf("target: ratio <= 1.15 on every row; /ideal <= 1.15 on front, back, random\n");

    llll_mapper_free(mapper);
    free(in);
    free(out);
    return fails;
}
