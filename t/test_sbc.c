/* Tests of the framed channel (sbc.c): suite "sbc". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"

/* ----------------------------------------------------------------- helpers */

static void raw_pair(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* A channel over sv[0]; the test speaks raw bytes on sv[1]. */
static llll_sbc *open_on_raw_pair(int sv[2])
{
    llll_sbc *ch = NULL;
    raw_pair(sv);
    ck_assert_int_eq(llll_sbc_open(&ch, sv[0], sv[0]), 0);
    ck_assert_ptr_nonnull(ch);
    return ch;
}

static unsigned char pattern_byte(size_t i, unsigned seed)
{
    return (unsigned char)((i * 131u + seed * 17u + (i >> 8)) & 0xff);
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern_byte(i, seed);
}

static void check_pattern(const llll_buf *b, size_t n, unsigned seed)
{
    ck_assert_uint_eq(b->len, n);
    const unsigned char *p = b->data;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern_byte(i, seed))
            ck_abort_msg("byte %zu of a %zu-byte frame differs", i, n);
}

/* Nothing is waiting to be read on fd. */
static void assert_wire_empty(int fd)
{
    char c;
    ssize_t r = recv(fd, &c, 1, MSG_DONTWAIT);
    ck_assert_int_eq(r, -1);
    ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
}

/* ---------------------------------------------------------- round trips */

START_TEST(frames_of_0_1_and_65536_bytes_round_trip_intact)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    static unsigned char big[65536];
    fill_pattern(big, sizeof big, 3);
    unsigned char one = 0xa5;
    ck_assert_int_eq(llll_sbc_send(a, NULL, 0), 0);
    ck_assert_int_eq(llll_sbc_send(a, &one, 1), 0);
    ck_assert_int_eq(llll_sbc_send(a, big, sizeof big), 0);
    ck_assert_int_eq(llll_sbc_send(a, "", 0), 0);

    llll_buf f = LLLL_BUF_INIT;
    f.len = 99;
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
    ck_assert_uint_eq(f.len, 0);
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
    ck_assert_uint_eq(f.len, 1);
    ck_assert_uint_eq(((unsigned char *)f.data)[0], 0xa5);
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
    check_pattern(&f, sizeof big, 3);
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
    ck_assert_uint_eq(f.len, 0);
    llll_buf_free(&f);
    ck_assert_ptr_null(f.data);
    ck_assert_uint_eq(f.cap, 0);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

#define BIG_FRAME ((size_t)16 << 20)

struct sender {
    llll_sbc *ch;
    const void *data;
    size_t len;
    int rc;
};

static void *send_thread(void *arg)
{
    struct sender *s = arg;
    s->rc = llll_sbc_send(s->ch, s->data, s->len);
    return NULL;
}

START_TEST(a_16_mib_frame_from_a_sender_thread_arrives_intact)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    unsigned char *data = malloc(BIG_FRAME);
    ck_assert_ptr_nonnull(data);
    fill_pattern(data, BIG_FRAME, 7);
    struct sender s = { a, data, BIG_FRAME, 1 };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, send_thread, &s), 0);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(s.rc, 0);
    check_pattern(&f, BIG_FRAME, 7);
    llll_buf_free(&f);
    free(data);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

/* ------------------------------------------------------------ the reader */

struct trickle {
    int fd;
    const unsigned char *bytes;
    size_t n;
};

static void *trickle_thread(void *arg)
{
    struct trickle *t = arg;
    for (size_t i = 0; i < t->n; i++)
        while (write(t->fd, t->bytes + i, 1) != 1 && errno == EINTR)
            ;
    return NULL;
}

START_TEST(a_reader_fed_one_byte_at_a_time_gets_the_exact_frames)
{
    static const size_t sizes[] = { 0, 1, 5, 3, 1000, 70000, 2 };
    enum { NF = sizeof sizes / sizeof sizes[0] };
    size_t total = 0;
    for (int i = 0; i < NF; i++)
        total += 4 + sizes[i];
    unsigned char *wire = malloc(total), *p = wire;
    for (int i = 0; i < NF; i++) {
        t_put_be32(p, (uint32_t)sizes[i]);
        fill_pattern(p + 4, sizes[i], (unsigned)i);
        p += 4 + sizes[i];
    }
    int sv[2];
    llll_sbc *ch = open_on_raw_pair(sv);
    struct trickle tr = { sv[1], wire, total };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, trickle_thread, &tr), 0);
    llll_buf f = LLLL_BUF_INIT;
    for (int i = 0; i < NF; i++) {
        ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), 0);
        check_pattern(&f, sizes[i], (unsigned)i);
    }
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    close(sv[1]);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), LLLL_EOF);
    llll_buf_free(&f);
    llll_sbc_close(ch);
    free(wire);
}
END_TEST

START_TEST(a_header_claiming_4_gib_gives_emsgsize_without_allocating)
{
    int sv[2];
    llll_sbc *ch = open_on_raw_pair(sv);
    unsigned char hdr[4] = { 0xff, 0xff, 0xff, 0xff };
    t_raw_write(sv[1], hdr, 4);
    /* The writer stays open: a reader waiting for the body would hang. */
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), -EMSGSIZE);
    ck_assert_ptr_null(f.data);
    ck_assert_uint_eq(f.cap, 0);
    ck_assert_uint_eq(f.len, 0);
    /* The channel keeps refusing it. */
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 0), -EMSGSIZE);
    ck_assert_ptr_null(f.data);
    llll_sbc_close(ch);
    close(sv[1]);
}
END_TEST

