/* What llll.h promises to several threads using one object at once: suite
 * "threads". Receivers sharing a channel, writers sharing a child's stdin,
 * callers queued on a pool with call_timeout_ms, a generator freed while its
 * thread is inside fn, and llll_print_line from several threads. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
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

/* Waits until a thread published its tid in *tid, then until it sleeps. */
static void wait_blocked(_Atomic pid_t *tid)
{
    while (!atomic_load(tid))
        sched_yield();
    t_wait_until_sleeping(atomic_load(tid));
}

/* Records of text streams: record k of writer t is rec_len(t, k) bytes, all
 * the letter 'a' + t but the last, which is '\n' (or, with bare, a line of
 * rec_len - 1 letters that llll_print_line ends with '\n'). Each is larger
 * than a pipe holds, so that every write of one blocks part-way. */
#define WRITERS 4
#define RECORDS 6

static size_t rec_len(int t, int k)
{
    return 70000 + (size_t)t * 3001 + (size_t)k * 1009;
}

static char *make_record(int t, int k)
{
    size_t n = rec_len(t, k);
    char *r = malloc(n);
    ck_assert_ptr_nonnull(r);
    memset(r, 'a' + t, n - 1);
    r[n - 1] = '\n';
    return r;
}

/* data holds exactly every writer's records, each whole (one line of one
 * letter, of its length), each writer's in the order it wrote them. */
static void assert_whole_records(const char *data, size_t len)
{
    int next[WRITERS] = { 0 };
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        ck_assert_msg(nl != NULL, "bytes after the last newline, at %zu", pos);
        size_t n = (size_t)(nl - (data + pos)) + 1;
        int t = data[pos] - 'a';
        ck_assert_msg(t >= 0 && t < WRITERS, "a line starting with byte %d at %zu", data[pos], pos);
        for (size_t i = 0; i < n - 1; i++)
            if (data[pos + i] != 'a' + t)
                ck_abort_msg("record %d of writer %d interleaved with another at byte %zu", next[t], t, i);
        ck_assert_msg(next[t] < RECORDS, "writer %d has more records than it wrote", t);
        ck_assert_msg(n == rec_len(t, next[t]), "record %d of writer %d is %zu bytes, not %zu", next[t], t, n,
                      rec_len(t, next[t]));
        next[t]++;
        pos += n;
    }
    for (int t = 0; t < WRITERS; t++)
        ck_assert_int_eq(next[t], RECORDS);
}

/* --------------------------------------------------- receivers of a channel */

#define RECEIVERS 4
#define FRAMES 400

static size_t frame_len(uint32_t k)
{
    return 8 + (size_t)(k * 7919u) % 150000;   /* some above the 64 KiB read buffer */
}

static unsigned char frame_byte(uint32_t k, size_t i)
{
    return (unsigned char)(k * 31u + i * 7u + (i >> 9));
}

struct receivers {
    llll_sbc *ch;
    _Atomic int seen[FRAMES];
    _Atomic int bad;          /* frames that were not one whole frame sent */
    _Atomic int errors;       /* returns other than 0 and LLLL_EOF */
    _Atomic int first_error;
};

static void *receiver(void *arg)
{
    struct receivers *r = arg;
    llll_buf f = LLLL_BUF_INIT;
    for (;;) {
        int rc = llll_sbc_recv(r->ch, &f, -1);
        if (rc == LLLL_EOF)
            break;
        if (rc != 0) {
            /* The sender's next send then fails too, instead of blocking. */
            int none = 0;
            atomic_compare_exchange_strong(&r->first_error, &none, rc);
            atomic_fetch_add(&r->errors, 1);
            llll_sbc_shutdown(r->ch);
            break;
        }
        const unsigned char *p = f.data;
        uint32_t k = f.len >= 4 ? t_get_be32(p) : UINT32_MAX;
        bool whole = k < FRAMES && f.len == frame_len(k);
        for (size_t i = 4; whole && i < f.len; i++)
            whole = p[i] == frame_byte(k, i);
        if (whole)
            atomic_fetch_add(&r->seen[k], 1);
        else
            atomic_fetch_add(&r->bad, 1);
    }
    llll_buf_free(&f);
    return NULL;
}

