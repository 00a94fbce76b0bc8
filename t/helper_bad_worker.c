/* A pool worker that breaks the wire protocol, for the fault tests. It speaks
 * by hand on the channel named by LLLL_SBC_FD (one socket fd), argv[1] says how:
 *   garbage    hello, then answers each request with 3 bytes whose last (the
 *              status byte) is neither 0 nor 1
 *   huge       hello, then a reply header announcing 4 GiB - 1, then waits
 *   truncated  hello, then a reply header announcing 100 bytes, 10 of them,
 *              then exits
 *   stalled    as truncated, but waits instead of exiting
 *   nohello    never says hello, waits
 *   extra      hello, then answers each request correctly ("ok" and status
 *              0) followed by a second, unasked frame "stray", in one write
 *   close      hello, then at the first request closes the channel and waits
 * Waiting is pause(): the pool must kill it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fd = -1;

static void put(const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(2);
        p += w;
        len -= (size_t)w;
    }
}

static void put_header(uint32_t n)
{
    unsigned char h[4] = { (unsigned char)(n >> 24), (unsigned char)(n >> 16),
                           (unsigned char)(n >> 8), (unsigned char)n };
    put(h, 4);
}

static void put_frame(const void *data, uint32_t len)
{
    put_header(len);
    put(data, len);
}

/* Reads exactly len bytes; exits 0 on EOF (the pool closed the channel). */
static void get(void *data, size_t len)
{
    char *p = data;
    while (len) {
        ssize_t r = read(fd, p, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            _exit(0);
        p += r;
        len -= (size_t)r;
    }
}

/* Reads one request frame (up to 255 bytes are kept). */
static void get_request(void)
{
    unsigned char h[4];
    get(h, 4);
    uint32_t n = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
    char skip[256];
    while (n) {
        size_t k = n < sizeof skip ? n : sizeof skip;
        get(skip, k);
        n -= (uint32_t)k;
    }
}

static void wait_forever(void)
{
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    const char *env = getenv("LLLL_SBC_FD");
    if (argc < 2 || !env)
        return 3;
    fd = atoi(env);
    const char *mode = argv[1];
    if (strcmp(mode, "nohello") == 0)
        wait_forever();
    put_frame("llll-pool/1", 11);
    for (;;) {
        get_request();
        if (strcmp(mode, "garbage") == 0) {
            put_frame("\x07\x07\x07", 3);
        } else if (strcmp(mode, "huge") == 0) {
            put_header(UINT32_MAX);
            wait_forever();
        } else if (strcmp(mode, "truncated") == 0 || strcmp(mode, "stalled") == 0) {
            put_header(100);
            put("0123456789", 10);
            if (strcmp(mode, "truncated") == 0)
                return 0;
            wait_forever();
        } else if (strcmp(mode, "extra") == 0) {
            /* One write, so the stray frame is there before the reply is
             * read: a master that looks finds it before its next request. */
            static const char both[] = "\0\0\0\3ok\0\0\0\0\6stray\0";
            put(both, sizeof both - 1);
        } else if (strcmp(mode, "close") == 0) {
            close(fd);
            wait_forever();
        } else {
            return 4;
        }
    }
}