START_TEST(a_header_over_a_lowered_max_gives_emsgsize_with_the_buffer_unchanged)
{
    int sv[2];
    llll_sbc *ch = open_on_raw_pair(sv);
    llll_sbc_set_max_frame(ch, 100);
    unsigned char wire[4 + 100];
    t_put_be32(wire, 100);
    memset(wire + 4, 'x', 100);
    t_raw_write(sv[1], wire, sizeof wire);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), 0);
    ck_assert_uint_eq(f.len, 100);
    void *data = f.data;
    size_t cap = f.cap;

    unsigned char hdr[4];
    t_put_be32(hdr, 101);
    t_raw_write(sv[1], hdr, 4);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), -EMSGSIZE);
    ck_assert_ptr_eq(f.data, data);
    ck_assert_uint_eq(f.cap, cap);
    ck_assert_uint_eq(f.len, 100);
    llll_buf_free(&f);
    llll_sbc_close(ch);
    close(sv[1]);
}
END_TEST

START_TEST(send_over_the_max_gives_emsgsize_and_puts_nothing_on_the_wire)
{
    int sv[2];
    llll_sbc *ch = open_on_raw_pair(sv);
    llll_sbc_set_max_frame(ch, 16);
    char data[17] = "0123456789abcdef";
    ck_assert_int_eq(llll_sbc_send(ch, data, 17), -EMSGSIZE);
    assert_wire_empty(sv[1]);
    ck_assert_int_eq(llll_sbc_send(ch, data, 16), 0);
    unsigned char got[20];
    t_raw_read(sv[1], got, 20);
    ck_assert_mem_eq(got, "\0\0\0\x10", 4);
    ck_assert_mem_eq(got + 4, data, 16);
    assert_wire_empty(sv[1]);
    /* 0 restores the default: 64 MiB. */
    llll_sbc_set_max_frame(ch, 0);
    ck_assert_int_eq(llll_sbc_send(ch, data, LLLL_SBC_MAX_FRAME_DEFAULT + 1), -EMSGSIZE);
    assert_wire_empty(sv[1]);
    llll_sbc_close(ch);
    close(sv[1]);
}
END_TEST

START_TEST(a_frame_cut_short_by_the_peer_closing_gives_eproto)
{
    int sv[2];
    llll_sbc *ch = open_on_raw_pair(sv);
    t_raw_write(sv[1], "\0\0\0\x0a" "abc", 7);
    close(sv[1]);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), -EPROTO);
    llll_buf_free(&f);
    llll_sbc_close(ch);
}
END_TEST

START_TEST(a_header_cut_short_by_the_peer_closing_gives_eproto)
{
    int sv[2];
    llll_sbc *ch = open_on_raw_pair(sv);
    t_raw_write(sv[1], "\0\0", 2);
    close(sv[1]);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), -EPROTO);
    ck_assert_ptr_null(f.data);
    llll_sbc_close(ch);
}
END_TEST

START_TEST(a_clean_close_gives_llll_eof_after_the_last_frame)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    ck_assert_int_eq(llll_sbc_send(a, "last", 4), 0);
    llll_sbc_close(a);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
    ck_assert_uint_eq(f.len, 4);
    ck_assert_mem_eq(f.data, "last", 4);
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), LLLL_EOF);
    ck_assert_int_eq(llll_sbc_recv(b, &f, 0), LLLL_EOF);
    llll_buf_free(&f);
    llll_sbc_close(b);
}
END_TEST

START_TEST(the_bytes_on_the_wire_are_a_big_endian_length_then_the_payload)
{
    int sv[2];
    llll_sbc *ch = open_on_raw_pair(sv);
    ck_assert_int_eq(llll_sbc_send(ch, "hello", 5), 0);
    unsigned char got[9];
    t_raw_read(sv[1], got, sizeof got);
    static const unsigned char want[9] = { 0, 0, 0, 5, 'h', 'e', 'l', 'l', 'o' };
    ck_assert_mem_eq(got, want, 9);
    assert_wire_empty(sv[1]);

    static unsigned char big[0x010203];
    ck_assert_int_eq(llll_sbc_send(ch, big, sizeof big), 0);
    t_raw_read(sv[1], got, 4);
    ck_assert_mem_eq(got, "\0\x01\x02\x03", 4);
    llll_sbc_close(ch);
    close(sv[1]);
}
END_TEST

/* ------------------------------------------------------------ threads */

enum { NSENDERS = 4, PER_SENDER = 1000 };

struct multi {
    llll_sbc *ch;
    uint32_t id;
    int rc;
};

#define MULTI_MAX 20000

static size_t multi_len(uint32_t seq)
{
    return 8 + (seq * 7919u) % (MULTI_MAX - 8);
}

static void *multi_sender(void *arg)
{
    struct multi *m = arg;
    unsigned char buf[MULTI_MAX];
    m->rc = 0;
    for (uint32_t seq = 0; seq < PER_SENDER && m->rc == 0; seq++) {
        size_t n = multi_len(seq);
        t_put_be32(buf, m->id);
        t_put_be32(buf + 4, seq);
        for (size_t i = 8; i < n; i++)
            buf[i] = (unsigned char)(m->id * 59u + seq + i);
        m->rc = llll_sbc_send(m->ch, buf, n);
    }
    return NULL;
}

