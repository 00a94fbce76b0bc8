/* Errors that llll.h lists for a function and that no test of its own area
 * checks (suite "errors"): one case each, named for the promise. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"

START_TEST(sbc_child_leaves_a_variable_it_refuses_in_place)
{
    llll_sbc *ch = (llll_sbc *)&ch;
    setenv("LLLL_SBC_FD", "3x", 1);
    ck_assert_int_eq(llll_sbc_child(&ch), -EINVAL);
    ck_assert_ptr_null(ch);
    ck_assert_str_eq(getenv("LLLL_SBC_FD"), "3x");

    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    close(fd); /* fd is now a number no file is open on */
    char name[16];
    snprintf(name, sizeof name, "%d", fd);
    setenv("LLLL_SBC_FD", name, 1);
    ck_assert_int_eq(llll_sbc_child(&ch), -EBADF);
    ck_assert_str_eq(getenv("LLLL_SBC_FD"), name);
    ck_assert_int_eq(llll_sbc_child(NULL), -EINVAL);
    unsetenv("LLLL_SBC_FD"); /* as it was, for CK_FORK=no */
}
END_TEST

START_TEST(sbc_open_with_a_null_out_closes_both_fds)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    ck_assert_int_eq(llll_sbc_open(NULL, p[0], p[1]), -EINVAL);
    ck_assert_int_eq(fcntl(p[0], F_GETFD), -1);
    ck_assert_int_eq(fcntl(p[1], F_GETFD), -1);
}
END_TEST

#if SIZE_MAX > UINT32_MAX
/* With the maximum set above 0xffffffff, any length a header can announce is
 * accepted: a header of 80 MiB (above the 64 MiB default) is taken and its
 * body awaited, not refused; a send longer than a header can say is still
 * refused. */
START_TEST(sbc_max_frame_above_what_a_header_can_say_means_the_largest_it_can)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_open(&ch, sv[1], sv[1]), 0);
    llll_sbc_set_max_frame(ch, SIZE_MAX);
    static const unsigned char hdr[4] = {0x05, 0x00, 0x00, 0x00}; /* 80 MiB */
    ck_assert_int_eq(write(sv[0], hdr, sizeof hdr), (ssize_t)sizeof hdr);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &f, 0), -ETIMEDOUT);
    llll_buf_free(&f);
    /* Refused before a byte is read from data (one byte long). */
    char one = 'x';
    ck_assert_int_eq(llll_sbc_send(ch, &one, (size_t)UINT32_MAX + 1), -EMSGSIZE);
    ck_assert_int_eq(llll_sbc_send(ch, &one, 1), 0);
    unsigned char got[5];
    ck_assert_int_eq(recv(sv[0], got, sizeof got, MSG_WAITALL), (ssize_t)sizeof got);
    ck_assert(got[0] == 0 && got[1] == 0 && got[2] == 0 && got[3] == 1 && got[4] == 'x');
    llll_sbc_close(ch);
    close(sv[0]);
}
END_TEST
#endif

static int encode_too_long(void *ctx, const void *obj, llll_buf *out)
{
    (void)ctx;
    (void)obj;
    out->len = out->cap + 1;
    return 0;
}

static int encode_fails(void *ctx, const void *obj, llll_buf *out)
{
    (void)ctx;
    (void)obj;
    (void)out;
    return -EDOM;
}

static int decode_fails(void *ctx, const void *data, size_t len, void **obj)
{
    (void)ctx;
    (void)data;
    (void)len;
    (void)obj;
    return -EILSEQ;
}