/* Four threads receive on one channel until its end: every frame sent
 * reaches exactly one of them, whole. Small socket buffers make frames
 * arrive in many reads, where two receivers at once would split them. */
START_TEST(receivers_sharing_a_channel_each_get_whole_frames_and_every_frame_once)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    int small = 4096;
    ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small), 0);
    ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_open(&a, sv[0], sv[0]), 0);
    ck_assert_int_eq(llll_sbc_open(&b, sv[1], sv[1]), 0);
    static struct receivers r;
    r.ch = b;
    pthread_t t[RECEIVERS];
    for (int i = 0; i < RECEIVERS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, receiver, &r), 0);
    unsigned char *buf = malloc(150008);
    ck_assert_ptr_nonnull(buf);
    int sent = 0;
    for (uint32_t k = 0; k < FRAMES && sent == 0; k++) {
        size_t n = frame_len(k);
        t_put_be32(buf, k);
        for (size_t i = 4; i < n; i++)
            buf[i] = frame_byte(k, i);
        sent = llll_sbc_send(a, buf, n);
    }
    free(buf);
    llll_sbc_close(a);   /* every receiver then gets LLLL_EOF */
    for (int i = 0; i < RECEIVERS; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    int errors = atomic_load(&r.errors), bad = atomic_load(&r.bad);
    ck_assert_msg(errors == 0, "%d receives failed, the first with %s", errors,
                  llll_strerror(atomic_load(&r.first_error)));
    ck_assert_msg(bad == 0, "%d frames received were not one whole frame sent", bad);
    ck_assert_int_eq(sent, 0);
    for (int k = 0; k < FRAMES; k++)
        ck_assert_msg(atomic_load(&r.seen[k]) == 1, "frame %d received %d times", k, atomic_load(&r.seen[k]));
    llll_sbc_close(b);
}
END_TEST

struct holder {
    llll_sbc *ch;
    llll_buf f;
    _Atomic pid_t tid;
    _Atomic int rc;
    _Atomic bool done;
};

static void *hold_receive_side(void *arg)
{
    struct holder *h = arg;
    atomic_store(&h->tid, gettid());
    atomic_store(&h->rc, llll_sbc_recv(h->ch, &h->f, -1));
    atomic_store(&h->done, true);
    return NULL;
}

/* A thread waits inside a receive, half a frame in: another thread's
 * receive with timeout 0, and with a short timeout, returns -ETIMEDOUT,
 * its buffer's len unchanged, and the frame reaches the first thread whole
 * once the rest of it arrives. */
START_TEST(recv_times_out_while_another_thread_holds_the_receive_side)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_open(&ch, sv[0], sv[0]), 0);
    static struct holder h;
    h.ch = ch;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, hold_receive_side, &h), 0);
    unsigned char wire[4 + 10];
    t_put_be32(wire, 10);
    memcpy(wire + 4, "0123456789", 10);
    t_raw_write(sv[1], wire, 4 + 4);
    /* The holder can only sleep in the read of the rest: the header and 4
     * bytes of the body are there to be read. */
    wait_blocked(&h.tid);
    llll_buf g = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_buf_set(&g, "kept", 4), 0);
    ck_assert_int_eq(llll_sbc_recv(ch, &g, 0), -ETIMEDOUT);
    ck_assert_uint_eq(g.len, 4);
    ck_assert_int_eq(llll_sbc_recv(ch, &g, 20), -ETIMEDOUT);
    ck_assert_uint_eq(g.len, 4);
    ck_assert(!atomic_load(&h.done));
    t_raw_write(sv[1], wire + 8, 6);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(atomic_load(&h.rc), 0);
    ck_assert_uint_eq(h.f.len, 10);
    ck_assert_mem_eq(h.f.data, "0123456789", 10);
    ck_assert_int_eq(llll_sbc_recv(ch, &g, 0), -ETIMEDOUT);
    ck_assert_uint_eq(g.len, 4);
    llll_buf_free(&g);
    llll_buf_free(&h.f);
    llll_sbc_close(ch);
    close(sv[1]);
}
END_TEST