START_TEST(four_threads_sending_1000_frames_each_never_interleave)
{
    /* Small socket buffers, so that frames often take several writes: that
     * is where a missing send lock lets frames interleave. */
    int sv[2];
    raw_pair(sv);
    int small = 4096;
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_open(&a, sv[0], sv[0]), 0);
    ck_assert_int_eq(llll_sbc_open(&b, sv[1], sv[1]), 0);
    struct multi m[NSENDERS];
    pthread_t t[NSENDERS];
    for (int i = 0; i < NSENDERS; i++) {
        m[i] = (struct multi){ a, (uint32_t)i, 1 };
        ck_assert_int_eq(pthread_create(&t[i], NULL, multi_sender, &m[i]), 0);
    }
    uint32_t next[NSENDERS] = { 0 };
    llll_buf f = LLLL_BUF_INIT;
    for (int k = 0; k < NSENDERS * PER_SENDER; k++) {
        ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
        ck_assert_uint_ge(f.len, 8);
        const unsigned char *p = f.data;
        uint32_t id = t_get_be32(p), seq = t_get_be32(p + 4);
        ck_assert_uint_lt(id, NSENDERS);
        ck_assert_uint_eq(seq, next[id]);
        ck_assert_uint_eq(f.len, multi_len(seq));
        for (size_t i = 8; i < f.len; i++)
            if (p[i] != (unsigned char)(id * 59u + seq + i))
                ck_abort_msg("frame %u of thread %u corrupt at byte %zu", seq, id, i);
        next[id]++;
    }
    for (int i = 0; i < NSENDERS; i++) {
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
        ck_assert_int_eq(m[i].rc, 0);
        ck_assert_uint_eq(next[i], PER_SENDER);
    }
    ck_assert_int_eq(llll_sbc_recv(b, &f, 0), -ETIMEDOUT);
    llll_buf_free(&f);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

/* ------------------------------------------------------------ dead peers */

/* SIGPIPE is left at its default (death) in these tests, so a signal that
 * leaked would kill the test process and fail the case. */
static void assert_sigpipe_default_and_not_pending(void)
{
    struct sigaction sa;
    ck_assert_int_eq(sigaction(SIGPIPE, NULL, &sa), 0);
    ck_assert(sa.sa_handler == SIG_DFL);
    sigset_t set;
    ck_assert_int_eq(sigpending(&set), 0);
    ck_assert_int_eq(sigismember(&set, SIGPIPE), 0);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &set), 0);
    ck_assert_int_eq(sigismember(&set, SIGPIPE), 0);
}

START_TEST(send_to_a_dead_socket_peer_returns_epipe_and_the_process_lives)
{
    assert_sigpipe_default_and_not_pending();
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    llll_sbc_close(b);
    int rc = llll_sbc_send(a, "x", 1);
    ck_assert(rc == -EPIPE || rc == -ECONNRESET);
    rc = llll_sbc_send(a, "y", 1);
    ck_assert(rc == -EPIPE || rc == -ECONNRESET);
    assert_sigpipe_default_and_not_pending();
    llll_sbc_close(a);
}
END_TEST

START_TEST(send_into_a_pipe_whose_reader_closed_returns_epipe_and_the_process_lives)
{
    assert_sigpipe_default_and_not_pending();
    int in[2], out[2];
    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_open(&ch, in[0], out[1]), 0);
    close(out[0]);
    ck_assert_int_eq(llll_sbc_send(ch, "x", 1), -EPIPE);
    ck_assert_int_eq(llll_sbc_send(ch, "yz", 2), -EPIPE);
    assert_sigpipe_default_and_not_pending();
    ck_assert_int_eq(llll_sbc_shutdown(ch), -ENOTSOCK);
    llll_sbc_close(ch);
    close(in[1]);
}
END_TEST

START_TEST(a_sigpipe_the_caller_had_pending_stays_pending)
{
    int in[2], out[2];
    ck_assert_int_eq(pipe2(in, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(out, O_CLOEXEC), 0);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, &set, NULL), 0);
    ck_assert_int_eq(pthread_kill(pthread_self(), SIGPIPE), 0);
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_open(&ch, in[0], out[1]), 0);
    close(out[0]);
    ck_assert_int_eq(llll_sbc_send(ch, "x", 1), -EPIPE);
    ck_assert_int_eq(sigpending(&set), 0);
    ck_assert_int_eq(sigismember(&set, SIGPIPE), 1);
    ck_assert_int_eq(pthread_sigmask(SIG_BLOCK, NULL, &set), 0);
    ck_assert_int_eq(sigismember(&set, SIGPIPE), 1);
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    struct timespec zero = { 0, 0 };
    ck_assert_int_eq(sigtimedwait(&set, NULL, &zero), SIGPIPE);
    llll_sbc_close(ch);
    close(in[1]);
}
END_TEST

/* ------------------------------------------------------------ timeouts */

START_TEST(a_receive_timeout_gives_etimedout_and_a_later_frame_arrives_intact)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(b, &f, 30), -ETIMEDOUT);
    ck_assert_ptr_null(f.data);
    ck_assert_int_eq(llll_sbc_send(a, "later", 5), 0);
    ck_assert_int_eq(llll_sbc_recv(b, &f, 5000), 0);
    ck_assert_uint_eq(f.len, 5);
    ck_assert_mem_eq(f.data, "later", 5);
    llll_buf_free(&f);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

