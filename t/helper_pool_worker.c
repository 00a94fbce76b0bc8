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
 *                   exits as soon as the next request arrives, unread (a
 *                   call is a request of one item, ids counting 1, 2, ...)
 * Modes: "--v1" says the hello of protocol version 1 instead of serving;
 * "--raw" speaks the documented wire format by hand (each result: the
 * argument reversed, status 1 for "fail"; one reply frame per request);
 * "--extra" is "--raw" sending every reply frame twice;
 * "--garbage" is "--raw" answering with a frame that does not parse;
 * "--deaf" says hello, then never reads;
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

static unsigned served;   /* requests so far: the id of the current one */

static int op(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    served++;
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
        unsigned char reply[] = { 0, 0, 0, 19, 'o', 'k', 0, 0, 0, 0, 2,
                                  0, 0, 0, (unsigned char)served, 0, 0, 0, 0, 0, 0, 0, 1 };
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

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* The documented wire format by hand, without llll_serve: the hello, then
 * for each request (id, limit, count, then count times a length and the
 * bytes) one reply frame: for each argument its bytes reversed, a status
 * byte (1 for "fail") and the length, then id, first 0 and count. */
static int raw(const char *mode)
{
    llll_sbc *ch;
    if (llll_sbc_child(&ch) || llll_sbc_send(ch, "llll-pool/2", 11))
        return 2;
    llll_buf req = LLLL_BUF_INIT;
    unsigned char out[4096];
    while (llll_sbc_recv(ch, &req, -1) == 0 && req.len >= 12) {
        const unsigned char *f = req.data;
        uint32_t id = get32(f), count = get32(f + 8);
        size_t pos = 12, o = 0;
        for (uint32_t k = 0; k < count && pos + 4 <= req.len; k++) {
            size_t len = get32(f + pos);
            const unsigned char *arg = f + pos + 4;
            pos += 4 + len;
            if (pos > req.len || o + len + 5 + 12 > sizeof out)
                return 3;
            for (size_t i = 0; i < len; i++)
                out[o + i] = arg[len - 1 - i];
            o += len;
            out[o] = len == 4 && memcmp(arg, "fail", 4) == 0;
            put32(out + o + 1, (uint32_t)len);
            o += 5;
        }
        put32(out + o, id);
        put32(out + o + 4, 0);
        put32(out + o + 8, count);
        o += 12;
        if (strcmp(mode, "--garbage") == 0)
            o = 3;
        if (llll_sbc_send(ch, out, o))
            break;
        if (strcmp(mode, "--extra") == 0 && llll_sbc_send(ch, out, o))
            break;
    }
    llll_buf_free(&req);
    llll_sbc_close(ch);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "--v1") == 0 || strcmp(mode, "--deaf") == 0) {
        llll_sbc *ch;
        if (llll_sbc_child(&ch))
            return 2;
        llll_sbc_send(ch, mode[2] == 'v' ? "llll-pool/1" : "llll-pool/2", 11);
        if (mode[2] == 'd')
            for (;;)
                pause();
        llll_buf b = LLLL_BUF_INIT;
        llll_sbc_recv(ch, &b, -1);   /* until the master gives up */
        return 0;
    }
    if (strcmp(mode, "--raw") == 0 || strcmp(mode, "--extra") == 0 || strcmp(mode, "--garbage") == 0)
        return raw(mode);
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
