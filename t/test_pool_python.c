/* Python children on python/llll.py: an instance, a pool of Python workers,
 * a map through them. Each test says it skipped when python3 cannot run. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "llll.h"
#include "t.h"

/* The source tree's folders, from this file's path. */
static const char *tree(const char *rel)
{
    static char path[4096];
    const char *f = __FILE__, *slash = strrchr(f, '/');
    snprintf(path, sizeof path, "%.*s/%s", slash ? (int)(slash - f) : 1, slash ? f : ".", rel);
    return path;
}

static char pythonpath[4200];

/* PYTHONPATH=<tree>/../python, for children that import llll. */
static const char *const *python_env(void)
{
    static const char *env[2];
    snprintf(pythonpath, sizeof pythonpath, "PYTHONPATH=%s", tree("../python"));
    env[0] = pythonpath;
    return env;
}

static bool have_python(void)
{
    llll_proc *p;
    const char *argv[] = { "python3", "-c", "pass", NULL };
    int status = -1;
    if (llll_proc_start(&p, argv, NULL) == 0) {
        llll_proc_close_stdin(p);
        llll_proc_join(p, -1, &status);
        llll_proc_free(p);
    }
    if (status != 0)
        fprintf(stderr, "skipped: python3 does not run here\n");
    return status == 0;
}

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    ck_assert_ptr_nonnull(f);
    char *s = malloc(1 << 20);
    ck_assert_ptr_nonnull(s);
    size_t n = fread(s, 1, (1 << 20) - 1, f);
    fclose(f);
    s[n] = '\0';
    return s;
}

/* The child echoes each frame upper-cased until the channel ends. */
static void talk_to_echo(llll_instance *in)
{
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_instance_send(in, "hello", 5), 0);
    ck_assert_int_eq(llll_instance_recv(in, &f, 10000), 0);
    ck_assert_uint_eq(f.len, 5);
    ck_assert_mem_eq(f.data, "HELLO", 5);
    size_t big = 300000;   /* several reads on the Python side */
    char *b = malloc(big);
    ck_assert_ptr_nonnull(b);
    memset(b, 'q', big);
    ck_assert_int_eq(llll_instance_send(in, b, big), 0);
    ck_assert_int_eq(llll_instance_recv(in, &f, 10000), 0);
    ck_assert_uint_eq(f.len, big);
    memset(b, 'Q', big);
    ck_assert_mem_eq(f.data, b, big);
    ck_assert_int_eq(llll_instance_send(in, "", 0), 0);
    ck_assert_int_eq(llll_instance_recv(in, &f, 10000), 0);
    ck_assert_uint_eq(f.len, 0);
    free(b);
    llll_buf_free(&f);
}

static const char echo_script[] =
    "ch = channel()\n"
    "frame = ch.recv()\n"
    "while frame is not None:\n"
    "    ch.send(frame.upper())\n"
    "    frame = ch.recv()\n";

START_TEST(an_instance_whose_child_is_python_imports_llll_py)
{
    if (!have_python())
        return;
    char code[512];
    snprintf(code, sizeof code, "from llll import channel\n%s", echo_script);
    const char *argv[] = { "python3", "-", NULL };
    llll_instance_opts o = { .code = code, .proc.env = python_env() };
    llll_instance *in;
    ck_assert_int_eq(llll_instance_start(&in, argv, &o), 0);
    talk_to_echo(in);
    llll_instance_free(in);
}
END_TEST

START_TEST(an_instance_fed_llll_py_as_code_speaks_frames)
{
    if (!have_python())
        return;
    char *lib = read_file(tree("../python/llll.py"));
    char *code = malloc(strlen(lib) + sizeof echo_script + 2);
    ck_assert_ptr_nonnull(code);
    sprintf(code, "%s\n%s", lib, echo_script);
    const char *argv[] = { "python3", "-", NULL };
    llll_instance_opts o = { .code = code };
    llll_instance *in;
    ck_assert_int_eq(llll_instance_start(&in, argv, &o), 0);
    talk_to_echo(in);
    llll_instance_free(in);
    free(code);
    free(lib);
}
END_TEST

START_TEST(a_python_channel_refuses_a_frame_over_its_max_frame_before_reading_it)
{
    if (!have_python())
        return;
    static const char code[] =
        "import llll\n"
        "ch = llll.channel()\n"
        "assert ch.max_frame == 64 << 20\n"
        "ch.max_frame = 1000\n"
        "ch.send(str(len(ch.recv())).encode())\n"
        "try:\n"
        "    ch.recv()\n"
        "    ch.send(b'took it')\n"
        "except ValueError as e:\n"
        "    ch.send(str(e).encode())\n";
    const char *argv[] = { "python3", "-", NULL };
    llll_instance_opts o = { .code = code, .proc.env = python_env() };
    llll_instance *in;
    ck_assert_int_eq(llll_instance_start(&in, argv, &o), 0);
    static char big[1001];
    memset(big, 'x', sizeof big);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_instance_send(in, big, 1000), 0);   /* at the limit: taken */
    ck_assert_int_eq(llll_instance_recv(in, &f, 10000), 0);
    ck_assert_uint_eq(f.len, 4);
    ck_assert_mem_eq(f.data, "1000", 4);
    ck_assert_int_eq(llll_instance_send(in, big, 1001), 0);
    ck_assert_int_eq(llll_instance_recv(in, &f, 10000), 0);
    static const char want[] = "llll: a frame of 1001 bytes, over max_frame (1000)";
    ck_assert_uint_eq(f.len, strlen(want));
    ck_assert_mem_eq(f.data, want, strlen(want));
    llll_buf_free(&f);
    llll_instance_free(in);
}
END_TEST