START_TEST(timeout_0_on_an_empty_channel_returns_without_waiting)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    llll_buf f = LLLL_BUF_INIT;
    int rc = llll_sbc_recv(b, &f, 0);
    ck_assert_int_eq(rc, -ETIMEDOUT);
    ck_assert_int_eq(llll_sbc_send(a, "now", 3), 0);
    ck_assert_int_eq(llll_sbc_recv(b, &f, 0), 0);
    ck_assert_mem_eq(f.data, "now", 3);
    llll_buf_free(&f);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

START_TEST(a_frame_cut_by_a_timeout_is_completed_by_the_next_receive)
{
    int sv[2];
    llll_sbc *ch = open_on_raw_pair(sv);
    /* A small frame: header in two pieces, body in two. */
    llll_buf f = LLLL_BUF_INIT, g = LLLL_BUF_INIT;
    t_raw_write(sv[1], "\0\0", 2);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 10), -ETIMEDOUT);
    t_raw_write(sv[1], "\0\x0a" "abc", 5);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 10), -ETIMEDOUT);
    t_raw_write(sv[1], "defghij", 7);
    ck_assert_int_eq(llll_sbc_recv(ch, &g, -1), 0);
    ck_assert_uint_eq(g.len, 10);
    ck_assert_mem_eq(g.data, "abcdefghij", 10);

    /* A large one, read straight into the buffer, then into another. */
    size_t n = 300000, half = 150001;
    unsigned char *wire = malloc(4 + n);
    t_put_be32(wire, (uint32_t)n);
    fill_pattern(wire + 4, n, 11);
    t_raw_write(sv[1], wire, 4 + half);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 10), -ETIMEDOUT);
    t_raw_write(sv[1], wire + 4 + half, n - half);
    llll_buf_free(&g);
    ck_assert_int_eq(llll_sbc_recv(ch, &g, -1), 0);
    check_pattern(&g, n, 11);
    free(wire);
    llll_buf_free(&f);
    llll_buf_free(&g);
    llll_sbc_close(ch);
    close(sv[1]);
}
END_TEST

/* peek copies the bytes this end received and did not deliver, in the order
 * they arrived: the header of the frame being received, its body bytes kept
 * across a timeout, and what was read after them (a receive reads what has
 * arrived, up to its buffer); at most n of them. */
START_TEST(peek_gives_the_bytes_received_but_not_delivered_in_arrival_order)
{
    int sv[2];
    llll_sbc *ch = open_on_raw_pair(sv);
    unsigned char got[64];
    ck_assert_uint_eq(llll_sbc_peek(ch, got, sizeof got), 0);

    /* A frame of 10 bytes cut short after 3 by a timeout. */
    llll_buf f = LLLL_BUF_INIT;
    t_raw_write(sv[1], "\0\0\0\x0a" "abc", 7);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 0), -ETIMEDOUT);
    ck_assert_uint_eq(llll_sbc_peek(ch, got, sizeof got), 7);
    ck_assert_mem_eq(got, "\0\0\0\x0a" "abc", 7);
    memset(got, '#', sizeof got);
    ck_assert_uint_eq(llll_sbc_peek(ch, got, 5), 5);
    ck_assert_mem_eq(got, "\0\0\0\x0a" "a#", 6);

    /* Its rest and a whole frame arrive together: the first is delivered,
     * the second was read with it and waits. */
    t_raw_write(sv[1], "defghij" "\0\0\0\x02" "xy", 13);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), 0);
    ck_assert_uint_eq(f.len, 10);
    ck_assert_mem_eq(f.data, "abcdefghij", 10);
    ck_assert_uint_eq(llll_sbc_peek(ch, got, sizeof got), 6);
    ck_assert_mem_eq(got, "\0\0\0\x02" "xy", 6);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), 0);
    ck_assert_uint_eq(f.len, 2);
    ck_assert_mem_eq(f.data, "xy", 2);
    ck_assert_uint_eq(llll_sbc_peek(ch, got, sizeof got), 0);

    /* A peer that does not speak frames: its first bytes read as a header
     * that is refused, and peek gives its text from the start. */
    t_raw_write(sv[1], "SSH-2.0-x\r\n", 11);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), -EMSGSIZE);
    ck_assert_uint_eq(llll_sbc_peek(ch, got, sizeof got), 11);
    ck_assert_mem_eq(got, "SSH-2.0-x\r\n", 11);
    llll_buf_free(&f);
    llll_sbc_close(ch);
    close(sv[1]);
}
END_TEST

/* ------------------------------------------------------------ codecs */

struct point {
    int32_t x, y;
    char name[8];
};

static int point_encode(void *ctx, const void *obj, llll_buf *out)
{
    (void)ctx;
    const struct point *p = obj;
    if (p->x < 0)
        return -EDOM;
    size_t n = 8 + strnlen(p->name, sizeof p->name);
    if (llll_buf_reserve(out, n) < 0)
        return -ENOMEM;
    unsigned char *b = out->data;
    t_put_be32(b, (uint32_t)p->x);
    t_put_be32(b + 4, (uint32_t)p->y);
    memcpy(b + 8, p->name, n - 8);
    out->len = n;
    return 0;
}

static int point_decode(void *ctx, const void *data, size_t len, void **obj)
{
    (void)ctx;
    if (len < 8 || len > 8 + sizeof ((struct point *)0)->name)
        return -EILSEQ;
    struct point *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    const unsigned char *b = data;
    p->x = (int32_t)t_get_be32(b);
    p->y = (int32_t)t_get_be32(b + 4);
    memcpy(p->name, b + 8, len - 8);
    *obj = p;
    return 0;
}