START_TEST(sbc_obj_functions_pass_codec_errors_on_and_consume_the_frame)
{
    llll_sbc *a, *b;
    ck_assert_int_eq(llll_sbc_pair(&a, &b), 0);
    llll_codec bad_len = {encode_too_long, decode_fails, NULL};
    llll_codec bad_enc = {encode_fails, decode_fails, NULL};
    ck_assert_int_eq(llll_sbc_send_obj(a, &bad_len, "x"), -EINVAL);
    ck_assert_int_eq(llll_sbc_send_obj(a, &bad_enc, "x"), -EDOM);
    ck_assert_int_eq(llll_sbc_send(a, "one", 3), 0);
    ck_assert_int_eq(llll_sbc_send(a, "two", 3), 0);
    void *obj = &obj;
    ck_assert_int_eq(llll_sbc_recv_obj(b, &bad_len, &obj, -1), -EILSEQ);
    ck_assert_ptr_null(obj);
    /* Nothing the failed sends made reached b, and "one" was consumed. */
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(b, &f, -1), 0);
    ck_assert_uint_eq(f.len, 3);
    ck_assert_int_eq(memcmp(f.data, "two", 3), 0);
    llll_buf_free(&f);
    llll_sbc_close(a);
    ck_assert_int_eq(llll_sbc_recv_obj(b, &bad_len, &obj, -1), LLLL_EOF);
    ck_assert_ptr_null(obj);
    llll_sbc_close(b);
}
END_TEST

START_TEST(proc_kill_refuses_a_number_that_is_no_signal)
{
    const char *argv[] = {"/bin/sh", "-c", "read x", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
    ck_assert_int_eq(llll_proc_kill(p, 1 << 20), -EINVAL);
    ck_assert_int_eq(llll_proc_kill(NULL, SIGTERM), -EINVAL);
    ck_assert_int_eq(llll_proc_close_stdin(p), 0);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert(WIFEXITED(st)); /* the bad number reached no one */
    llll_proc_free(p);
}
END_TEST

START_TEST(proc_run_reports_echild_with_the_output_when_someone_else_reaped)
{
    signal(SIGCHLD, SIG_IGN); /* the kernel reaps: no status exists */
    const char *argv[] = {"/bin/sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    llll_buf out = LLLL_BUF_INIT, err = LLLL_BUF_INIT;
    int st = 12345;
    ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 0, -1, &st, &out, &err), -ECHILD);
    ck_assert_int_eq(st, -1);
    ck_assert_uint_eq(out.len, 4);
    ck_assert_int_eq(memcmp(out.data, "out\n", 4), 0);
    ck_assert_uint_eq(err.len, 4);
    ck_assert_int_eq(memcmp(err.data, "err\n", 4), 0);
    llll_buf_free(&out);
    llll_buf_free(&err);
    signal(SIGCHLD, SIG_DFL); /* as it was, for CK_FORK=no */
}
END_TEST

