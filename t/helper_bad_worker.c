/* A pool worker that breaks the wire protocol, for the fault tests. It speaks
 * by hand (the pool's protocol 2, see pool.c) on the channel named by
 * LLLL_SBC_FD (one socket fd), argv[1] says how:
 *   garbage    hello, then answers each request with 3 bytes that do not
 *              parse as a reply
 *   huge       hello, then a reply header announcing 4 GiB - 1, then waits
 *   truncated  hello, then a reply header announcing 100 bytes, 10 of them,
 *              then exits
 *   stalled    as truncated, but waits instead of exiting
 *   nohello    never says hello, waits
 *   extra      hello, then answers each request correctly ("ok", status 0)
 *              followed by a second, unasked reply "stray" to the same
 *              request, in one write
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

static uint32_t u32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static void set_u32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* Reads one request frame and returns its id (the first u32 of the body;
 * the rest is skipped). */
static uint32_t get_request(void)
{
    unsigned char h[8];
    get(h, 4);
    uint32_t n = u32(h);
    if (n < 4)
        _exit(5);
    get(h + 4, 4);
    n -= 4;
    char skip[256];
    while (n) {
        size_t k = n < sizeof skip ? n : sizeof skip;
        get(skip, k);
        n -= (uint32_t)k;
    }
    return u32(h + 4);
}

/* One reply frame of protocol 2 holding one result with status 0: the
 * bytes, the status byte, the length, then id, first 0, count 1. */
static void put_reply(uint32_t id, const char *result)
{
    uint32_t len = (uint32_t)strlen(result);
    unsigned char tail[17];
    tail[0] = 0;
    set_u32(tail + 1, len);
    set_u32(tail + 5, id);
    set_u32(tail + 9, 0);
    set_u32(tail + 13, 1);
    unsigned char frame[4 + 64 + sizeof tail];
    if (len > 64)
        _exit(6);
    set_u32(frame, len + (uint32_t)sizeof tail);
    memcpy(frame + 4, result, len);
    memcpy(frame + 4 + len, tail, sizeof tail);
    put(frame, 4 + len + sizeof tail);
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
    put_frame("llll-pool/2", 11);
    for (;;) {
        uint32_t id = get_request();
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
            /* Back to back, so the stray reply is there before the next
             * request is sent: a master that reads it as the next answer
             * returns "stray". */
            put_reply(id, "ok");
            put_reply(id, "stray");
        } else if (strcmp(mode, "close") == 0) {
            close(fd);
            wait_forever();
        } else {
            return 4;
        }
    }
}