static const llll_codec point_codec = { point_encode, point_decode, NULL };

START_TEST(a_codec_round_trips_a_struct)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    struct point in = { 12345, -7, "origin" };
    ck_assert_int_eq(llll_sbc_send_obj(a, &point_codec, &in), 0);
    void *obj = NULL;
    ck_assert_int_eq(llll_sbc_recv_obj(b, &point_codec, &obj, -1), 0);
    ck_assert_ptr_nonnull(obj);
    struct point *out = obj;
    ck_assert_int_eq(out->x, 12345);
    ck_assert_int_eq(out->y, -7);
    ck_assert_str_eq(out->name, "origin");
    free(obj);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

START_TEST(codec_errors_are_passed_on_and_a_failed_encode_sends_nothing)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    struct point bad = { -1, 0, "neg" };
    ck_assert_int_eq(llll_sbc_send_obj(a, &point_codec, &bad), -EDOM);
    void *obj = &bad;
    ck_assert_int_eq(llll_sbc_recv_obj(b, &point_codec, &obj, 0), -ETIMEDOUT);
    ck_assert_ptr_null(obj);
    /* A frame too short for a point: decode refuses it. */
    ck_assert_int_eq(llll_sbc_send(a, "abc", 3), 0);
    obj = &bad;
    ck_assert_int_eq(llll_sbc_recv_obj(b, &point_codec, &obj, -1), -EILSEQ);
    ck_assert_ptr_null(obj);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

/* ------------------------------------------------------------ buffers */

START_TEST(buf_reserve_grows_cap_and_keeps_contents_and_len)
{
    llll_buf b = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_buf_set(&b, "abc", 3), 0);
    ck_assert_int_eq(llll_buf_reserve(&b, 100000), 0);
    ck_assert_uint_ge(b.cap, 100000);
    ck_assert_uint_eq(b.len, 3);
    ck_assert_mem_eq(b.data, "abc", 3);
    /* A smaller need changes nothing: the same block, the same cap. */
    void *data = b.data;
    size_t cap = b.cap;
    ck_assert_int_eq(llll_buf_reserve(&b, 10), 0);
    ck_assert_ptr_eq(b.data, data);
    ck_assert_uint_eq(b.cap, cap);
    ck_assert_int_eq(llll_buf_reserve(NULL, 1), -EINVAL);
    llll_buf_free(&b);
}
END_TEST

START_TEST(buf_set_replaces_the_contents_with_a_copy)
{
    llll_buf b = LLLL_BUF_INIT;
    char src[] = "hello, world";
    ck_assert_int_eq(llll_buf_set(&b, src, sizeof src - 1), 0);
    src[0] = 'J';
    ck_assert_uint_eq(b.len, sizeof src - 1);
    ck_assert_mem_eq(b.data, "hello, world", sizeof src - 1);
    ck_assert_int_eq(llll_buf_set(&b, "hi", 2), 0);
    ck_assert_uint_eq(b.len, 2);
    ck_assert_mem_eq(b.data, "hi", 2);
    ck_assert_int_eq(llll_buf_set(&b, NULL, 0), 0);
    ck_assert_uint_eq(b.len, 0);
    ck_assert_int_eq(llll_buf_set(&b, NULL, 1), -EINVAL);
    llll_buf_free(&b);
}
END_TEST

/* Every length up to past the sizes copied without memmove, from another
 * buffer and from b's own bytes at offsets either way. */
START_TEST(buf_set_copies_every_length_also_from_within_the_buffer)
{
    unsigned char src[64], want[64];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (unsigned char)(i * 7 + 1);
    llll_buf b = LLLL_BUF_INIT;
    for (size_t n = 0; n <= 40; n++) {
        ck_assert_int_eq(llll_buf_set(&b, src, n), 0);
        ck_assert_uint_eq(b.len, n);
        if (n)
            ck_assert_mem_eq(b.data, src, n);
        for (size_t k = 1; k <= 3; k++) {
            /* from k bytes on, back to the start */
            ck_assert_int_eq(llll_buf_set(&b, src, n + k), 0);
            ck_assert_int_eq(llll_buf_set(&b, (unsigned char *)b.data + k, n), 0);
            ck_assert_uint_eq(b.len, n);
            if (n)
                ck_assert_mem_eq(b.data, src + k, n);
            /* from the start, to k bytes on: b's own bytes, moved */
            ck_assert_int_eq(llll_buf_set(&b, src, n + k), 0);
            memcpy(want, src, k);
            memcpy(want + k, src, n);
            llll_buf view = { (unsigned char *)b.data + k, 0, b.cap - k };
            ck_assert_int_eq(llll_buf_set(&view, b.data, n), 0);
            ck_assert_mem_eq(b.data, want, n + k);
        }
    }
    llll_buf_free(&b);
}
END_TEST