/* --------------------------------------------------- writers of one stdin */

struct stdin_writer {
    llll_proc *p;
    int t;
    int rc;
};

static void *write_records(void *arg)
{
    struct stdin_writer *w = arg;
    for (int k = 0; k < RECORDS && w->rc == 0; k++) {
        char *r = make_record(w->t, k);
        w->rc = llll_proc_write(w->p, r, rec_len(w->t, k));
        free(r);
    }
    return NULL;
}

static llll_buf cat_out;
static int cat_kept = -1;

static void keep_output(void *userdata, int status, const llll_buf *out, const llll_buf *err)
{
    (void)userdata;
    (void)status;
    (void)err;
    cat_kept = out ? llll_buf_set(&cat_out, out->data, out->len) : -EINVAL;
}

/* Four threads write records larger than a pipe to one child's stdin, which
 * cat copies to its stdout: each record comes out whole. */
START_TEST(writes_from_several_threads_reach_the_childs_stdin_whole)
{
    const char *argv[] = { "cat", NULL };
    llll_proc_opts o = { .collect_output = true, .on_end = keep_output };
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    struct stdin_writer w[WRITERS];
    pthread_t t[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (struct stdin_writer){ p, i, 0 };
        ck_assert_int_eq(pthread_create(&t[i], NULL, write_records, &w[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
        ck_assert_int_eq(w[i].rc, 0);
    }
    ck_assert_int_eq(llll_proc_close_stdin(p), 0);
    int status;
    ck_assert_int_eq(llll_proc_join(p, -1, &status), 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    llll_proc_free(p);
    ck_assert_int_eq(cat_kept, 0);
    assert_whole_records(cat_out.data, cat_out.len);
    llll_buf_free(&cat_out);
}
END_TEST

/* ------------------------------------------------ printers of whole lines */

struct drain {
    int fd;
    llll_buf got;
};

static void *drain_fd(void *arg)
{
    struct drain *d = arg;
    for (;;) {
        if (llll_buf_reserve(&d->got, d->got.len + 65536) < 0)
            break;
        ssize_t r = read(d->fd, (char *)d->got.data + d->got.len, 65536);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        d->got.len += (size_t)r;
    }
    return NULL;
}

static void *print_records(void *arg)
{
    int t = *(int *)arg;
    for (int k = 0; k < RECORDS; k++) {
        char *r = make_record(t, k);
        /* Every other line without its newline: llll_print_line adds it. */
        bool bare = (t + k) % 2 == 0;
        llll_print_line(NULL, r, rec_len(t, k) - bare);
        free(r);
    }
    return NULL;
}

/* Four threads print lines larger than a pipe holds to this process's
 * stdout, a pipe read by another thread: every line comes out whole. */
START_TEST(lines_printed_from_several_threads_never_interleave)
{
    int pfd[2];
    ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
    fflush(stdout);
    int saved = dup(1);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(pfd[1], 1), 1);
    close(pfd[1]);
    static struct drain d;
    d.fd = pfd[0];
    pthread_t dt, t[WRITERS];
    ck_assert_int_eq(pthread_create(&dt, NULL, drain_fd, &d), 0);
    int ids[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        ids[i] = i;
        ck_assert_int_eq(pthread_create(&t[i], NULL, print_records, &ids[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    ck_assert_int_eq(dup2(saved, 1), 1);   /* the pipe's last write end: EOF */
    close(saved);
    ck_assert_int_eq(pthread_join(dt, NULL), 0);
    close(pfd[0]);
    assert_whole_records(d.got.data, d.got.len);
    llll_buf_free(&d.got);
}
END_TEST

/* ------------------------------------------- callers of a pool, queued */

/* The worker's fn (a forked copy of this process): appends the argument's
 * first byte to the log pipe, then for 'h' says so on the entered pipe and
 * waits for a byte on the hold pipe, for 'p' dies; it answers the argument. */
static int tw_log[2], tw_entered[2], tw_hold[2];

static int logging_fn(void *ctx, const void *arg, size_t len, llll_buf *res)
{
    (void)ctx;
    char c = len ? *(const char *)arg : '?', x;
    if (write(tw_log[1], &c, 1) != 1)
        return 1;
    if (c == 'h' && (write(tw_entered[1], &c, 1) != 1 || read(tw_hold[0], &x, 1) != 1))
        return 1;
    if (c == 'p')
        raise(SIGKILL);
    return llll_buf_set(res, arg, len);
}

struct caller {
    llll_pool *p;
    char c;
    _Atomic pid_t tid;
    int rc;
    llll_buf res;
};

static void *call_once(void *arg)
{
    struct caller *c = arg;
    atomic_store(&c->tid, gettid());
    c->rc = llll_pool_call(c->p, &c->c, 1, &c->res);
    return NULL;
}

/* One worker with call_timeout_ms, held by a call of 'h' (its fn waits);
 * then the calls of queued[] start, one at a time, each once the one before
 * sleeps waiting for the worker; then the worker is let go. Returns the
 * pool; the callers' outcomes in c[], their fn runs in the order logged. */
static llll_pool *queue_behind_a_held_worker(const char *queued, struct caller *c, char *log, size_t logsize)
{
    ck_assert_int_eq(pipe2(tw_log, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(tw_entered, O_CLOEXEC), 0);
    ck_assert_int_eq(pipe2(tw_hold, O_CLOEXEC), 0);
    llll_pool_opts o = { .call_timeout_ms = 60000 };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_fork(&p, logging_fn, NULL, 1, &o), 0);
    size_t n = strlen(queued);
    pthread_t th, t[16];
    ck_assert_uint_le(n, 16);
    static struct caller h;
    h = (struct caller){ .p = p, .c = 'h' };
    ck_assert_int_eq(pthread_create(&th, NULL, call_once, &h), 0);
    char x;
    ck_assert_int_eq(read(tw_entered[0], &x, 1), 1);   /* the worker is held */
    for (size_t k = 0; k < n; k++) {
        c[k] = (struct caller){ .p = p, .c = queued[k] };
        ck_assert_int_eq(pthread_create(&t[k], NULL, call_once, &c[k]), 0);
        wait_blocked(&c[k].tid);
    }
    ck_assert_int_eq(write(tw_hold[1], "x", 1), 1);
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_int_eq(h.rc, 0);
    llll_buf_free(&h.res);
    for (size_t k = 0; k < n; k++)
        ck_assert_int_eq(pthread_join(t[k], NULL), 0);
    /* Every fn run wrote its byte before its call returned. */
    ck_assert_int_eq(fcntl(tw_log[0], F_SETFL, O_NONBLOCK), 0);
    ssize_t got = read(tw_log[0], log, logsize - 1);
    ck_assert_int_gt(got, 0);
    log[got] = '\0';
    for (int i = 0; i < 2; i++) {
        close(tw_log[i]);
        close(tw_entered[i]);
        close(tw_hold[i]);
    }
    return p;
}

/* With call_timeout_ms, calls that queue for the one worker run in the
 * order they arrived. */
START_TEST(with_call_timeout_queued_calls_run_oldest_first)
{
    struct caller c[5];
    char log[64];
    llll_pool *p = queue_behind_a_held_worker("bcdef", c, log, sizeof log);
    ck_assert_str_eq(log, "hbcdef");
    for (int k = 0; k < 5; k++) {
        ck_assert_int_eq(c[k].rc, 0);
        ck_assert_uint_eq(c[k].res.len, 1);
        ck_assert_int_eq(*(char *)c[k].res.data, c[k].c);
        llll_buf_free(&c[k].res);
    }
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

/* With call_timeout_ms, queued calls are never run together: each goes in
 * a request of its own, whichever thread sends it (the thread that held the
 * worker runs queued calls, and after a few hands the worker on to the next
 * waiting caller, which runs its own: eleven calls make both happen). Had a
 * call shared a request with the 'p' after it, the worker dying in 'p'
 * would have left it unanswered, and it would run again (as would 'p',
 * alone). So each runs once, and only 'p' fails. */
START_TEST(with_call_timeout_queued_calls_run_one_per_request)
{
    static const char queued[] = "bcdefgijkpm";
    enum { N = sizeof queued - 1 };
    struct caller c[N];
    char log[64];
    llll_pool *p = queue_behind_a_held_worker(queued, c, log, sizeof log);
    ck_assert_str_eq(log, "hbcdefgijkpm");
    for (int k = 0; k < N; k++) {
        ck_assert_int_eq(c[k].rc, c[k].c == 'p' ? -ECONNRESET : 0);
        llll_buf_free(&c[k].res);
    }
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.crashes, 1);
    ck_assert_uint_eq(st.respawns, 1);
    llll_pool_free(p);
    t_assert_no_child();
}
END_TEST

/* ------------------------------------------- a generator freed during fn */

static _Atomic int gen_calls;
static sem_t gen_inside, gen_release;
static int gen_items[2];   /* static: an item the library freed would crash */

/* Item 0 fills the queue (capacity 1); the second call waits inside fn
 * until the test lets it return item 1; later calls end the generator. */
static void *held_gen_fn(void *ctx)
{
    (void)ctx;
    int n = atomic_fetch_add(&gen_calls, 1) + 1;
    if (n == 1)
        return &gen_items[0];
    if (n == 2) {
        sem_post(&gen_inside);
        while (sem_wait(&gen_release) < 0 && errno == EINTR) {
        }
        return &gen_items[1];
    }
    return NULL;
}

struct freer {
    llll_gen *g;
    _Atomic pid_t tid;
    _Atomic bool done;
};

static void *free_gen(void *arg)
{
    struct freer *f = arg;
    atomic_store(&f->tid, gettid());
    llll_gen_free(f->g);
    atomic_store(&f->done, true);
    return NULL;
}

/* llll_gen_free while the generator's thread is inside fn: free waits for
 * fn to return, drops the item it made (not freed: the items are static),
 * and fn is called no more. */
START_TEST(gen_free_waits_for_a_thread_inside_fn_and_calls_fn_no_more)
{
    atomic_store(&gen_calls, 0);
    ck_assert_int_eq(sem_init(&gen_inside, 0, 0), 0);
    ck_assert_int_eq(sem_init(&gen_release, 0, 0), 0);
    llll_gen *g;
    ck_assert_int_eq(llll_gen_new(&g, held_gen_fn, NULL, 1, 1), 0);
    while (sem_wait(&gen_inside) < 0 && errno == EINTR) {
    }
    static struct freer f;
    f.g = g;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, free_gen, &f), 0);
    wait_blocked(&f.tid);
    ck_assert_msg(!atomic_load(&f.done), "llll_gen_free returned while fn was running");
    int calls = atomic_load(&gen_calls);
    ck_assert_int_eq(calls, 2);
    ck_assert_int_eq(sem_post(&gen_release), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert(atomic_load(&f.done));
    calls = atomic_load(&gen_calls);
    ck_assert_msg(calls == 2, "fn was called %d times, %d after llll_gen_free began", calls, calls - 2);
    sem_destroy(&gen_inside);
    sem_destroy(&gen_release);
}
END_TEST

static Suite *threads_suite(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("threads");
    tcase_add_test(tc, receivers_sharing_a_channel_each_get_whole_frames_and_every_frame_once);
    tcase_add_test(tc, recv_times_out_while_another_thread_holds_the_receive_side);
    tcase_add_test(tc, writes_from_several_threads_reach_the_childs_stdin_whole);
    tcase_add_test(tc, lines_printed_from_several_threads_never_interleave);
    tcase_add_test(tc, with_call_timeout_queued_calls_run_oldest_first);
    tcase_add_test(tc, with_call_timeout_queued_calls_run_one_per_request);
    tcase_add_test(tc, gen_free_waits_for_a_thread_inside_fn_and_calls_fn_no_more);
    suite_add_tcase(s, tc);
    return s;
}

T_SUITE(threads_suite)
