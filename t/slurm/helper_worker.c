/* A pool worker for the Slurm tests, reached through srun (its channel is
 * then srun's stdin and stdout) or started locally. Requests:
 *   "sq N"          -> N*N in decimal
 *   "who"           -> "PID NAME", NAME the Slurm job name ("local" outside Slurm)
 *   "hold OUT IN"   -> writes "PID NAME\n" to the FIFO OUT, waits until the
 *                      FIFO IN is written to or closed, then answers "PID NAME"
 *   anything else   -> the request itself, unchanged (any bytes)
 * "--noisy" prints a line to stdout on every request before answering. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llll.h"

static bool noisy;

static int who(char *s, size_t n)
{
    const char *name = getenv("SLURM_JOB_NAME");
    return snprintf(s, n, "%ld %s", (long)getpid(), name ? name : "local");
}

/* Tells the test it holds a call, then waits for its word to answer. */
static int hold(const char *out, const char *in, llll_buf *res)
{
    char me[128];
    int n = who(me, sizeof me);
    /* Opened before reporting, so the test's release cannot come too soon. */
    int fi = open(in, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    int fo = open(out, O_WRONLY | O_CLOEXEC);
    if (fi < 0 || fo < 0)
        return llll_buf_set(res, "hold: open failed", 17), 1;
    me[n] = '\n';
    bool ok = write(fo, me, (size_t)n + 1) == n + 1;   /* atomic: under PIPE_BUF */
    close(fo);
    struct pollfd pf = { .fd = fi, .events = POLLIN };
    while (ok && poll(&pf, 1, -1) < 0)
        ok = errno == EINTR;
    close(fi);
    if (!ok)
        return llll_buf_set(res, "hold failed", 11), 1;
    return llll_buf_set(res, me, (size_t)n);
}

static int op(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    if (noisy) {
        /* a stray printf, as a library or a careless worker makes one */
        printf("noise from worker %ld\n", (long)getpid());
        fflush(stdout);
    }
    char cmd[PATH_MAX * 2 + 16], a[PATH_MAX], b[PATH_MAX];
    if (len < sizeof cmd) {
        memcpy(cmd, arg, len);
        cmd[len] = '\0';
        long long x;
        if (sscanf(cmd, "sq %lld", &x) == 1) {
            int n = snprintf(a, sizeof a, "%lld", x * x);
            return llll_buf_set(res, a, (size_t)n);
        }
        if (strcmp(cmd, "who") == 0) {
            int n = who(a, sizeof a);
            return llll_buf_set(res, a, (size_t)n);
        }
        if (sscanf(cmd, "hold %4095s %4095s", a, b) == 2)
            return hold(a, b, res);
    }
    return llll_buf_set(res, arg, len);
}

int main(int argc, char **argv)
{
    noisy = argc > 1 && strcmp(argv[1], "--noisy") == 0;
    int rc = llll_serve(op, NULL);
    if (rc)
        fprintf(stderr, "worker: llll_serve: %s\n", llll_strerror(rc));
    return rc ? 1 : 0;
}