START_TEST(a_reused_buffer_allocates_nothing_after_the_first_large_frame)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    size_t large = 1 << 20;
    unsigned char *data = malloc(large);
    fill_pattern(data, large, 5);
    ck_assert_int_eq(llll_sbc_send(a, data, large), 0);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
    check_pattern(&f, large, 5);
    void *p = f.data;
    size_t cap = f.cap;
    ck_assert_uint_ge(cap, large);
    static const size_t sizes[] = { 1, 0, 100, 70000, 1 << 20, 12345, 1 << 19 };
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            fill_pattern(data, sizes[i], (unsigned)i);
            ck_assert_int_eq(llll_sbc_send(a, data, sizes[i]), 0);
            ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
            check_pattern(&f, sizes[i], (unsigned)i);
            ck_assert_ptr_eq(f.data, p);
            ck_assert_uint_eq(f.cap, cap);
        }
    }
    llll_buf_free(&f);
    free(data);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

/* ------------------------------------------------------------ open/child */

START_TEST(open_refuses_a_closed_fd_with_ebadf_and_closes_the_other)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    close(p[0]);
    llll_sbc *ch = (llll_sbc *)&ch;
    ck_assert_int_eq(llll_sbc_open(&ch, p[0], p[1]), -EBADF);
    ck_assert_ptr_null(ch);
    ck_assert_int_eq(fcntl(p[1], F_GETFD), -1);
    ck_assert_int_eq(errno, EBADF);
    llll_sbc_close(NULL);
    llll_buf_free(NULL);
}
END_TEST

START_TEST(child_without_llll_sbc_fd_gives_enoent)
{
    unsetenv("LLLL_SBC_FD");
    llll_sbc *ch = (llll_sbc *)&ch;
    ck_assert_int_eq(llll_sbc_child(&ch), -ENOENT);
    ck_assert_ptr_null(ch);
}
END_TEST

START_TEST(child_refuses_a_malformed_or_closed_llll_sbc_fd)
{
    static const char *const bad[] = { "abc", "", "3x", "-3", " 3", "3,", ",3", "3,4,5",
                                       "+3", "99999999999999999999",
                                       /* past INT_MAX; with a 32-bit long the
                                        * last wrapped to fd 3 */
                                       "2147483648", "21474836470", "4294967299" };
    llll_sbc *ch;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(setenv("LLLL_SBC_FD", bad[i], 1), 0);
        ch = (llll_sbc *)&ch;
        int rc = llll_sbc_child(&ch);
        if (rc != -EINVAL)
            ck_abort_msg("LLLL_SBC_FD=\"%s\" gave %d, not -EINVAL", bad[i], rc);
        ck_assert_ptr_null(ch);
    }
    ck_assert_int_eq(setenv("LLLL_SBC_FD", "99999", 1), 0);
    ck_assert_int_eq(llll_sbc_child(&ch), -EBADF);
    ck_assert_int_eq(setenv("LLLL_SBC_FD", "2147483647", 1), 0);
    ck_assert_int_eq(llll_sbc_child(&ch), -EBADF);
    ck_assert_int_eq(setenv("LLLL_SBC_FD", "0,99999", 1), 0);
    ck_assert_int_eq(llll_sbc_child(&ch), -EBADF);
    ck_assert_ptr_null(ch);
}
END_TEST

START_TEST(child_with_r_w_pipes_works_and_removes_the_variable)
{
    int down[2], up[2];   /* parent -> child, child -> parent */
    ck_assert_int_eq(pipe2(down, 0), 0);
    ck_assert_int_eq(pipe2(up, 0), 0);
    char val[32];
    snprintf(val, sizeof val, "%d,%d", down[0], up[1]);
    ck_assert_int_eq(setenv("LLLL_SBC_FD", val, 1), 0);
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_child(&ch), 0);
    ck_assert_ptr_null(getenv("LLLL_SBC_FD"));
    ck_assert_int_ne(fcntl(down[0], F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_int_ne(fcntl(up[1], F_GETFD) & FD_CLOEXEC, 0);

    t_raw_write(down[1], "\0\0\0\x02hi", 6);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), 0);
    ck_assert_uint_eq(f.len, 2);
    ck_assert_mem_eq(f.data, "hi", 2);
    ck_assert_int_eq(llll_sbc_send(ch, "yo!", 3), 0);
    unsigned char got[7];
    t_raw_read(up[0], got, 7);
    ck_assert_mem_eq(got, "\0\0\0\x03yo!", 7);
    close(down[1]);
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), LLLL_EOF);
    llll_buf_free(&f);
    llll_sbc_close(ch);
    ck_assert_int_eq(fcntl(down[0], F_GETFD), -1);
    ck_assert_int_eq(fcntl(up[1], F_GETFD), -1);
    close(up[0]);
}
END_TEST

START_TEST(child_with_one_socket_fd_works)
{
    int sv[2];
    raw_pair(sv);
    int fd = fcntl(sv[0], F_DUPFD, 0); /* without close-on-exec, as a parent passes it */
    close(sv[0]);
    char val[16];
    snprintf(val, sizeof val, "%d", fd);
    ck_assert_int_eq(setenv("LLLL_SBC_FD", val, 1), 0);
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_child(&ch), 0);
    ck_assert_ptr_null(getenv("LLLL_SBC_FD"));
    ck_assert_int_ne(fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);
    ck_assert_int_eq(llll_sbc_send(ch, "up", 2), 0);
    unsigned char got[6];
    t_raw_read(sv[1], got, 6);
    ck_assert_mem_eq(got, "\0\0\0\x02up", 6);
    ck_assert_int_eq(llll_sbc_shutdown(ch), 0);
    ck_assert_int_eq(read(sv[1], got, 1), 0);
    llll_sbc_close(ch);
    close(sv[1]);
}
END_TEST