START_TEST(instance_constructors_refuse_what_they_cannot_start)
{
    llll_instance *in = (llll_instance *)&in;
    ck_assert_int_eq(llll_instance_start(&in, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(in);
    const char *empty[] = {NULL};
    in = (llll_instance *)&in;
    ck_assert_int_eq(llll_instance_start(&in, empty, NULL), -EINVAL);
    ck_assert_ptr_null(in);
    in = (llll_instance *)&in;
    ck_assert_int_eq(llll_instance_fork(&in, NULL, NULL, NULL), -EINVAL);
    ck_assert_ptr_null(in);
    const char *argv[] = {"/bin/true", NULL};
    ck_assert_int_eq(llll_instance_start(NULL, argv, NULL), -EINVAL);
    ck_assert_int_eq(llll_instance_send(NULL, "x", 1), -EINVAL);
    ck_assert_int_eq(llll_instance_kill(NULL, 0), -EINVAL);
    ck_assert_int_eq(llll_instance_join(NULL, 0, NULL), -EINVAL);
    ck_assert_ptr_null(llll_instance_channel(NULL));
}
END_TEST

static void *no_items(void *ctx)
{
    (void)ctx;
    return NULL;
}

START_TEST(thread_constructors_refuse_more_than_4096_threads)
{
    llll_mapper *m = (llll_mapper *)&m;
    ck_assert_int_eq(llll_mapper_new(&m, 4097), -EINVAL);
    ck_assert_ptr_null(m);
    llll_gen *g = (llll_gen *)&g;
    ck_assert_int_eq(llll_gen_new(&g, no_items, NULL, 4097, 1), -EINVAL);
    ck_assert_ptr_null(g);
}
END_TEST

START_TEST(queues_refuse_a_capacity_whose_array_size_overflows)
{
    size_t too_many = SIZE_MAX / sizeof(void *) + 1;
    llll_fifo *q = (llll_fifo *)&q;
    ck_assert_int_eq(llll_fifo_new(&q, too_many), -EINVAL);
    ck_assert_ptr_null(q);
    llll_gen *g = (llll_gen *)&g;
    ck_assert_int_eq(llll_gen_new(&g, no_items, NULL, 1, too_many), -EINVAL);
    ck_assert_ptr_null(g);
}
END_TEST

START_TEST(gen_get_says_eof_again_after_the_end)
{
    llll_gen *g;
    ck_assert_int_eq(llll_gen_new(&g, no_items, NULL, 2, 1), 0);
    void *item;
    ck_assert_int_eq(llll_gen_get(g, &item, -1), LLLL_EOF);
    ck_assert_int_eq(llll_gen_get(g, &item, -1), LLLL_EOF);
    ck_assert_int_eq(llll_gen_get(g, &item, 0), LLLL_EOF);
    llll_gen_free(g);
}
END_TEST

static int echo_fn(void *ctx, const void *arg, size_t len, llll_buf *result)
{
    (void)ctx;
    return llll_buf_set(result, arg, len);
}

/* fn that makes the master vanish while it runs: it closes the master's end. */
static int vanish_fn(void *ctx, const void *arg, size_t len, llll_buf *result)
{
    close(*(int *)ctx);
    return llll_buf_set(result, arg, len);
}

/* Writes one request frame of protocol 2 with one argument "hi" to fd. */
static void write_request(int fd)
{
    static const unsigned char f[] = {
        0, 0, 0, 18,        /* frame length */
        0, 0, 0, 1,         /* request id */
        0, 16, 0, 0,        /* reply limit: 1 MiB */
        0, 0, 0, 1,         /* one argument */
        0, 0, 0, 2, 'h', 'i',
    };
    ck_assert_int_eq(write(fd, f, sizeof f), (ssize_t)sizeof f);
}

/* A socketpair whose sv[1] this process's llll_serve takes as its channel. */
static void worker_channel(int sv[2])
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    char name[16];
    snprintf(name, sizeof name, "%d", sv[1]);
    setenv("LLLL_SBC_FD", name, 1);
}

START_TEST(serve_returns_0_when_the_master_goes_away_while_fn_runs)
{
    int sv[2];
    worker_channel(sv);
    write_request(sv[0]);
    ck_assert_int_eq(llll_serve(vanish_fn, &sv[0]), 0);
}
END_TEST

START_TEST(serve_reports_a_master_gone_before_the_hello)
{
    int sv[2];
    worker_channel(sv);
    close(sv[0]);
    int rc = llll_serve(echo_fn, NULL);
    ck_assert_msg(rc == -EPIPE || rc == -ECONNRESET, "llll_serve gave %d", rc);
    ck_assert_int_eq(llll_serve(NULL, NULL), -EINVAL);
}
END_TEST

static int no_arg(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    (void)i;
    (void)arg;
    return LLLL_EOF;
}

static int no_result(void *ctx, size_t i, int rc, const void *result, size_t len)
{
    (void)ctx;
    (void)i;
    (void)rc;
    (void)result;
    (void)len;
    return 0;
}

START_TEST(pool_functions_refuse_a_null_pool_and_read_zero_from_it)
{
    llll_buf r = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_pool_call(NULL, "x", 1, &r), -EINVAL);
    ck_assert_int_eq(llll_pool_map(NULL, 1, no_arg, no_result, NULL, NULL), -EINVAL);
    ck_assert_int_eq(llll_pool_size(NULL), 0);
    llll_pool_stats st;
    memset(&st, 0xff, sizeof st);
    llll_pool_get_stats(NULL, &st);
    ck_assert(st.calls == 0 && st.failures == 0 && st.crashes == 0 && st.timeouts == 0 &&
              st.respawns == 0 && st.protocol_errors == 0);
    llll_pool_get_stats(NULL, NULL);
    llll_pool *p = (llll_pool *)&p;
    ck_assert_int_eq(llll_pool_fork(&p, NULL, NULL, 1, NULL), -EINVAL);
    ck_assert_ptr_null(p);
}
END_TEST

