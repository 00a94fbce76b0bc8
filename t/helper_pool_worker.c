/* A pool worker for the tests. Requests are text commands:
 *   "sq N"       -> N*N in decimal
 *   "pid"        -> this worker's pid
 *   "echo X"     -> "PID X"
 *   "fail MSG"   -> MSG, fn fails
 *   "big N"      -> N bytes of 'x'
 *   "crash"      -> the worker kills itself (SIGKILL) mid-call
 *   "hang"       -> never answers
 *   "hold A H"   -> writes its pid (an int) to fd A, waits for a byte on fd H,
 *                   then answers its pid
 *   "ok, then die unread" -> answers "ok" by hand on the channel (fd 3), then
 *                   exits as soon as the next request arrives, unread
 * Modes: "--bad-hello" speaks another protocol version instead of serving;
 * "--raw" speaks the documented wire format by hand (replies: the request
 * reversed, then a status byte, 1 for "fail");
 * "--report FILE" appends llll_serve's return value to FILE when it returns;
 * "--linger" ignores the end of the pool: once llll_serve returned it waits
 * for a signal forever. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "llll.h"

static int put(llll_buf *r, const char *s, size_t n)
{
    return llll_buf_set(r, s, n);
}

static int putf(llll_buf *r, const char *fmt, long long a, const char *s)
{
    char tmp[256];
    int n = snprintf(tmp, sizeof tmp, fmt, a, s);
    return put(r, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static int op(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    char cmd[256];
    if (len >= sizeof cmd)
        return put(res, "too long", 8), 1;
    memcpy(cmd, arg, len);
    cmd[len] = '\0';
    long long n;
    int a, h;
    if (sscanf(cmd, "sq %lld", &n) == 1)
        return putf(res, "%lld%s", n * n, "");
    if (strcmp(cmd, "pid") == 0)
        return putf(res, "%lld%s", (long long)getpid(), "");
    if (strncmp(cmd, "echo ", 5) == 0)
        return putf(res, "%lld %s", (long long)getpid(), cmd + 5);
    if (strncmp(cmd, "fail ", 5) == 0)
        return put(res, cmd + 5, strlen(cmd + 5)) ? -1 : 1;
    if (sscanf(cmd, "big %lld", &n) == 1) {
        char *b = malloc((size_t)n);
        if (!b)
            return 1;
        memset(b, 'x', (size_t)n);
        int rc = put(res, b, (size_t)n);
        free(b);
        return rc;
    }
    if (strcmp(cmd, "crash") == 0)
        raise(SIGKILL);
    if (strcmp(cmd, "ok, then die unread") == 0) {
        static const unsigned char reply[] = { 0, 0, 0, 3, 'o', 'k', 0 };
        if (write(3, reply, sizeof reply) != (ssize_t)sizeof reply)
            _exit(2);
        struct pollfd pf = { .fd = 3, .events = POLLIN };
        while (poll(&pf, 1, -1) < 0 && errno == EINTR) {
        }
        _exit(0);
    }
    if (strcmp(cmd, "hang") == 0)
        for (;;)
            pause();
    if (sscanf(cmd, "hold %d %d", &a, &h) == 2) {
        int pid = getpid();
        char c;
        if (write(a, &pid, sizeof pid) != sizeof pid || read(h, &c, 1) != 1)
            return put(res, "hold failed", 11), 1;
        return putf(res, "%lld%s", (long long)pid, "");
    }
    return put(res, "unknown command", 15), 1;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--bad-hello") == 0) {
        llll_sbc *ch;
        if (llll_sbc_child(&ch))
            return 2;
        llll_sbc_send(ch, "llll-pool/9", 11);
        llll_buf b = LLLL_BUF_INIT;
        llll_sbc_recv(ch, &b, -1);   /* until the master gives up */
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "--raw") == 0) {
        /* The documented wire format by hand, without llll_serve: a hello,
         * then for each request its bytes reversed and a status byte at the
         * end (1 for a request "fail"). */
        llll_sbc *ch;
        if (llll_sbc_child(&ch) || llll_sbc_send(ch, "llll-pool/1", 11))
            return 2;
        llll_buf req = LLLL_BUF_INIT;
        char out[64];
        while (llll_sbc_recv(ch, &req, -1) == 0 && req.len < sizeof out) {
            const char *in = req.data;
            for (size_t i = 0; i < req.len; i++)
                out[i] = in[req.len - 1 - i];
            out[req.len] = req.len == 4 && memcmp(in, "fail", 4) == 0;
            if (llll_sbc_send(ch, out, req.len + 1))
                break;
        }
        llll_buf_free(&req);
        llll_sbc_close(ch);
        return 0;
    }
    int rc = llll_serve(op, NULL);
    if (argc > 1 && strcmp(argv[1], "--linger") == 0)
        for (;;)
            pause();
    if (argc > 2 && strcmp(argv[1], "--report") == 0) {
        FILE *f = fopen(argv[2], "a");
        if (f) {
            fprintf(f, "%d\n", rc);
            fclose(f);
        }
    }
    return rc == 0 ? 0 : 1;
}