/* ------------------------------------------------------------ shutdown */

struct blocked {
    llll_sbc *ch;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool started;
    pid_t tid;
    int rc;
};

static void *blocked_receiver(void *arg)
{
    struct blocked *b = arg;
    pthread_mutex_lock(&b->mu);
    b->tid = gettid();
    b->started = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    llll_buf f = LLLL_BUF_INIT;
    b->rc = llll_sbc_recv(b->ch, &f, -1);
    llll_buf_free(&f);
    return NULL;
}

/* The frame is allocated before the tid is published: the waiter must see
 * this thread sleep in the send, not in the allocation. */
static void *blocked_sender(void *arg)
{
    struct blocked *b = arg;
    size_t n = BIG_FRAME;   /* far more than the socket buffers hold */
    void *data = calloc(1, n);
    pthread_mutex_lock(&b->mu);
    b->tid = gettid();
    b->started = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    b->rc = data ? llll_sbc_send(b->ch, data, n) : -ENOMEM;
    free(data);
    return NULL;
}

static void start_blocked(struct blocked *b, llll_sbc *ch, void *(*fn)(void *), pthread_t *t)
{
    *b = (struct blocked){ .ch = ch, .rc = 1 };
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, NULL);
    ck_assert_int_eq(pthread_create(t, NULL, fn, b), 0);
    pthread_mutex_lock(&b->mu);
    while (!b->started)
        pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    t_wait_until_sleeping(b->tid);
}

START_TEST(shutdown_wakes_a_receiver_blocked_in_another_thread)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    struct blocked bl;
    pthread_t t;
    start_blocked(&bl, b, blocked_receiver, &t);
    ck_assert_int_eq(llll_sbc_shutdown(b), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(bl.rc, LLLL_EOF);
    /* The peer sees the end too. */
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(a, &f, -1), LLLL_EOF);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

START_TEST(shutdown_wakes_a_sender_blocked_on_a_full_socket)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    struct blocked bl;
    pthread_t t;
    start_blocked(&bl, a, blocked_sender, &t);
    ck_assert_int_eq(llll_sbc_shutdown(a), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert(bl.rc == -EPIPE || bl.rc == -ECONNRESET);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

/* ------------------------------------------------------------ EINTR, flags */

static atomic_int signals_seen;

static void count_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

/* A handler without SA_RESTART, so blocked calls in the library do see
 * EINTR (the test installs it; the library never installs any). */
static void install_counting_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = count_signal;
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
}

static void *timed_receiver(void *arg)
{
    struct blocked *b = arg;
    pthread_mutex_lock(&b->mu);
    b->tid = gettid();
    b->started = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    llll_buf f = LLLL_BUF_INIT;
    b->rc = llll_sbc_recv(b->ch, &f, 20000);
    if (b->rc == 0 && (f.len != 3 || memcmp(f.data, "sig", 3) != 0))
        b->rc = -EILSEQ;
    llll_buf_free(&f);
    return NULL;
}

static void *checked_receiver(void *arg)
{
    struct blocked *b = arg;
    pthread_mutex_lock(&b->mu);
    b->tid = gettid();
    b->started = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    llll_buf f = LLLL_BUF_INIT;
    b->rc = llll_sbc_recv(b->ch, &f, -1);
    if (b->rc == 0 && (f.len != 3 || memcmp(f.data, "sig", 3) != 0))
        b->rc = -EILSEQ;
    llll_buf_free(&f);
    return NULL;
}

START_TEST(signals_do_not_interrupt_a_blocked_receive)
{
    install_counting_handler();
    void *(*fns[2])(void *) = { checked_receiver, timed_receiver };
    for (int k = 0; k < 2; k++) {
        llll_sbc *a, *b;
        ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
        atomic_store(&signals_seen, 0);
        struct blocked bl;
        pthread_t t;
        start_blocked(&bl, b, fns[k], &t);
        for (int i = 0; i < 3; i++) {
            ck_assert_int_eq(pthread_kill(t, SIGUSR1), 0);
            t_wait_until_sleeping(bl.tid);
        }
        ck_assert_int_eq(llll_sbc_send(a, "sig", 3), 0);
        ck_assert_int_eq(pthread_join(t, NULL), 0);
        ck_assert_int_eq(bl.rc, 0);
        ck_assert_int_ge(atomic_load(&signals_seen), 1);
        llll_sbc_close(a);
        llll_sbc_close(b);
    }
}
END_TEST

START_TEST(signals_do_not_interrupt_a_send_blocked_on_a_full_socket)
{
    install_counting_handler();
    atomic_store(&signals_seen, 0);
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    struct blocked bl;
    pthread_t t;
    start_blocked(&bl, a, blocked_sender, &t);   /* 16 MiB of zeros */
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(pthread_kill(t, SIGUSR1), 0);
        t_wait_until_sleeping(bl.tid);
    }
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(bl.rc, 0);
    ck_assert_int_ge(atomic_load(&signals_seen), 1);
    ck_assert_uint_eq(f.len, BIG_FRAME);
    const unsigned char *p = f.data;
    for (size_t i = 0; i < f.len; i++)
        if (p[i] != 0)
            ck_abort_msg("byte %zu of the frame is not what was sent", i);
    llll_buf_free(&f);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