START_TEST(pool_call_refuses_a_null_result_or_a_null_arg_with_a_length)
{
    llll_pool *p;
    ck_assert_int_eq(llll_pool_fork(&p, echo_fn, NULL, 1, NULL), 0);
    llll_buf r = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_pool_call(p, "x", 1, NULL), -EINVAL);
    ck_assert_int_eq(llll_pool_call(p, NULL, 1, &r), -EINVAL);
    /* NULL with length 0 is an empty argument, and the pool still works. */
    ck_assert_int_eq(llll_pool_call(p, NULL, 0, &r), 0);
    ck_assert_uint_eq(r.len, 0);
    ck_assert_int_eq(llll_pool_call(p, "hi", 2, &r), 0);
    ck_assert_uint_eq(r.len, 2);
    ck_assert_int_eq(memcmp(r.data, "hi", 2), 0);
    llll_buf_free(&r);
    llll_pool_free(p);
}
END_TEST

START_TEST(pool_starts_refuse_hosts_without_a_slot_or_launched_from_a_fork)
{
    const char *argv[] = {"/bin/true", NULL};
    const char *launcher[] = {"/bin/true", NULL};
    llll_host h = {launcher, 1};
    llll_pool_opts o = {.hosts = &h, .nhosts = 0};
    llll_pool *p = (llll_pool *)&p;
    ck_assert_int_eq(llll_pool_start(&p, argv, 0, &o), -EINVAL);
    ck_assert_ptr_null(p);
    o.nhosts = 1;
    p = (llll_pool *)&p;
    ck_assert_int_eq(llll_pool_fork(&p, echo_fn, NULL, 0, &o), -EINVAL);
    ck_assert_ptr_null(p);
}
END_TEST

START_TEST(instance_start_refuses_code_on_a_stdio_channel)
{
    const char *argv[] = {"/bin/cat", NULL};
    llll_instance_opts o = {.code = "x", .stdio_channel = true};
    llll_instance *in = (llll_instance *)&in;
    ck_assert_int_eq(llll_instance_start(&in, argv, &o), -EINVAL);
    ck_assert_ptr_null(in);
}
END_TEST

START_TEST(sbc_peek_gives_0_for_a_null_channel_or_buffer)
{
    char b[4];
    ck_assert_uint_eq(llll_sbc_peek(NULL, b, sizeof b), 0);
    llll_sbc *a, *c;
    ck_assert_int_eq(llll_sbc_pair(&a, &c), 0);
    ck_assert_uint_eq(llll_sbc_peek(a, NULL, 4), 0);
    llll_sbc_close(a);
    llll_sbc_close(c);
}
END_TEST

static Suite *errors_suite(void)
{
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("listed");
    tcase_add_test(tc, sbc_child_leaves_a_variable_it_refuses_in_place);
    tcase_add_test(tc, sbc_open_with_a_null_out_closes_both_fds);
#if SIZE_MAX > UINT32_MAX
    tcase_add_test(tc, sbc_max_frame_above_what_a_header_can_say_means_the_largest_it_can);
#endif
    tcase_add_test(tc, sbc_obj_functions_pass_codec_errors_on_and_consume_the_frame);
    tcase_add_test(tc, proc_kill_refuses_a_number_that_is_no_signal);
    tcase_add_test(tc, proc_run_reports_echild_with_the_output_when_someone_else_reaped);
    tcase_add_test(tc, instance_constructors_refuse_what_they_cannot_start);
    tcase_add_test(tc, thread_constructors_refuse_more_than_4096_threads);
    tcase_add_test(tc, queues_refuse_a_capacity_whose_array_size_overflows);
    tcase_add_test(tc, gen_get_says_eof_again_after_the_end);
    tcase_add_test(tc, serve_returns_0_when_the_master_goes_away_while_fn_runs);
    tcase_add_test(tc, serve_reports_a_master_gone_before_the_hello);
    tcase_add_test(tc, pool_functions_refuse_a_null_pool_and_read_zero_from_it);
    tcase_add_test(tc, pool_call_refuses_a_null_result_or_a_null_arg_with_a_length);
    tcase_add_test(tc, pool_starts_refuse_hosts_without_a_slot_or_launched_from_a_fork);
    tcase_add_test(tc, instance_start_refuses_code_on_a_stdio_channel);
    tcase_add_test(tc, sbc_peek_gives_0_for_a_null_channel_or_buffer);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(errors_suite)