static llll_pool *python_pool(int n)
{
    static char worker[4096];
    snprintf(worker, sizeof worker, "%s", tree("helper_pool_worker.py"));
    const char *argv[] = { "python3", worker, NULL };
    llll_pool *p;
    llll_pool_opts o = { .instance.proc.env = python_env() };
    int rc = llll_pool_start(&p, argv, n, &o);
    ck_assert_msg(rc == 0, "start: %s", llll_strerror(rc));
    return p;
}

START_TEST(a_pool_of_python_workers_answers_calls)
{
    if (!have_python())
        return;
    llll_pool *p = python_pool(2);
    llll_buf r = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_pool_call(p, "abc", 3, &r), 0);
    ck_assert_uint_eq(r.len, 3);
    ck_assert_mem_eq(r.data, "cba", 3);
    ck_assert_int_eq(llll_pool_call(p, "fail", 4, &r), -EREMOTEIO);
    ck_assert_uint_eq(r.len, strlen("ValueError: no"));
    ck_assert_mem_eq(r.data, "ValueError: no", r.len);
    ck_assert_int_eq(llll_pool_call(p, "", 0, &r), 0);
    ck_assert_uint_eq(r.len, 0);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.calls, 3);
    ck_assert_uint_eq(st.failures, 1);
    llll_buf_free(&r);
    llll_pool_free(p);
}
END_TEST

static int arg_text(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    char s[32];
    int n = i == 77 ? snprintf(s, sizeof s, "fail") : snprintf(s, sizeof s, "item %zu", i);
    return llll_buf_set(arg, s, (size_t)n);
}

struct tally { size_t next, good, failed; };

static int result_reversed(void *ctx, size_t i, int rc, const void *res, size_t len)
{
    struct tally *t = ctx;
    char s[32], r[32];
    int n = snprintf(s, sizeof s, "item %zu", i);
    for (int k = 0; k < n; k++)
        r[k] = s[n - 1 - k];
    if (i != t->next++)
        return -1;
    if (i == 77)
        t->failed += rc == -EREMOTEIO && len == 14 && memcmp(res, "ValueError: no", 14) == 0;
    else
        t->good += rc == 0 && len == (size_t)n && memcmp(res, r, len) == 0;
    return 0;
}

START_TEST(a_map_through_python_workers_delivers_every_result_in_order)
{
    if (!have_python())
        return;
    llll_pool *p = python_pool(2);
    struct tally t = { 0, 0, 0 };
    ck_assert_int_eq(llll_pool_map(p, 20000, arg_text, result_reversed, &t, NULL), 0);
    ck_assert_uint_eq(t.next, 20000);
    ck_assert_uint_eq(t.good, 19999);
    ck_assert_uint_eq(t.failed, 1);
    llll_pool_free(p);
}
END_TEST

/* Results over max_frame, and results that fill several reply frames. */
static int arg_big(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    char s[64];
    memset(s, 'a' + (int)(i % 26), sizeof s);
    if (i == 3)
        return llll_buf_set(arg, "big 60", 6);   /* a result over max_frame */
    return llll_buf_set(arg, s, 40);
}

static int result_count(void *ctx, size_t i, int rc, const void *res, size_t len)
{
    size_t *good = ctx;
    (void)res;
    if (i == 3 ? rc == -EMSGSIZE && len == 0 : rc == 0 && len == 40)
        ++*good;
    return 0;
}

START_TEST(a_python_worker_keeps_its_replies_within_the_masters_limit)
{
    if (!have_python())
        return;
    static char worker[4096];
    snprintf(worker, sizeof worker, "%s", tree("helper_pool_worker.py"));
    const char *argv[] = { "python3", worker, NULL };
    llll_pool *p;
    llll_pool_opts o = { .instance.proc.env = python_env(), .max_frame = 50 };
    ck_assert_int_eq(llll_pool_start(&p, argv, 1, &o), 0);
    size_t good = 0;
    llll_pool_map_opts mo = { .batch = 10 };
    ck_assert_int_eq(llll_pool_map(p, 30, arg_big, result_count, &good, &mo), 0);
    ck_assert_uint_eq(good, 30);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_uint_eq(st.respawns + st.protocol_errors, 0);
    llll_pool_free(p);
}
END_TEST

static Suite *pool_python_suite(void)
{
    Suite *s = suite_create("pool python");
    TCase *tc = tcase_create("llll.py");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, an_instance_whose_child_is_python_imports_llll_py);
    tcase_add_test(tc, an_instance_fed_llll_py_as_code_speaks_frames);
    tcase_add_test(tc, a_python_channel_refuses_a_frame_over_its_max_frame_before_reading_it);
    tcase_add_test(tc, a_pool_of_python_workers_answers_calls);
    tcase_add_test(tc, a_map_through_python_workers_delivers_every_result_in_order);
    tcase_add_test(tc, a_python_worker_keeps_its_replies_within_the_masters_limit);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(pool_python_suite)
