/* A pool of 2 workers through srun against a pool of 2 local workers: calls/s
 * (one calling thread, 16-byte arguments), small items/s and 64 KiB items/s
 * through llll_pool_map. The two pools alternate, ROUNDS times (default 5);
 * medians and ratios. Run inside t/slurm/cluster.sh (SLURM_CONF). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "llll.h"

#define MAXR 21
enum { CALLS, SMALL, BIG, NM };
static const char *const names[NM] = { "calls/s, 16 B", "map items/s, 16 B", "map items/s, 64 KiB" };
static const size_t sizes[NM] = { 16, 16, 65536 };
static const size_t nitems[NM] = { 0, 20000, 200 };

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_pool_srun: %s: %s\n", what, llll_strerror(rc));
    exit(1);
}

static unsigned char payload[65536];
struct items { size_t len; };

static int fill(void *ctx, size_t i, llll_buf *arg)
{
    (void)i;
    const struct items *it = ctx;
    return llll_buf_set(arg, payload, it->len);
}

static int check(void *ctx, size_t i, int rc, const void *result, size_t len)
{
    (void)i, (void)result;
    const struct items *it = ctx;
    return rc ? rc : len == it->len ? 0 : -EPROTO;
}

/* Operations per second of measure k on pool p. */
static double rate(llll_pool *p, int k)
{
    struct items it = { sizes[k] };
    if (k != CALLS) {
        double t0 = now();
        int rc = llll_pool_map(p, nitems[k], fill, check, &it, NULL);
        if (rc)
            die("map", rc);
        return (double)nitems[k] / (now() - t0);
    }
    llll_buf res = LLLL_BUF_INIT;
    int n = 0;
    double t0 = now(), t;
    do {
        int rc = llll_pool_call(p, payload, sizes[k], &res);
        if (rc)
            die("call", rc);
        n++;
        t = now();
    } while (n < 20 || (t - t0 < 0.4 && n < 1000000));
    llll_buf_free(&res);
    return n / (t - t0);
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (rounds < 1 || rounds > MAXR)
        rounds = 5;
    memset(payload, 'X', sizeof payload);   /* not a command of the worker: echoed */
    char worker[PATH_MAX], abs[PATH_MAX];
    const char *dir = getenv("LLLL_T_DIR");
    snprintf(worker, sizeof worker, "%s/helper_worker", dir ? dir : "build/t/slurm");
    if (!realpath(worker, abs))
        die(worker, -errno);
    const char *wargv[] = { abs, NULL };
    static const char *const srun[] = { "srun", "-N1", "-n1", "--unbuffered", "--quiet", NULL };
    const llll_host hosts[2][1] = { { { NULL, 2 } }, { { srun, 2 } } };
    double v[2][NM][MAXR], start[2][MAXR];
    for (int r = 0; r < rounds; r++) {
        for (int h = 0; h < 2; h++) {
            llll_pool_opts o = { 0 };
            o.hosts = hosts[h];
            o.nhosts = 1;
            llll_pool *p;
            double t0 = now();
            int rc = llll_pool_start(&p, wargv, 0, &o);
            if (rc)
                die(h ? "start through srun" : "start", rc);
            start[h][r] = now() - t0;
            for (int k = 0; k < NM; k++)
                v[h][k][r] = rate(p, k);
            llll_pool_free(p);
        }
    }
    printf("2 workers                %12s %12s %10s   (medians of %d alternating runs)\n", "local", "srun",
           "srun/local", rounds);
    double s0 = median(start[0], rounds), s1 = median(start[1], rounds);
    printf("%-24s %9.1f ms %9.1f ms %9.1fx\n", "pool start", s0 * 1e3, s1 * 1e3, s1 / s0);
    for (int k = 0; k < NM; k++) {
        double a = median(v[0][k], rounds), b = median(v[1][k], rounds);
        printf("%-24s %12.0f %12.0f %10.3fx\n", names[k], a, b, b / a);
    }
    return 0;
}
