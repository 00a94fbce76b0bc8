/* A pool worker for the tests of hosts and launchers. Requests are text:
 *   "fib N"      -> fib(N) in decimal
 *   "argv"       -> its argv, words joined by '|'
 *   "pids"       -> "PID PPID"
 *   "getenv K"   -> the value of K, "(unset)" when unset
 *   "stdio"      -> what fds 0 and 1 are now: "0:null 1:stderr" when stdin
 *                   reads /dev/null and stdout is the same file as stderr
 *   "hold A R"   -> writes "PID PPID\n" to the FIFO A, then waits for a
 *                   byte from the FIFO R (the test keeps both open for
 *                   reading and writing), then answers "released"
 *   "crash"      -> the worker kills itself (SIGKILL) mid-call
 * "--noisy" prints "noise N" to stdout (with printf) and "err N" to stderr
 * on every call, N counting from 1. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llll.h"

static int g_argc;
static char **g_argv;
static bool noisy;

static long fib(int n)
{
    return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

static int putf(llll_buf *r, const char *fmt, long a, long b)
{
    char tmp[128];
    int n = snprintf(tmp, sizeof tmp, fmt, a, b);
    return llll_buf_set(r, tmp, (size_t)n);
}

static bool same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int hold(const char *arrive, const char *release, llll_buf *res)
{
    char line[64];
    int n = snprintf(line, sizeof line, "%ld %ld\n", (long)getpid(), (long)getppid());
    int a = open(arrive, O_WRONLY | O_CLOEXEC), r = open(release, O_RDONLY | O_CLOEXEC);
    char c;
    bool ok = a >= 0 && r >= 0 && write(a, line, (size_t)n) == n && read(r, &c, 1) == 1;
    if (a >= 0)
        close(a);
    if (r >= 0)
        close(r);
    return ok ? llll_buf_set(res, "released", 8) : (llll_buf_set(res, "hold failed", 11), 1);
}

static int op(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    static long calls;
    char cmd[512];
    if (len >= sizeof cmd)
        return llll_buf_set(res, "too long", 8), 1;
    memcpy(cmd, arg, len);
    cmd[len] = '\0';
    if (noisy) {
        calls++;
        printf("noise %ld\n", calls);
        fflush(stdout);
        fprintf(stderr, "err %ld\n", calls);
    }
    int n;
    if (sscanf(cmd, "fib %d", &n) == 1)
        return putf(res, "%ld", fib(n), 0);
    if (strcmp(cmd, "pids") == 0)
        return putf(res, "%ld %ld", (long)getpid(), (long)getppid());
    if (strncmp(cmd, "getenv ", 7) == 0) {
        const char *v = getenv(cmd + 7);
        return llll_buf_set(res, v ? v : "(unset)", strlen(v ? v : "(unset)"));
    }
    if (strcmp(cmd, "argv") == 0) {
        res->len = 0;
        for (int i = 0; i < g_argc; i++) {
            size_t w = strlen(g_argv[i]);
            if (llll_buf_reserve(res, res->len + w + 1) < 0)
                return 1;
            if (i > 0)
                ((char *)res->data)[res->len++] = '|';
            memcpy((char *)res->data + res->len, g_argv[i], w);
            res->len += w;
        }
        return 0;
    }
    if (strcmp(cmd, "stdio") == 0) {
        int null = open("/dev/null", O_RDONLY);
        bool in_null = same_file(0, null);
        close(null);
        return putf(res, in_null && same_file(1, 2) ? "0:null 1:stderr" : "0:%ld 1:%ld", in_null, same_file(1, 2));
    }
    char a[256], r[256];
    if (sscanf(cmd, "hold %255s %255s", a, r) == 2)
        return hold(a, r, res);
    if (strcmp(cmd, "crash") == 0)
        raise(SIGKILL);
    return llll_buf_set(res, "unknown command", 15), 1;
}

int main(int argc, char **argv)
{
    g_argc = argc;
    g_argv = argv;
    noisy = argc > 1 && strcmp(argv[1], "--noisy") == 0;
    return llll_serve(op, NULL) == 0 ? 0 : 1;
}
