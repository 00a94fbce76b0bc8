/* Frames through srun against the same echo program started locally, both
 * over stdin/stdout pipes: launch time, round trips of 16 B, 4 KiB and
 * 64 KiB frames, and the throughput those 64 KiB round trips give. Local and
 * srun alternate, ROUNDS times (default 5); medians. Run inside
 * t/slurm/cluster.sh (SLURM_CONF). */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "llll.h"
#include "srun.h"

#define MAXR 21
enum { LAUNCH, RT16, RT4K, RT64K, NM };
static const char *const names[NM] = { "launch to first frame", "round trip, 16 B", "round trip, 4 KiB",
                                       "round trip, 64 KiB" };
static const size_t sizes[NM] = { 0, 16, 4096, 65536 };

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_srun: %s: %s\n", what, llll_strerror(rc));
    exit(1);
}

/* Seconds per round trip of len-byte frames: as many as fit in ~0.4 s, at
 * least 5. */
static double round_trips(llll_sbc *ch, size_t len)
{
    static unsigned char data[65536];
    llll_buf b = LLLL_BUF_INIT;
    int n = 0;
    double t0 = now(), t;
    do {
        int rc = llll_sbc_send(ch, data, len);
        if (rc || (rc = llll_sbc_recv(ch, &b, -1)))
            die("echo", rc);
        if (b.len != len)
            die("echo length", -EPROTO);
        n++;
        t = now();
    } while (n < 5 || (t - t0 < 0.4 && n < 100000));
    llll_buf_free(&b);
    return (t - t0) / n;
}

/* One run against the echo started by argv: fills m[NM] (seconds). */
static void run(const char *const argv[], double *m)
{
    double t0 = now();
    struct launched l;
    int rc = launch(&l, argv, 0);
    if (rc)
        die(argv[0], rc);
    llll_sbc *ch;
    if ((rc = llll_sbc_open(&ch, l.from, l.to)))
        die("open", rc);
    llll_buf b = LLLL_BUF_INIT;
    if ((rc = llll_sbc_recv(ch, &b, -1)))
        die("hello", rc);
    m[LAUNCH] = now() - t0;
    llll_buf_free(&b);
    for (int k = RT16; k < NM; k++)
        m[k] = round_trips(ch, sizes[k]);
    llll_sbc_close(ch);
    int st;
    while (waitpid(l.pid, &st, 0) < 0)
        ;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (rounds < 1 || rounds > MAXR)
        rounds = 5;
    char echo[PATH_MAX];
    const char *dir = getenv("LLLL_T_DIR");
    snprintf(echo, sizeof echo, "%s/helper_echo", dir ? dir : "build/t/slurm");
    char abs[PATH_MAX];
    if (!realpath(echo, abs))
        die(echo, -errno);
    const char *local[] = { "env", "LLLL_SBC_FD=0,1", abs, NULL };
    const char *srun[] = { "srun", "-N1", "-n1", "--unbuffered", "--quiet", "env", "LLLL_SBC_FD=0,1", abs, NULL };
    double v[2][NM][MAXR];
    for (int r = 0; r < rounds; r++) {
        double m[NM];
        run(local, m);
        for (int k = 0; k < NM; k++)
            v[0][k][r] = m[k];
        run(srun, m);
        for (int k = 0; k < NM; k++)
            v[1][k][r] = m[k];
    }
    printf("%-24s %12s %12s %9s   (medians of %d alternating runs)\n", "", "local", "srun", "srun/local", rounds);
    double med[2][NM];
    for (int k = 0; k < NM; k++) {
        med[0][k] = median(v[0][k], rounds);
        med[1][k] = median(v[1][k], rounds);
        printf("%-24s %9.1f us %9.1f us %9.1fx\n", names[k], med[0][k] * 1e6, med[1][k] * 1e6,
               med[1][k] / med[0][k]);
    }
    printf("%-24s %7.1f MB/s %7.1f MB/s %9.3fx\n", "64 KiB frames echoed", 65536 / med[0][RT64K] / 1e6,
           65536 / med[1][RT64K] / 1e6, med[0][RT64K] / med[1][RT64K]);
    printf("%-24s %9.0f /s %9.0f /s %9.3fx\n", "16 B round trips", 1 / med[0][RT16], 1 / med[1][RT16],
           med[0][RT16] / med[1][RT16]);
    return 0;
}