START_TEST(nonblocking_pipes_carry_large_frames_both_ways)
{
    int p1[2], p2[2];
    ck_assert_int_eq(pipe2(p1, O_CLOEXEC | O_NONBLOCK), 0);
    ck_assert_int_eq(pipe2(p2, O_CLOEXEC | O_NONBLOCK), 0);
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_open(&a, p1[0], p2[1]), 0);
    ck_assert_int_eq(llll_sbc_open(&b, p2[0], p1[1]), 0);
    size_t n = 1 << 20;   /* 16 pipe buffers */
    unsigned char *x = malloc(n), *y = malloc(n);
    fill_pattern(x, n, 21);
    fill_pattern(y, n, 22);
    struct sender sa = { a, x, n, 1 }, sb = { b, y, n, 1 };
    pthread_t ta, tb;
    ck_assert_int_eq(pthread_create(&ta, NULL, send_thread, &sa), 0);
    ck_assert_int_eq(pthread_create(&tb, NULL, send_thread, &sb), 0);
    llll_buf fa = LLLL_BUF_INIT, fb = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(b, &fb, -1), 0);
    ck_assert_int_eq(llll_sbc_recv(a, &fa, 10000), 0);
    ck_assert_int_eq(pthread_join(ta, NULL), 0);
    ck_assert_int_eq(pthread_join(tb, NULL), 0);
    ck_assert_int_eq(sa.rc, 0);
    ck_assert_int_eq(sb.rc, 0);
    check_pattern(&fb, n, 21);
    check_pattern(&fa, n, 22);
    /* The flags the caller chose are left alone. */
    ck_assert_int_ne(fcntl(p1[0], F_GETFL) & O_NONBLOCK, 0);
    llll_buf_free(&fa);
    llll_buf_free(&fb);
    free(x);
    free(y);
    llll_sbc_close(a);
    llll_sbc_close(b);
}
END_TEST

static Suite *sbc_suite(void)
{
    Suite *s = suite_create("sbc");
    TCase *tc = tcase_create("frames");
    tcase_add_test(tc, frames_of_0_1_and_65536_bytes_round_trip_intact);
    tcase_add_test(tc, a_16_mib_frame_from_a_sender_thread_arrives_intact);
    tcase_add_test(tc, a_reader_fed_one_byte_at_a_time_gets_the_exact_frames);
    tcase_add_test(tc, a_header_claiming_4_gib_gives_emsgsize_without_allocating);
    tcase_add_test(tc, a_header_over_a_lowered_max_gives_emsgsize_with_the_buffer_unchanged);
    tcase_add_test(tc, send_over_the_max_gives_emsgsize_and_puts_nothing_on_the_wire);
    tcase_add_test(tc, a_frame_cut_short_by_the_peer_closing_gives_eproto);
    tcase_add_test(tc, a_header_cut_short_by_the_peer_closing_gives_eproto);
    tcase_add_test(tc, a_clean_close_gives_llll_eof_after_the_last_frame);
    tcase_add_test(tc, the_bytes_on_the_wire_are_a_big_endian_length_then_the_payload);
    tcase_add_test(tc, four_threads_sending_1000_frames_each_never_interleave);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, send_to_a_dead_socket_peer_returns_epipe_and_the_process_lives);
    tcase_add_test(tc, send_into_a_pipe_whose_reader_closed_returns_epipe_and_the_process_lives);
    tcase_add_test(tc, a_sigpipe_the_caller_had_pending_stays_pending);
    tcase_add_test(tc, a_receive_timeout_gives_etimedout_and_a_later_frame_arrives_intact);
    tcase_add_test(tc, timeout_0_on_an_empty_channel_returns_without_waiting);
    tcase_add_test(tc, a_frame_cut_by_a_timeout_is_completed_by_the_next_receive);
    tcase_add_test(tc, peek_gives_the_bytes_received_but_not_delivered_in_arrival_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("codecs and buffers");
    tcase_add_test(tc, a_codec_round_trips_a_struct);
    tcase_add_test(tc, codec_errors_are_passed_on_and_a_failed_encode_sends_nothing);
    tcase_add_test(tc, a_reused_buffer_allocates_nothing_after_the_first_large_frame);
    tcase_add_test(tc, buf_reserve_grows_cap_and_keeps_contents_and_len);
    tcase_add_test(tc, buf_set_replaces_the_contents_with_a_copy);
    tcase_add_test(tc, buf_set_copies_every_length_also_from_within_the_buffer);
    suite_add_tcase(s, tc);

    tc = tcase_create("open, child, shutdown, signals");
    tcase_set_timeout(tc, 5);
    tcase_add_test(tc, open_refuses_a_closed_fd_with_ebadf_and_closes_the_other);
    tcase_add_test(tc, child_without_llll_sbc_fd_gives_enoent);
    tcase_add_test(tc, child_refuses_a_malformed_or_closed_llll_sbc_fd);
    tcase_add_test(tc, child_with_r_w_pipes_works_and_removes_the_variable);
    tcase_add_test(tc, child_with_one_socket_fd_works);
    tcase_add_test(tc, shutdown_wakes_a_receiver_blocked_in_another_thread);
    tcase_add_test(tc, shutdown_wakes_a_sender_blocked_on_a_full_socket);
    tcase_add_test(tc, signals_do_not_interrupt_a_blocked_receive);
    tcase_add_test(tc, signals_do_not_interrupt_a_send_blocked_on_a_full_socket);
    tcase_add_test(tc, nonblocking_pipes_carry_large_frames_both_ways);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(sbc_suite)
