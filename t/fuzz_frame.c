/* libFuzzer target for the frame reader (make fuzz).
 *
 * Input: byte 0 picks the maximum frame and whether one buffer is reused,
 * byte 1 where the stream is cut in two; the rest is the raw stream. The
 * first part goes into a socketpair and is read with timeout 0 until the
 * reader runs dry (so frames cut in the middle stay in the channel); then the
 * second part follows, the writer closes, and the reader runs to the end.
 * Every result is compared with a reference parser of the same bytes. No
 * threads: the stream (at most 64 KiB) fits in the socket buffer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "llll.h"

#define MAX_INPUT (64 << 10)

static const size_t maxes[4] = { 16, 1000, 32 << 10, 1 << 20 };

/* The reference: what the next receive must return for stream s[0..n) at
 * *pos, and the frame's offset and length when it is one. */
static int ref_next(const uint8_t *s, size_t n, size_t *pos, size_t max,
                    size_t *off, size_t *len)
{
    size_t left = n - *pos;
    if (left == 0)
        return LLLL_EOF;
    if (left < 4)
        return -EPROTO;
    const uint8_t *h = s + *pos;
    size_t l = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    if (l > max)
        return -EMSGSIZE;
    if (left - 4 < l)
        return -EPROTO;
    *off = *pos + 4;
    *len = l;
    *pos += 4 + l;
    return 0;
}

static int put(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Whether the stream s[0..n) holds a complete answer at pos: a whole frame,
 * or a header already over the maximum. */
static int ref_complete(const uint8_t *s, size_t n, size_t pos, size_t max)
{
    if (n - pos < 4)
        return 0;
    const uint8_t *h = s + pos;
    size_t l = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    return l > max || n - pos - 4 >= l;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size - 2 > MAX_INPUT)
        return 0;
    size_t max = maxes[data[0] & 3];
    int reuse = data[0] & 4;
    const uint8_t *s = data + 2;
    size_t n = size - 2;
    size_t cut = n ? (size_t)data[1] * n / 255 : 0;

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    llll_sbc *ch;
    if (llll_sbc_open(&ch, sv[0], sv[0]) < 0) {
        close(sv[1]);
        return 0;
    }
    llll_sbc_set_max_frame(ch, maxes[data[0] & 3]);
    if (put(sv[1], s, cut) < 0)
        goto out;

    llll_buf keep = LLLL_BUF_INIT;
    size_t pos = 0;
    int phase = 1, done = 0;
    while (!done) {
        llll_buf fresh = LLLL_BUF_INIT;
        llll_buf *f = reuse ? &keep : &fresh;
        void *data0 = f->data;
        size_t cap0 = f->cap;
        int rc = llll_sbc_recv(ch, f, phase == 1 ? 0 : -1);
        if (phase == 1 && (rc == -ETIMEDOUT || rc == -EAGAIN)) {
            /* Only when the first part holds no complete answer. */
            if (ref_complete(s, cut, pos, max))
                __builtin_trap();
            llll_buf_free(&fresh);
            phase = 2;
            if (put(sv[1], s + cut, n - cut) < 0)
                break;
            shutdown(sv[1], SHUT_WR);
            continue;
        }
        size_t off = 0, len = 0;
        int want = ref_next(s, n, &pos, max, &off, &len);
        if (phase == 1 && want != 0 && want != -EMSGSIZE)
            __builtin_trap(); /* EOF/EPROTO before the writer closed */
        if (rc != want)
            __builtin_trap();
        if (rc == 0) {
            if (f->len != len || (len && memcmp(f->data, s + off, len) != 0))
                __builtin_trap();
            if (len > f->cap)
                __builtin_trap();
        } else {
            if (rc == -EMSGSIZE && (f->data != data0 || f->cap != cap0))
                __builtin_trap(); /* allocated for a refused frame */
            done = 1;
        }
        llll_buf_free(&fresh);
    }
    llll_buf_free(&keep);
out:
    llll_sbc_close(ch);
    close(sv[1]);
    return 0;
}
