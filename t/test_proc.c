/* llll_proc: child processes whose lines reach callbacks. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"

/* ------------------------------------------------------------ utilities */

#define MAXL 64

/* What the callbacks saw. Callbacks of one child run on one thread, and join
 * returns after on_end, so the test reads this after join without a lock. */
typedef struct {
    llll_buf out, err;          /* every piece, concatenated */
    size_t nout, nerr;          /* pieces (lines) */
    char line[MAXL][128];       /* the first stdout lines */
    size_t len[MAXL];
    size_t max_piece;
    int ends, status;
    bool end_out_null;
    llll_buf all_out, all_err;  /* on_end's copies with collect_output */
    sem_t ready;                /* posted on a stdout line "ready\n" */
} cap;

static void cap_init(cap *c)
{
    memset(c, 0, sizeof *c);
    sem_init(&c->ready, 0, 0);
}

static void cap_free(cap *c)
{
    llll_buf_free(&c->out);
    llll_buf_free(&c->err);
    llll_buf_free(&c->all_out);
    llll_buf_free(&c->all_err);
    sem_destroy(&c->ready);
}

static void append(llll_buf *b, const void *d, size_t n)
{
    ck_assert_int_eq(llll_buf_reserve(b, b->len + n + 1), 0);
    memcpy((char *)b->data + b->len, d, n);
    b->len += n;
    ((char *)b->data)[b->len] = '\0';
}

static void on_out(void *u, const char *line, size_t len)
{
    cap *c = u;
    if (c->nout < MAXL && len < 128) {
        memcpy(c->line[c->nout], line, len);
        c->len[c->nout] = len;
    }
    c->nout++;
    if (len > c->max_piece)
        c->max_piece = len;
    append(&c->out, line, len);
    if (len == 6 && memcmp(line, "ready\n", 6) == 0)
        sem_post(&c->ready);
}

static void on_err(void *u, const char *line, size_t len)
{
    cap *c = u;
    c->nerr++;
    append(&c->err, line, len);
}

static void on_end(void *u, int status, const llll_buf *out, const llll_buf *err)
{
    cap *c = u;
    c->ends++;
    c->status = status;
    c->end_out_null = out == NULL && err == NULL;
    if (out)
        append(&c->all_out, out->data, out->len);
    if (err)
        append(&c->all_err, err->data, err->len);
}

static llll_proc_opts opts_for(cap *c)
{
    return (llll_proc_opts){.on_stdout = on_out, .on_stderr = on_err, .on_end = on_end, .userdata = c};
}

/* Starts argv, joins it, frees it; returns the status. */
static int run(const char *const *argv, const llll_proc_opts *o)
{
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, o), 0);
    int st = -1;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    llll_proc_free(p);
    return st;
}



/* --------------------------------------------------------------- output */

START_TEST(lines_arrive_in_order_each_with_its_newline)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {"sh", "-c", "i=0; while [ $i -lt 50 ]; do echo line $i; i=$((i+1)); done", NULL};
    llll_proc_opts o = opts_for(&c);
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_uint_eq(c.nout, 50);
    for (int i = 0; i < 50; i++) {
        char want[32];
        int n = snprintf(want, sizeof want, "line %d\n", i);
        ck_assert_uint_eq(c.len[i], (size_t)n);
        ck_assert(memcmp(c.line[i], want, (size_t)n) == 0);
    }
    ck_assert_int_eq(c.ends, 1);
    cap_free(&c);
}
END_TEST

START_TEST(a_partial_last_line_arrives_without_newline)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {"printf", "a\\nlast", NULL};
    llll_proc_opts o = opts_for(&c);
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_uint_eq(c.nout, 2);
    ck_assert_uint_eq(c.len[1], 4);
    ck_assert(memcmp(c.line[1], "last", 4) == 0);
    cap_free(&c);
}
END_TEST

START_TEST(stdout_and_stderr_reach_their_own_callbacks)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {"sh", "-c", "echo out1; echo err1 >&2; echo out2; echo err2 >&2", NULL};
    llll_proc_opts o = opts_for(&c);
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_str_eq(c.out.data, "out1\nout2\n");
    ck_assert_str_eq(c.err.data, "err1\nerr2\n");
    ck_assert_uint_eq(c.nout, 2);
    ck_assert_uint_eq(c.nerr, 2);
    cap_free(&c);
}
END_TEST

START_TEST(lines_may_hold_nul_bytes)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {"printf", "a\\000b\\n\\000\\n", NULL};
    llll_proc_opts o = opts_for(&c);
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_uint_eq(c.nout, 2);
    ck_assert_uint_eq(c.len[0], 4);
    ck_assert(memcmp(c.line[0], "a\0b\n", 4) == 0);
    ck_assert_uint_eq(c.len[1], 2);
    ck_assert(memcmp(c.line[1], "\0\n", 2) == 0);
    cap_free(&c);
}
END_TEST

START_TEST(collect_output_gives_on_end_every_byte)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {"sh", "-c", "printf 'one\\ntwo'; printf 'E\\000' >&2", NULL};
    llll_proc_opts o = opts_for(&c);
    o.on_stdout = NULL; /* collected all the same */
    o.collect_output = true;
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert(!c.end_out_null);
    ck_assert_uint_eq(c.all_out.len, 7);
    ck_assert(memcmp(c.all_out.data, "one\ntwo", 7) == 0);
    ck_assert_uint_eq(c.all_err.len, 2);
    ck_assert(memcmp(c.all_err.data, "E\0", 2) == 0);
    ck_assert_uint_eq(c.nout, 0);
    cap_free(&c);

    cap_init(&c);
    o = opts_for(&c);
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert(c.end_out_null);
    cap_free(&c);
}
END_TEST

START_TEST(a_line_longer_than_max_line_arrives_in_pieces)
{
    cap c;
    cap_init(&c);
    /* 1000 'x' and a newline, cut at 64 bytes: 15 pieces of 64, then 41. */
    const char *argv[] = {"sh", "-c", "head -c 1000 /dev/zero | tr '\\000' x; echo; echo next", NULL};
    llll_proc_opts o = opts_for(&c);
    o.max_line = 64;
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_uint_eq(c.max_piece, 64);
    ck_assert_uint_eq(c.nout, 17);
    ck_assert_uint_eq(c.out.len, 1006);
    for (size_t i = 0; i < 1000; i++)
        ck_assert_int_eq(((char *)c.out.data)[i], 'x');
    ck_assert_str_eq((char *)c.out.data + 1000, "\nnext\n");
    cap_free(&c);
}
END_TEST

START_TEST(a_long_line_straddling_many_reads_arrives_whole)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {"sh", "-c", "head -c 300000 /dev/zero | tr '\\000' y; echo", NULL};
    llll_proc_opts o = opts_for(&c);
    o.max_line = 1 << 20;
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_uint_eq(c.nout, 1);
    ck_assert_uint_eq(c.max_piece, 300001);
    cap_free(&c);

    /* With the default max_line of 64 KiB it comes in 5 pieces. */
    cap_init(&c);
    o = opts_for(&c);
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_uint_eq(c.max_piece, 65536);
    ck_assert_uint_eq(c.nout, 5);
    ck_assert_uint_eq(c.out.len, 300001);
    cap_free(&c);
}
END_TEST

START_TEST(lines_written_one_byte_at_a_time_arrive_whole)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {t_helper("proc_trickle"), "first line\nsecond\n\nend", NULL};
    llll_proc_opts o = opts_for(&c);
    o.max_line = 8;
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_str_eq(c.out.data, "first line\nsecond\n\nend");
    ck_assert_uint_eq(c.nout, 5); /* "first li" "ne\n" "second\n" "\n" "end" */
    ck_assert(memcmp(c.line[0], "first li", 8) == 0);
    ck_assert_uint_eq(c.len[1], 3);
    ck_assert_uint_eq(c.len[4], 3);
    cap_free(&c);
}
END_TEST

/* --------------------------------------------------------- exit, errors */

START_TEST(join_reports_the_exit_code)
{
    const char *argv[] = {"sh", "-c", "exit 3", NULL};
    int st = run(argv, NULL);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 3);
}
END_TEST

START_TEST(join_reports_death_by_signal)
{
    const char *argv[] = {"sh", "-c", "kill -TERM $$", NULL};
    int st = run(argv, NULL);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGTERM);
}
END_TEST

START_TEST(start_reports_enoent_for_a_missing_program_and_leaves_no_child)
{
    /* Its own PATH: an empty folder (an inherited PATH with an unreadable
     * folder in it would make this EACCES). */
    char dir[] = "/tmp/llll-t-path-XXXXXX", path[64];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof path, "PATH=%s", dir);
    const char *env[] = {path, NULL};
    llll_proc_opts o = {.env = env};
    int fds = t_count_dir("/proc/self/fd");
    llll_proc *p = (llll_proc *)&p;
    const char *argv[] = {"llll-no-such-program-4711", NULL};
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), -ENOENT);
    rmdir(dir);
    ck_assert_ptr_null(p);
    t_assert_no_child();
    const char *abs[] = {"/nonexistent/llll-prog", NULL};
    ck_assert_int_eq(llll_proc_start(&p, abs, NULL), -ENOENT);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
}
END_TEST

START_TEST(start_reports_eacces_for_a_file_that_is_not_executable)
{
    char path[] = "/tmp/llll-t-noexec-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    llll_proc *p;
    const char *argv[] = {path, NULL};
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), -EACCES);
    unlink(path);
    t_assert_no_child();
}
END_TEST

/* A name over NAME_MAX can be no file in any PATH entry: with a PATH of
 * 65536 entries and a name of 65534 bytes (whose list of candidates would
 * take 4 GiB, more than a 32-bit size), start fails at once. */
START_TEST(start_reports_enametoolong_for_a_name_over_name_max_whatever_the_path)
{
    size_t entries = 65536, len = 65534;
    char *path = malloc(5 + entries);
    char *name = malloc(len + 1);
    ck_assert(path && name);
    memcpy(path, "PATH=", 5);
    memset(path + 5, ':', entries - 1);
    path[5 + entries - 1] = '\0';
    memset(name, 'n', len);
    name[len] = '\0';
    const char *env[] = {path, NULL};
    llll_proc_opts o = {.env = env};
    llll_proc *p;
    const char *argv[] = {name, NULL};
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), -ENAMETOOLONG);
    t_assert_no_child();
    free(path);
    free(name);
}
END_TEST

START_TEST(start_reports_the_error_of_a_missing_cwd)
{
    int fds = t_count_dir("/proc/self/fd");
    llll_proc *p;
    const char *argv[] = {"true", NULL};
    llll_proc_opts o = {.cwd = "/nonexistent/llll-dir"};
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), -ENOENT);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
}
END_TEST

START_TEST(start_rejects_an_empty_argv)
{
    llll_proc *p;
    const char *argv[] = {NULL};
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), -EINVAL);
    ck_assert_int_eq(llll_proc_start(&p, NULL, NULL), -EINVAL);
}
END_TEST

/* ------------------------------------------------------ stdin, env, cwd */

START_TEST(written_stdin_comes_back_through_cat)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {"cat", NULL};
    llll_proc_opts o = opts_for(&c);
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    ck_assert_int_eq(llll_proc_write(p, "a\nb", 3), 0);
    ck_assert_int_eq(llll_proc_write(p, "c\n", 2), 0);
    ck_assert_int_eq(llll_proc_close_stdin(p), 0);
    ck_assert_int_eq(llll_proc_close_stdin(p), 0); /* idempotent */
    ck_assert_int_eq(llll_proc_write(p, "x", 1), -EBADF);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_str_eq(c.out.data, "a\nbc\n");
    ck_assert_uint_eq(c.nout, 2);
    llll_proc_free(p);
    cap_free(&c);
}
END_TEST

typedef struct {
    _Atomic(llll_proc *) p;
    size_t bytes;
    int close_rc;
} closer;

static void on_line_closes_stdin(void *u, const char *line, size_t len)
{
    (void)line;
    closer *c = u;
    if (c->bytes == 0)
        c->close_rc = llll_proc_close_stdin(atomic_load(&c->p));
    c->bytes += len;
}

START_TEST(close_stdin_from_a_callback_does_not_wait_for_a_write_in_progress)
{
    /* The write below fills cat's stdin and stdout pipes, so it finishes
     * only if the callback returns: close_stdin in the callback must not
     * wait for it (the case times out if it does). stdin is closed once
     * the write in progress is done, so cat still echoes all of it. */
    enum { TOTAL = 4 << 20 };
    char *data = malloc(TOTAL);
    ck_assert_ptr_nonnull(data);
    for (size_t i = 0; i < TOTAL; i++)
        data[i] = i % 64 == 63 ? '\n' : 'a';
    closer c = {.close_rc = 1};
    llll_proc_opts o = {.on_stdout = on_line_closes_stdin, .userdata = &c};
    const char *argv[] = {"cat", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    atomic_store(&c.p, p);
    ck_assert_int_eq(llll_proc_write(p, data, TOTAL), 0);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_int_eq(c.close_rc, 0);
    ck_assert_uint_eq(c.bytes, TOTAL);
    ck_assert_int_eq(llll_proc_write(p, "x", 1), -EBADF);
    llll_proc_free(p);
    free(data);
}
END_TEST

START_TEST(write_to_a_child_that_exited_gives_epipe_not_a_signal)
{
    const char *argv[] = {"true", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
    ck_assert_int_eq(llll_proc_join(p, -1, NULL), 0);
    static char big[1 << 17];
    ck_assert_int_eq(llll_proc_write(p, big, sizeof big), -EPIPE);
    /* Still alive (SIGPIPE would have killed the test), nothing pending. */
    sigset_t pending;
    sigpending(&pending);
    ck_assert(!sigismember(&pending, SIGPIPE));
    llll_proc_free(p);
}
END_TEST

START_TEST(env_overlay_sets_and_removes_variables_and_path_still_works)
{
    cap c;
    cap_init(&c);
    setenv("LLLL_T_GONE", "still here", 1);
    setenv("LLLL_T_KEPT", "kept", 1);
    const char *env[] = {"LLLL_T_VAR=hello world", "LLLL_T_GONE", "LLLL_T_KEPT=new", NULL};
    const char *argv[] = {"sh", "-c", "echo \"$LLLL_T_VAR|${LLLL_T_GONE-unset}|$LLLL_T_KEPT\"", NULL};
    llll_proc_opts o = opts_for(&c);
    o.env = env;
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_str_eq(c.out.data, "hello world|unset|new\n");
    /* The parent's own environment is untouched. */
    ck_assert_str_eq(getenv("LLLL_T_GONE"), "still here");
    ck_assert_ptr_null(getenv("LLLL_T_VAR"));
    cap_free(&c);
}
END_TEST

START_TEST(program_is_looked_up_in_the_overlaid_path)
{
    llll_proc *p;
    const char *env[] = {"PATH=/nonexistent-llll", NULL};
    const char *argv[] = {"sh", "-c", "exit 0", NULL};
    llll_proc_opts o = {.env = env};
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), -ENOENT);
    t_assert_no_child();
}
END_TEST

START_TEST(cwd_option_sets_the_child_directory)
{
    char dir[] = "/tmp/llll-t-cwd-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *real = realpath(dir, NULL);
    cap c;
    cap_init(&c);
    const char *argv[] = {"pwd", "-P", NULL};
    llll_proc_opts o = opts_for(&c);
    o.cwd = dir;
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_uint_eq(c.out.len, strlen(real) + 1);
    ck_assert(memcmp(c.out.data, real, strlen(real)) == 0);
    rmdir(dir);
    free(real);
    cap_free(&c);
}
END_TEST

/* ------------------------------------------------------- end, join, kill */

/* For a test that made this process the reaper of its orphans: it no longer
 * is, and every orphan it adopted was reaped. */
static void subreaper_end(void)
{
    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
    t_assert_no_child();
}

/* on_end of a child whose first stdout line is a grandchild's pid: notes
 * whether that grandchild was still running then. */
static bool grandchild_alive_at_end;

static void on_end_notes_the_grandchild(void *u, int status, const llll_buf *out, const llll_buf *err)
{
    cap *c = u;
    pid_t g = c->nout ? (pid_t)atoi(c->line[0]) : 0;
    char state = 0;
    if (g > 1)
        t_proc_stat(g, &state, NULL);
    grandchild_alive_at_end = state != 0 && state != 'Z' && state != 'X';
    on_end(u, status, out, err);
}

START_TEST(on_end_comes_while_a_grandchild_holds_stdout_open)
{
    /* The orphaned sleep becomes our child, so we can kill and reap it. */
    T_SKIP_UNLESS(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "no PR_SET_CHILD_SUBREAPER (qemu-user?)");
    cap c;
    cap_init(&c);
    const char *argv[] = {"sh", "-c", "sleep 30 & echo $!", NULL};
    llll_proc_opts o = opts_for(&c);
    o.on_end = on_end_notes_the_grandchild;
    grandchild_alive_at_end = false;
    int st = run(argv, &o);
    ck_assert_int_eq(st, 0);
    ck_assert_int_eq(c.ends, 1);
    ck_assert_uint_eq(c.nout, 1);
    pid_t g = (pid_t)atoi(c.out.data);
    ck_assert_int_gt(g, 1);
    /* on_end did not wait for the grandchild to close stdout (it exits). */
    ck_assert(grandchild_alive_at_end);
    ck_assert_int_eq(kill(g, SIGKILL), 0);
    ck_assert_int_eq(waitpid(g, &st, 0), g);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    subreaper_end();
    cap_free(&c);
}
END_TEST

START_TEST(join_times_out_on_a_running_child)
{
    const char *argv[] = {"sleep", "30", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
    int st = 12345;
    ck_assert_int_eq(llll_proc_join(p, 50, &st), -ETIMEDOUT);
    ck_assert_int_eq(st, 12345);
    ck_assert_int_eq(llll_proc_join(p, 0, &st), -ETIMEDOUT);
    ck_assert_int_eq(llll_proc_kill(p, 0), 0); /* still running */
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    llll_proc_free(p);
}
END_TEST

START_TEST(kill_then_join_reports_the_signal)
{
    const char *argv[] = {"sleep", "30", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
    ck_assert_int_gt(llll_proc_pid(p), 0);
    ck_assert_int_eq(llll_proc_kill(p, SIGTERM), 0);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGTERM);
    llll_proc_free(p);
}
END_TEST

START_TEST(kill_after_reap_returns_esrch)
{
    const char *argv[] = {"true", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
    pid_t pid = llll_proc_pid(p);
    ck_assert_int_eq(llll_proc_join(p, -1, NULL), 0);
    ck_assert_int_eq(llll_proc_kill(p, SIGTERM), -ESRCH);
    ck_assert_int_eq(llll_proc_kill(p, 0), -ESRCH);
    ck_assert_int_eq(llll_proc_pid(p), pid); /* kept for messages */
    llll_proc_free(p);
}
END_TEST

START_TEST(kill_reaches_the_whole_group_with_new_group)
{
    T_SKIP_UNLESS(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "no PR_SET_CHILD_SUBREAPER (qemu-user?)");
    cap c;
    cap_init(&c);
    const char *argv[] = {"sh", "-c", "sleep 30 & echo $!; echo ready; wait", NULL};
    llll_proc_opts o = opts_for(&c);
    o.new_group = true;
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    sem_wait(&c.ready);
    pid_t g = (pid_t)atoi(c.line[0]);
    ck_assert_int_gt(g, 1);
    ck_assert_int_eq(getpgid(g), llll_proc_pid(p));
    ck_assert_int_eq(llll_proc_kill(p, SIGTERM), 0);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert(WIFSIGNALED(st));
    /* The grandchild got it too (else this waits 30 s: the case times out). */
    ck_assert_int_eq(waitpid(g, &st, 0), g);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGTERM);
    llll_proc_free(p);
    subreaper_end();
    cap_free(&c);
}
END_TEST

START_TEST(stop_kills_a_child_that_ignores_sigterm)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {"sh", "-c", "trap '' TERM; echo ready; exec sleep 30", NULL};
    llll_proc_opts o = opts_for(&c);
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    sem_wait(&c.ready); /* the trap is set */
    int st;
    ck_assert_int_eq(llll_proc_stop(p, 100, &st), 0);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGKILL);
    llll_proc_free(p);
    cap_free(&c);
}
END_TEST

START_TEST(stop_ends_an_obedient_child_with_sigterm)
{
    const char *argv[] = {"sleep", "30", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
    int st;
    /* A grace this long would time the case out if stop slept through it. */
    ck_assert_int_eq(llll_proc_stop(p, 60000, &st), 0);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGTERM);
    llll_proc_free(p);
}
END_TEST

START_TEST(free_of_a_running_child_kills_and_reaps_it)
{
    int fds = t_count_dir("/proc/self/fd");
    cap c;
    cap_init(&c);
    const char *argv[] = {"sleep", "30", NULL};
    llll_proc_opts o = opts_for(&c);
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    llll_proc_free(p);
    ck_assert_int_eq(c.ends, 1); /* on_end ran, and before free returned */
    ck_assert(WIFSIGNALED(c.status) && WTERMSIG(c.status) == SIGKILL);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
    llll_proc_free(NULL);
    cap_free(&c);
}
END_TEST

/* ------------------------------------------------------ callback threads */

typedef struct {
    atomic_int inside;
    atomic_int overlaps;
    atomic_int lines;
    int lines_at_end;
    int inside_at_end;
} order;

static void busy(void)
{
    for (int i = 0; i < 100; i++)
        sched_yield();
}

static void on_line_counted(void *u, const char *line, size_t len)
{
    (void)line;
    (void)len;
    order *o = u;
    if (atomic_fetch_add(&o->inside, 1) != 0)
        atomic_fetch_add(&o->overlaps, 1);
    if (atomic_load(&o->lines) % 64 == 0)
        busy();
    atomic_fetch_add(&o->lines, 1);
    atomic_fetch_sub(&o->inside, 1);
}

static void on_end_counted(void *u, int status, const llll_buf *out, const llll_buf *err)
{
    (void)status;
    (void)out;
    (void)err;
    order *o = u;
    o->inside_at_end = atomic_fetch_add(&o->inside, 1);
    busy();
    o->lines_at_end = atomic_load(&o->lines);
    atomic_fetch_sub(&o->inside, 1);
}

START_TEST(callbacks_never_overlap_and_all_lines_come_before_on_end)
{
    order ord;
    memset(&ord, 0, sizeof ord);
    const char *argv[] = {"sh", "-c",
                          "i=0; while [ $i -lt 2000 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done",
                          NULL};
    llll_proc_opts o = {.on_stdout = on_line_counted, .on_stderr = on_line_counted,
                        .on_end = on_end_counted, .userdata = &ord};
    ck_assert_int_eq(run(argv, &o), 0);
    ck_assert_int_eq(atomic_load(&ord.overlaps), 0);
    ck_assert_int_eq(ord.inside_at_end, 0);
    ck_assert_int_eq(ord.lines_at_end, 4000);
    ck_assert_int_eq(atomic_load(&ord.lines), 4000);
}
END_TEST

typedef struct {
    _Atomic(llll_proc *) p;
    int join_rc, stop_rc;
    int calls;
} self_join;

static void on_line_joins_itself(void *u, const char *line, size_t len)
{
    (void)line;
    (void)len;
    self_join *s = u;
    llll_proc *p = atomic_load(&s->p);
    s->join_rc = llll_proc_join(p, -1, NULL);
    s->stop_rc = llll_proc_stop(p, 0, NULL);
    s->calls++;
    llll_proc_close_stdin(p); /* other calls are allowed: cat ends */
}

START_TEST(join_and_stop_from_a_callback_return_edeadlk)
{
    self_join s = {.join_rc = 1, .stop_rc = 1};
    const char *argv[] = {"cat", NULL};
    llll_proc_opts o = {.on_stdout = on_line_joins_itself, .userdata = &s};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    atomic_store(&s.p, p);
    ck_assert_int_eq(llll_proc_write(p, "x\n", 2), 0);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_int_eq(s.calls, 1);
    ck_assert_int_eq(s.join_rc, -EDEADLK);
    ck_assert_int_eq(s.stop_rc, -EDEADLK);
    llll_proc_free(p);
}
END_TEST

typedef struct {
    llll_proc *p;
    int rc, status;
} joiner;

static void *join_thread(void *arg)
{
    joiner *j = arg;
    j->rc = llll_proc_join(j->p, -1, &j->status);
    return NULL;
}

START_TEST(many_threads_may_join_one_child)
{
    const char *argv[] = {"sh", "-c", "read x; exit 5", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
    pthread_t t[4];
    joiner j[4];
    for (int i = 0; i < 4; i++) {
        j[i] = (joiner){.p = p, .rc = 1, .status = -1};
        ck_assert_int_eq(pthread_create(&t[i], NULL, join_thread, &j[i]), 0);
    }
    ck_assert_int_eq(llll_proc_write(p, "go\n", 3), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(j[i].rc, 0);
        ck_assert(WIFEXITED(j[i].status) && WEXITSTATUS(j[i].status) == 5);
    }
    llll_proc_free(p);
}
END_TEST

typedef struct {
    llll_proc *p;
    atomic_int tid;
    int rc, status;
} free_joiner;

static void *join_until_freed(void *arg)
{
    free_joiner *j = arg;
    atomic_store(&j->tid, (int)gettid());
    j->rc = llll_proc_join(j->p, -1, &j->status);
    return NULL;
}

START_TEST(free_waits_for_threads_blocked_in_join_to_return)
{
    const char *argv[] = {"sleep", "30", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
    enum { N = 16 };
    pthread_t t[N];
    free_joiner j[N];
    for (int i = 0; i < N; i++) {
        j[i].p = p;
        atomic_init(&j[i].tid, 0);
        j[i].rc = 1;
        j[i].status = -1;
        ck_assert_int_eq(pthread_create(&t[i], NULL, join_until_freed, &j[i]), 0);
    }
    for (int i = 0; i < N; i++) {
        while (atomic_load(&j[i].tid) == 0)
            sched_yield();
        t_wait_until_sleeping(atomic_load(&j[i].tid));
    }
    /* free kills the child; every join already inside returns its status
     * before free touches the memory they wait on. */
    llll_proc_free(p);
    /* join wrote the status before it left; its return value is stored by
     * the thread afterwards, so that is checked once the thread ended. */
    for (int i = 0; i < N; i++)
        ck_assert(WIFSIGNALED(j[i].status) && WTERMSIG(j[i].status) == SIGKILL);
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(j[i].rc, 0);
    }
}
END_TEST

/* ---------------------------------------------------------- fd hygiene */

static atomic_bool spinning;

static void *spawn_loop(void *arg)
{
    (void)arg;
    const char *argv[] = {"true", NULL};
    while (atomic_load(&spinning)) {
        llll_proc *p;
        if (llll_proc_start(&p, argv, NULL) == 0) {
            llll_proc_join(p, -1, NULL);
            llll_proc_free(p);
        }
    }
    return NULL;
}

START_TEST(children_see_only_fds_0_1_2_even_while_another_thread_spawns)
{
    t_cloexec_everything();
    atomic_store(&spinning, true);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, spawn_loop, NULL), 0);
    const char *argv[] = {t_helper("proc_fds"), NULL};
    for (int i = 0; i < 40; i++) {
        cap c;
        cap_init(&c);
        llll_proc_opts o = opts_for(&c);
        ck_assert_int_eq(run(argv, &o), 0);
        ck_assert_str_eq(c.out.data, "0 1 2\n");
        cap_free(&c);
    }
    atomic_store(&spinning, false);
    pthread_join(t, NULL);
}
END_TEST

START_TEST(a_thousand_spawns_leave_fds_threads_and_zombies_unchanged)
{
    const char *argv[] = {"/bin/true", NULL};
    /* One first: a sanitizer's runtime may start a thread of its own then. */
    ck_assert_int_eq(run(argv, NULL), 0);
    int fds = t_count_dir("/proc/self/fd");
    int threads = t_threads_settled(1);
    for (int i = 0; i < 1000; i++) {
        llll_proc *p;
        ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
        int st;
        ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
        ck_assert_int_eq(st, 0);
        llll_proc_free(p);
    }
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
    ck_assert_int_eq(t_threads_settled(threads), threads);
    t_assert_no_child();
}
END_TEST

START_TEST(works_in_a_parent_started_with_fds_0_1_2_closed)
{
    char helper[4096];
    snprintf(helper, sizeof helper, "%s", t_helper("proc_closed_stdio"));
    const char *argv[] = {helper, t_helper("inst_echo"), NULL};
    int st = run(argv, NULL);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
}
END_TEST

/* ---------------------------------------------------------- stdin_mode */

START_TEST(stdin_is_a_pipe_by_default_and_with_stdin_pipe)
{
    for (int explicit = 0; explicit < 2; explicit++) {
        cap c;
        cap_init(&c);
        const char *argv[] = {"cat", NULL};
        llll_proc_opts o = opts_for(&c);
        if (explicit)
            o.stdin_mode = LLLL_STDIN_PIPE;
        llll_proc *p;
        ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
        ck_assert_int_eq(llll_proc_write(p, "ready\n", 6), 0);
        sem_wait(&c.ready); /* it came back through the pipe */
        int st;
        ck_assert_int_eq(llll_proc_join(p, 0, &st), -ETIMEDOUT); /* no EOF yet */
        ck_assert_int_eq(llll_proc_close_stdin(p), 0);
        ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
        ck_assert_int_eq(st, 0);
        llll_proc_free(p);
        cap_free(&c);
    }
}
END_TEST

START_TEST(stdin_null_gives_eof_at_once_and_no_pipe_to_write)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {"sh", "-c", "cat; echo done", NULL};
    llll_proc_opts o = opts_for(&c);
    o.stdin_mode = LLLL_STDIN_NULL;
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    ck_assert_int_eq(llll_proc_write(p, "x", 1), -EBADF);
    ck_assert_int_eq(llll_proc_close_stdin(p), -EBADF);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0); /* the case times out if cat waits */
    ck_assert_int_eq(st, 0);
    ck_assert_str_eq(c.out.data, "done\n");
    llll_proc_free(p);
    cap_free(&c);
}
END_TEST

/* Points this process's fd 0 at a pipe holding text, then EOF; returns the
 * old fd 0 for stdin_restore. */
static int stdin_from(const char *text)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    ck_assert_int_eq(write(pfd[1], text, strlen(text)), (ssize_t)strlen(text));
    close(pfd[1]);
    int saved = dup(0);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(pfd[0], 0), 0);
    close(pfd[0]);
    return saved;
}

static void stdin_restore(int saved)
{
    dup2(saved, 0);
    close(saved);
}

START_TEST(stdin_inherit_reads_the_parents_stdin)
{
    int saved = stdin_from("from the parent\n");
    cap c;
    cap_init(&c);
    const char *argv[] = {"cat", NULL};
    llll_proc_opts o = opts_for(&c);
    o.stdin_mode = LLLL_STDIN_INHERIT;
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    ck_assert_int_eq(llll_proc_write(p, "x", 1), -EBADF);
    ck_assert_int_eq(llll_proc_close_stdin(p), -EBADF);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_str_eq(c.out.data, "from the parent\n");
    llll_proc_free(p);
    cap_free(&c);
    stdin_restore(saved);

    /* llll_proc_run follows it when it has no input. */
    saved = stdin_from("again\n");
    llll_buf out = LLLL_BUF_INIT;
    llll_proc_opts inherit = {.stdin_mode = LLLL_STDIN_INHERIT};
    ck_assert_int_eq(llll_proc_run(argv, &inherit, NULL, 0, -1, &st, &out, NULL), 0);
    stdin_restore(saved);
    ck_assert_uint_eq(out.len, 6);
    ck_assert(memcmp(out.data, "again\n", 6) == 0);
    llll_buf_free(&out);
}
END_TEST

START_TEST(an_unknown_stdin_mode_is_einval)
{
    llll_proc *p = (llll_proc *)&p;
    const char *argv[] = {"true", NULL};
    llll_proc_opts o = {.stdin_mode = 3};
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), -EINVAL);
    ck_assert_ptr_null(p);
    t_assert_no_child();
}
END_TEST

/* ------------------------------------------------------------ proc_run */

static bool buf_is(const llll_buf *b, const char *s)
{
    return b->len == strlen(s) && memcmp(b->data, s, b->len) == 0;
}

START_TEST(run_captures_stdout_stderr_and_the_exit_status)
{
    llll_buf out = LLLL_BUF_INIT, err = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_buf_set(&out, "old contents", 12), 0);
    const char *argv[] = {"sh", "-c", "echo out1; echo err1 >&2; printf out2; exit 7", NULL};
    int st = -1;
    ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 0, -1, &st, &out, &err), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 7);
    ck_assert(buf_is(&out, "out1\nout2"));
    ck_assert(buf_is(&err, "err1\n"));
    /* Killed by a signal: the status says so, the call succeeded. */
    const char *killed[] = {"sh", "-c", "kill -KILL $$", NULL};
    ck_assert_int_eq(llll_proc_run(killed, NULL, NULL, 0, -1, &st, &out, &err), 0);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    ck_assert_uint_eq(out.len, 0);
    llll_buf_free(&out);
    llll_buf_free(&err);
    t_assert_no_child();
}
END_TEST

START_TEST(run_delivers_input_then_eof)
{
    llll_buf out = LLLL_BUF_INIT;
    const char *argv[] = {"sh", "-c", "cat; echo eof", NULL};
    const char in[] = "line one\nno newline\0nul";
    int st;
    ck_assert_int_eq(llll_proc_run(argv, NULL, in, sizeof in - 1, -1, &st, &out, NULL), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_uint_eq(out.len, sizeof in - 1 + 4);
    ck_assert(memcmp(out.data, in, sizeof in - 1) == 0);
    ck_assert(memcmp((char *)out.data + sizeof in - 1, "eof\n", 4) == 0);
    /* Empty input: EOF at once. Without input: /dev/null, EOF at once. */
    ck_assert_int_eq(llll_proc_run(argv, NULL, "", 0, -1, &st, &out, NULL), 0);
    ck_assert(buf_is(&out, "eof\n"));
    ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 0, -1, &st, &out, NULL), 0);
    ck_assert(buf_is(&out, "eof\n"));
    llll_buf_free(&out);
}
END_TEST

START_TEST(run_feeds_big_input_to_a_child_that_first_prints_big_output)
{
    /* The child prints 1 MiB before it reads anything, then echoes 4 MiB of
     * input: stdin and stdout pipes both fill. A writer that blocked the
     * reading would deadlock (the case would time out). */
    enum { IN = 4 << 20, PRE = 1 << 20 };
    char *data = malloc(IN);
    ck_assert_ptr_nonnull(data);
    for (size_t i = 0; i < IN; i++)
        data[i] = (char)('a' + i % 26);
    const char *argv[] = {"sh", "-c", "head -c 1048576 /dev/zero; cat; head -c 100000 /dev/zero >&2", NULL};
    llll_buf out = LLLL_BUF_INIT, err = LLLL_BUF_INIT;
    int st;
    ck_assert_int_eq(llll_proc_run(argv, NULL, data, IN, -1, &st, &out, &err), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_uint_eq(out.len, PRE + IN);
    char *zeros = calloc(1, PRE);
    ck_assert_ptr_nonnull(zeros);
    ck_assert(memcmp(out.data, zeros, PRE) == 0);
    ck_assert(memcmp((char *)out.data + PRE, data, IN) == 0);
    free(zeros);
    ck_assert_uint_eq(err.len, 100000);
    llll_buf_free(&out);
    llll_buf_free(&err);
    free(data);
}
END_TEST

START_TEST(run_is_no_error_when_the_child_does_not_read_its_input)
{
    static char big[1 << 20];
    const char *argv[] = {"sh", "-c", "exit 2", NULL};
    int st;
    ck_assert_int_eq(llll_proc_run(argv, NULL, big, sizeof big, -1, &st, NULL, NULL), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 2);
    sigset_t pending;
    sigpending(&pending);
    ck_assert(!sigismember(&pending, SIGPIPE));
}
END_TEST

START_TEST(run_times_out_with_what_was_read_and_the_child_gone)
{
    /* The timer cannot wait for the echo: a run that timed out before it is
     * retried with a longer timeout, so the output is there in the end. A
     * run that dropped its output on timeout never ends the loop. */
    const char *argv[] = {"sh", "-c", "echo partial; echo e >&2; exec sleep 30", NULL};
    llll_buf out = LLLL_BUF_INIT, err = LLLL_BUF_INIT;
    int st = -1;
    for (int ms = 50; out.len == 0 || err.len == 0; ms *= 2) {
        ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 0, ms, &st, &out, &err), -ETIMEDOUT);
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
        t_assert_no_child();
    }
    ck_assert(buf_is(&out, "partial\n"));
    ck_assert(buf_is(&err, "e\n"));
    llll_buf_free(&out);
    llll_buf_free(&err);
}
END_TEST

START_TEST(run_kills_a_child_that_ignores_sigterm_after_the_grace)
{
    /* "ready" printed means SIGTERM, whenever it came, found the trap set. */
    const char *argv[] = {"sh", "-c", "trap '' TERM; echo ready; exec sleep 30", NULL};
    llll_buf out = LLLL_BUF_INIT;
    int st = -1;
    for (int ms = 50; out.len == 0; ms *= 2) {
        ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 0, ms, &st, &out, NULL), -ETIMEDOUT);
        t_assert_no_child();
    }
    ck_assert(buf_is(&out, "ready\n"));
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    llll_buf_free(&out);
}
END_TEST

START_TEST(run_timeout_ends_the_whole_group_with_new_group)
{
    /* The orphaned sleeps become our children, so we can see how they
     * ended: by the SIGTERM sent to the group (else the wait below takes
     * 30 s and the case times out). A run that timed out before sh printed
     * may have left a sleep (or a copy of sh about to exec it) of its
     * group too: every one is reaped, each ended by the SIGTERM. */
    T_SKIP_UNLESS(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0, "no PR_SET_CHILD_SUBREAPER (qemu-user?)");
    const char *argv[] = {"sh", "-c", "sleep 30 & echo $!; wait", NULL};
    llll_proc_opts o = {.new_group = true};
    llll_buf out = LLLL_BUF_INIT;
    int st;
    for (int ms = 50; out.len == 0; ms *= 2)
        ck_assert_int_eq(llll_proc_run(argv, &o, NULL, 0, ms, &st, &out, NULL), -ETIMEDOUT);
    char pid[32] = "";
    memcpy(pid, out.data, out.len < sizeof pid - 1 ? out.len : sizeof pid - 1);
    pid_t g = (pid_t)atoi(pid);
    ck_assert_int_gt(g, 1);
    bool seen = false;
    pid_t r;
    while ((r = waitpid(-1, &st, 0)) > 0 || (r < 0 && errno == EINTR)) {
        if (r < 0)
            continue;
        seen |= r == g;
        ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM, "pid %d: status 0x%x", (int)r, (unsigned)st);
    }
    ck_assert_int_eq(errno, ECHILD);
    ck_assert(seen);
    subreaper_end();
    llll_buf_free(&out);
}
END_TEST

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define T_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define T_SANITIZED 1
#endif
#endif

/* This process's address space in bytes (VmSize). */
static size_t vm_size(void)
{
    unsigned long long kb = t_status_field(0, "VmSize", 10);
    ck_assert(kb != ~0ULL && kb > 0);
    return (size_t)kb << 10;
}

START_TEST(run_reports_enomem_when_out_cannot_grow_and_still_runs_the_child_to_its_end)
{
#ifdef T_SANITIZED
    printf("run_reports_enomem_...: skipped, a sanitizer's shadow memory needs the address space\n");
    return;
#endif
    /* 64 MiB more address space than now, 256 MiB of output. */
    struct rlimit rl, old;
    ck_assert_int_eq(getrlimit(RLIMIT_AS, &rl), 0);
    old = rl;
    rl.rlim_cur = vm_size() + (64 << 20);
    ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
    bool bites = t_as_limit_bites();
    if (!bites)
        setrlimit(RLIMIT_AS, &old);
    T_SKIP_UNLESS(bites, "RLIMIT_AS is not enforced here (qemu-user?)");
    const char *argv[] = {"head", "-c", "268435456", "/dev/zero", NULL};
    llll_buf out = LLLL_BUF_INIT;
    int st = -1;
    int rc = llll_proc_run(argv, NULL, NULL, 0, -1, &st, &out, NULL);
    setrlimit(RLIMIT_AS, &old); /* for the cases after this one with CK_FORK=no */
    ck_assert_int_eq(rc, -ENOMEM);
    ck_assert_int_eq(st, 0);
    ck_assert_uint_lt(out.len, 256u << 20);
    llll_buf_free(&out);
}
END_TEST

START_TEST(run_with_timeout_0_ends_the_child_at_once)
{
    const char *argv[] = {"sleep", "30", NULL};
    int st = -1;
    ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 0, 0, &st, NULL, NULL), -ETIMEDOUT);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    t_assert_no_child();
}
END_TEST

typedef struct {
    int id, bad;
} runner;

static void *run_many(void *arg)
{
    runner *r = arg;
    char word[16], want[32];
    snprintf(word, sizeof word, "t%d", r->id);
    const char *argv[] = {"sh", "-c", "cat; echo \"$0\" >&2", word, NULL};
    llll_buf out = LLLL_BUF_INIT, err = LLLL_BUF_INIT;
    for (int i = 0; i < 20; i++) {
        int n = snprintf(want, sizeof want, "%s-%d\n", word, i);
        int st = -1;
        if (llll_proc_run(argv, NULL, want, (size_t)n, -1, &st, &out, &err) != 0 || st != 0 ||
            out.len != (size_t)n || memcmp(out.data, want, (size_t)n) != 0 ||
            err.len != strlen(word) + 1 || memcmp(err.data, word, strlen(word)) != 0)
            r->bad++;
    }
    llll_buf_free(&out);
    llll_buf_free(&err);
    return NULL;
}

START_TEST(run_from_four_threads_at_once_gives_each_its_own_output)
{
    /* qemu-user (7.2) now and then hangs, inside qemu, a child forked while
     * other threads run, before it reaches exec (caught here: two spawned
     * children of this case in a futex of qemu's, one with its stdio
     * already moved); every spawn is a fork there. */
    T_SKIP_UNLESS(!t_under_qemu(), "qemu-user hangs a child forked among running threads now and then");
    pthread_t t[4];
    runner r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (runner){.id = i};
        ck_assert_int_eq(pthread_create(&t[i], NULL, run_many, &r[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(r[i].bad, 0);
    }
    t_assert_no_child();
}
END_TEST

START_TEST(run_times_out_while_a_child_does_not_read_its_input)
{
    /* The input does not fit in the pipe and the child never reads it: the
     * writer must give up at the deadline, not block. */
    static char big[4 << 20];
    const char *argv[] = {"sleep", "30", NULL};
    int st = -1;
    ck_assert_int_eq(llll_proc_run(argv, NULL, big, sizeof big, 100, &st, NULL, NULL), -ETIMEDOUT);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
    t_assert_no_child();
}
END_TEST

START_TEST(run_with_null_buffers_drops_the_streams_or_gives_them_to_callbacks)
{
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2; exit 3", NULL};
    int st = -1;
    ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 0, -1, &st, NULL, NULL), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 3);
    ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 0, -1, NULL, NULL, NULL), 0);

    cap c;
    cap_init(&c);
    llll_proc_opts o = opts_for(&c);
    llll_buf err = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_proc_run(argv, &o, NULL, 0, -1, &st, NULL, &err), 0);
    ck_assert_str_eq(c.out.data, "out\n");
    ck_assert_str_eq(c.err.data, "err\n"); /* the callback, and the buffer too */
    ck_assert(buf_is(&err, "err\n"));
    ck_assert_int_eq(c.ends, 1);
    ck_assert(WIFEXITED(c.status) && WEXITSTATUS(c.status) == 3);
    llll_buf_free(&err);
    cap_free(&c);
}
END_TEST

START_TEST(run_reports_start_errors_and_rejects_bad_arguments)
{
    llll_buf out = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_buf_set(&out, "x", 1), 0);
    int st = 12345;
    const char *missing[] = {"/nonexistent/llll-prog", NULL};
    ck_assert_int_eq(llll_proc_run(missing, NULL, NULL, 0, -1, &st, &out, NULL), -ENOENT);
    ck_assert_int_eq(st, 12345);
    ck_assert_uint_eq(out.len, 0);
    const char *argv[] = {"true", NULL};
    ck_assert_int_eq(llll_proc_run(NULL, NULL, NULL, 0, -1, &st, NULL, NULL), -EINVAL);
    ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 1, -1, &st, NULL, NULL), -EINVAL);
    llll_proc_opts o = {.stdin_mode = LLLL_STDIN_NULL};
    ck_assert_int_eq(llll_proc_run(argv, &o, "x", 1, -1, &st, NULL, NULL), -EINVAL);
    o.stdin_mode = 7;
    ck_assert_int_eq(llll_proc_run(argv, &o, NULL, 0, -1, &st, NULL, NULL), -EINVAL);
    ck_assert_int_eq(st, 12345);
    t_assert_no_child();
    llll_buf_free(&out);
}
END_TEST

START_TEST(run_reuses_the_callers_buffer_without_growing_it)
{
    llll_buf out = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_buf_reserve(&out, 1 << 16), 0);
    void *data = out.data;
    size_t cap = out.cap;
    const char *argv[] = {"printf", "hello", NULL};
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(llll_proc_run(argv, NULL, NULL, 0, -1, NULL, &out, NULL), 0);
        ck_assert(buf_is(&out, "hello"));
    }
    ck_assert_ptr_eq(out.data, data);
    ck_assert_uint_eq(out.cap, cap);
    llll_buf_free(&out);
}
END_TEST

/* ------------------------------------------- signals, SIGCHLD, parent death */

/* A child's signal state as its /proc/PID/status shows it. */
typedef struct {
    unsigned long long blk, ign;
    int stop_rc, stop_status;
    int start_rc;
} sigstate;

/* Starts `sleep 30`, reads its signal state, stops it with a grace far
 * longer than the case's timeout: only a SIGTERM that works ends it in time.
 * Runs on whatever thread calls it (a callback's, a mapper worker's). */
static void start_sleep_and_stop(sigstate *s)
{
    const char *argv[] = {"sleep", "30", NULL};
    llll_proc *q;
    s->start_rc = llll_proc_start(&q, argv, NULL);
    if (s->start_rc < 0)
        return;
    s->blk = t_status_field(llll_proc_pid(q), "SigBlk", 16);
    s->ign = t_status_field(llll_proc_pid(q), "SigIgn", 16);
    s->stop_rc = llll_proc_stop(q, 60000, &s->stop_status);
    llll_proc_free(q);
}

static void assert_fresh_and_stopped_by_sigterm(const sigstate *s)
{
    ck_assert_int_eq(s->start_rc, 0);
    /* Signals 1-31, every one a program can be sent by name. The two real-
     * time signals above them that glibc keeps for itself are not counted:
     * under qemu-user the emulator holds one of them ignored in every
     * program it runs, which no guest can change. */
    ck_assert_uint_eq(s->blk & 0x7fffffffu, 0);
    ck_assert_uint_eq(s->ign & 0x7fffffffu, 0);
    ck_assert_int_eq(s->stop_rc, 0);
    ck_assert(WIFSIGNALED(s->stop_status));
    ck_assert_int_eq(WTERMSIG(s->stop_status), SIGTERM);
}

static const int ignored[] = {SIGPIPE, SIGUSR1, SIGTERM};

static void ignore_some_signals(bool ignore)
{
    /* This process ignores these: a fresh program does not. Put back after
     * the case, for those after it with CK_FORK=no. */
    for (size_t i = 0; i < sizeof ignored / sizeof ignored[0]; i++)
        signal(ignored[i], ignore ? SIG_IGN : SIG_DFL);
}

static void on_line_starts_a_child(void *u, const char *line, size_t len)
{
    (void)line;
    (void)len;
    start_sleep_and_stop(u);
}

START_TEST(a_child_started_from_a_callback_has_no_signal_blocked_or_ignored_and_stops_on_sigterm)
{
    ignore_some_signals(true);
    sigstate s = {.blk = 1, .ign = 1, .stop_rc = 1, .start_rc = 1};
    const char *argv[] = {"echo", "go", NULL};
    llll_proc_opts o = {.on_stdout = on_line_starts_a_child, .userdata = &s};
    ck_assert_int_eq(run(argv, &o), 0);
    ignore_some_signals(false);
    assert_fresh_and_stopped_by_sigterm(&s);
}
END_TEST

typedef struct {
    pthread_t caller;
    sem_t done;
    sigstate s;
} mapper_start;

static int item_starts_a_child_on_a_worker(void *ctx, size_t i)
{
    (void)i;
    mapper_start *m = ctx;
    if (pthread_equal(pthread_self(), m->caller)) {
        sem_wait(&m->done); /* so the other item runs on the worker */
    } else {
        start_sleep_and_stop(&m->s);
        sem_post(&m->done);
    }
    return 0;
}

START_TEST(a_child_started_from_a_mapper_item_has_no_signal_blocked_or_ignored_and_stops_on_sigterm)
{
    ignore_some_signals(true);
    mapper_start m = {.caller = pthread_self(), .s = {.blk = 1, .ign = 1, .stop_rc = 1, .start_rc = 1}};
    sem_init(&m.done, 0, 0);
    llll_mapper *mp;
    ck_assert_int_eq(llll_mapper_new(&mp, 2), 0);
    /* One item each: the caller's waits until the worker's has run. */
    ck_assert_int_eq(llll_mapper_map(mp, 2, item_starts_a_child_on_a_worker, &m), 0);
    llll_mapper_free(mp);
    sem_destroy(&m.done);
    ignore_some_signals(false);
    assert_fresh_and_stopped_by_sigterm(&m.s);
}
END_TEST

START_TEST(join_and_stop_report_echild_when_sigchld_is_ignored)
{
    /* The kernel then reaps the children itself: no status exists. */
    void (*old)(int) = signal(SIGCHLD, SIG_IGN);
    cap c;
    cap_init(&c);
    llll_proc_opts o = opts_for(&c);
    const char *argv[] = {"sh", "-c", "exit 3", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    int st = 12345;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), -ECHILD);
    ck_assert_int_eq(st, -1);
    ck_assert_int_eq(c.ends, 1);
    ck_assert_int_eq(c.status, -1);
    llll_proc_free(p);

    const char *sleeper[] = {"sleep", "30", NULL};
    ck_assert_int_eq(llll_proc_start(&p, sleeper, NULL), 0);
    ck_assert_int_eq(llll_proc_stop(p, 60000, &st), -ECHILD); /* SIGTERM worked */
    ck_assert_int_eq(llll_proc_kill(p, SIGTERM), -ESRCH);
    llll_proc_free(p);

    const char *missing[] = {"llll-no-such-program-4711", NULL};
    ck_assert_int_eq(llll_proc_start(&p, missing, NULL), -ENOENT);
    cap_free(&c);
    signal(SIGCHLD, old); /* for the cases after this one with CK_FORK=no */
}
END_TEST

/* Runs helper_proc_orphan (mode NULL or "group"), kills it once it printed
 * the pid to watch, and returns that pid, which is then our child: this
 * process is a subreaper. */
static pid_t orphan_of_a_killed_parent(const char *mode)
{
    cap c;
    cap_init(&c);
    const char *argv[] = {t_helper("proc_orphan"), mode, NULL};
    llll_proc_opts o = opts_for(&c);
    llll_proc *h;
    ck_assert_int_eq(llll_proc_start(&h, argv, &o), 0);
    sem_wait(&c.ready); /* the starting thread has ended and the child lives */
    pid_t pid = (pid_t)atoi(c.line[0]);
    ck_assert_int_gt(pid, 1);
    ck_assert_int_eq(llll_proc_kill(h, SIGKILL), 0);
    int st;
    ck_assert_int_eq(llll_proc_join(h, -1, &st), 0);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    llll_proc_free(h);
    cap_free(&c);
    return pid;
}

/* Reaps every orphan that came to us; the status of pid. The case's
 * timeout bounds the wait (a survivor would sleep 30 s). */
static int reap_orphans(pid_t pid)
{
    int st, want = -1;
    pid_t r;
    while ((r = waitpid(-1, &st, 0)) > 0 || (r < 0 && errno == EINTR))
        if (r == pid)
            want = st;
    return want;
}

static bool subreaper(void)
{
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) == 0)
        return true;
    printf("die_with_parent tests: skipped, no PR_SET_CHILD_SUBREAPER here\n");
    return false;
}

START_TEST(die_with_parent_outlives_the_starting_thread_and_dies_with_the_process)
{
    if (!subreaper())
        return;
    pid_t cat = orphan_of_a_killed_parent(NULL);
    int st = reap_orphans(cat);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGKILL);
    subreaper_end();
}
END_TEST

START_TEST(die_with_parent_with_new_group_kills_the_whole_group)
{
    if (!subreaper())
        return;
    pid_t member = orphan_of_a_killed_parent("group");
    int st = reap_orphans(member);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGKILL);
    subreaper_end();
}
END_TEST

START_TEST(die_with_parent_children_end_normally_and_report_start_errors)
{
    int fds = t_count_dir("/proc/self/fd");
    llll_proc_opts o = {.die_with_parent = true};
    const char *argv[] = {"sh", "-c", "exit 5", NULL};
    int st = run(argv, &o);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 5);
    o.new_group = true; /* with its guard */
    st = run(argv, &o);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 5);
    llll_proc *p;
    const char *missing[] = {"llll-no-such-program-4711", NULL};
    ck_assert_int_eq(llll_proc_start(&p, missing, &o), -ENOENT);
    o.cwd = "/nonexistent/llll-dir";
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), -ENOENT);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
}
END_TEST

/* ------------------------------------------------------ printing, verbose */

/* Runs fn with fd (1 or 2) pointing into a pipe; returns what was written. */
static char *capture_fd(int fd, void (*fn)(void))
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    int saved = dup(fd);
    dup2(pfd[1], fd);
    close(pfd[1]);
    fn();
    dup2(saved, fd);
    close(saved);
    static char got[4096];
    size_t n = 0;
    ssize_t r;
    while ((r = read(pfd[0], got + n, sizeof got - 1 - n)) > 0)
        n += (size_t)r;
    got[n] = '\0';
    close(pfd[0]);
    return got;
}

static void print_two(void)
{
    llll_print_line(NULL, "abc", 3);
    llll_print_line(NULL, "def\n", 4);
    llll_print_line(NULL, "", 0);
}

START_TEST(print_line_writes_whole_lines_adding_a_missing_newline)
{
    ck_assert_str_eq(capture_fd(1, print_two), "abc\ndef\n\n");
}
END_TEST

static bool verbose_flag;

static void run_true(void)
{
    const char *argv[] = {"sh", "-c", "exit 4", NULL};
    llll_proc_opts o = {.verbose = verbose_flag};
    run(argv, &o);
}

START_TEST(verbose_prints_a_line_at_start_and_at_end_and_nothing_otherwise)
{
    verbose_flag = false;
    ck_assert_str_eq(capture_fd(2, run_true), "");
    ck_assert_str_eq(capture_fd(1, run_true), "");
    verbose_flag = true;
    char *got = capture_fd(2, run_true);
    char *nl = strchr(got, '\n');
    ck_assert_ptr_nonnull(nl);
    ck_assert_ptr_nonnull(strstr(got, "started"));
    ck_assert_ptr_nonnull(strstr(nl, "exited with status 4\n"));
    int lines = 0;
    for (char *c = got; *c; c++)
        lines += *c == '\n';
    ck_assert_int_eq(lines, 2);
}
END_TEST

static Suite *proc_suite(void)
{
    Suite *s = suite_create("proc");
    TCase *tc = tcase_create("proc");
    tcase_set_timeout(tc, 5);
    tcase_add_test(tc, lines_arrive_in_order_each_with_its_newline);
    tcase_add_test(tc, a_partial_last_line_arrives_without_newline);
    tcase_add_test(tc, stdout_and_stderr_reach_their_own_callbacks);
    tcase_add_test(tc, lines_may_hold_nul_bytes);
    tcase_add_test(tc, collect_output_gives_on_end_every_byte);
    tcase_add_test(tc, a_line_longer_than_max_line_arrives_in_pieces);
    tcase_add_test(tc, a_long_line_straddling_many_reads_arrives_whole);
    tcase_add_test(tc, lines_written_one_byte_at_a_time_arrive_whole);
    tcase_add_test(tc, join_reports_the_exit_code);
    tcase_add_test(tc, join_reports_death_by_signal);
    tcase_add_test(tc, start_reports_enoent_for_a_missing_program_and_leaves_no_child);
    tcase_add_test(tc, start_reports_eacces_for_a_file_that_is_not_executable);
    tcase_add_test(tc, start_reports_enametoolong_for_a_name_over_name_max_whatever_the_path);
    tcase_add_test(tc, start_reports_the_error_of_a_missing_cwd);
    tcase_add_test(tc, start_rejects_an_empty_argv);
    tcase_add_test(tc, written_stdin_comes_back_through_cat);
    tcase_add_test(tc, close_stdin_from_a_callback_does_not_wait_for_a_write_in_progress);
    tcase_add_test(tc, write_to_a_child_that_exited_gives_epipe_not_a_signal);
    tcase_add_test(tc, env_overlay_sets_and_removes_variables_and_path_still_works);
    tcase_add_test(tc, program_is_looked_up_in_the_overlaid_path);
    tcase_add_test(tc, cwd_option_sets_the_child_directory);
    tcase_add_test(tc, on_end_comes_while_a_grandchild_holds_stdout_open);
    tcase_add_test(tc, join_times_out_on_a_running_child);
    tcase_add_test(tc, kill_then_join_reports_the_signal);
    tcase_add_test(tc, kill_after_reap_returns_esrch);
    tcase_add_test(tc, kill_reaches_the_whole_group_with_new_group);
    tcase_add_test(tc, stop_kills_a_child_that_ignores_sigterm);
    tcase_add_test(tc, stop_ends_an_obedient_child_with_sigterm);
    tcase_add_test(tc, free_of_a_running_child_kills_and_reaps_it);
    tcase_add_test(tc, callbacks_never_overlap_and_all_lines_come_before_on_end);
    tcase_add_test(tc, join_and_stop_from_a_callback_return_edeadlk);
    tcase_add_test(tc, many_threads_may_join_one_child);
    tcase_add_test(tc, free_waits_for_threads_blocked_in_join_to_return);
    tcase_add_test(tc, works_in_a_parent_started_with_fds_0_1_2_closed);
    tcase_add_test(tc, a_child_started_from_a_callback_has_no_signal_blocked_or_ignored_and_stops_on_sigterm);
    tcase_add_test(tc, a_child_started_from_a_mapper_item_has_no_signal_blocked_or_ignored_and_stops_on_sigterm);
    tcase_add_test(tc, join_and_stop_report_echild_when_sigchld_is_ignored);
    tcase_add_test(tc, die_with_parent_outlives_the_starting_thread_and_dies_with_the_process);
    tcase_add_test(tc, die_with_parent_with_new_group_kills_the_whole_group);
    tcase_add_test(tc, die_with_parent_children_end_normally_and_report_start_errors);
    tcase_add_test(tc, print_line_writes_whole_lines_adding_a_missing_newline);
    tcase_add_test(tc, verbose_prints_a_line_at_start_and_at_end_and_nothing_otherwise);
    suite_add_tcase(s, tc);
    TCase *in = tcase_create("proc_stdin_mode");
    tcase_set_timeout(in, 5);
    tcase_add_test(in, stdin_is_a_pipe_by_default_and_with_stdin_pipe);
    tcase_add_test(in, stdin_null_gives_eof_at_once_and_no_pipe_to_write);
    tcase_add_test(in, stdin_inherit_reads_the_parents_stdin);
    tcase_add_test(in, an_unknown_stdin_mode_is_einval);
    suite_add_tcase(s, in);
    TCase *run = tcase_create("proc_run");
    tcase_set_timeout(run, 10);
    tcase_add_test(run, run_captures_stdout_stderr_and_the_exit_status);
    tcase_add_test(run, run_delivers_input_then_eof);
    tcase_add_test(run, run_feeds_big_input_to_a_child_that_first_prints_big_output);
    tcase_add_test(run, run_is_no_error_when_the_child_does_not_read_its_input);
    tcase_add_test(run, run_times_out_with_what_was_read_and_the_child_gone);
    tcase_add_test(run, run_kills_a_child_that_ignores_sigterm_after_the_grace);
    tcase_add_test(run, run_timeout_ends_the_whole_group_with_new_group);
    tcase_add_test(run, run_times_out_while_a_child_does_not_read_its_input);
    tcase_add_test(run, run_with_timeout_0_ends_the_child_at_once);
    tcase_add_test(run, run_reports_enomem_when_out_cannot_grow_and_still_runs_the_child_to_its_end);
    tcase_add_test(run, run_from_four_threads_at_once_gives_each_its_own_output);
    tcase_add_test(run, run_with_null_buffers_drops_the_streams_or_gives_them_to_callbacks);
    tcase_add_test(run, run_reports_start_errors_and_rejects_bad_arguments);
    tcase_add_test(run, run_reuses_the_callers_buffer_without_growing_it);
    suite_add_tcase(s, run);
    /* About 1 s on an idle 2-CPU machine; spawning slows down a lot when
     * the other CPU is busy, hence the generous timeout. */
    TCase *heavy = tcase_create("proc_heavy");
    tcase_set_timeout(heavy, 30);
    tcase_add_test(heavy, children_see_only_fds_0_1_2_even_while_another_thread_spawns);
    tcase_add_test(heavy, a_thousand_spawns_leave_fds_threads_and_zombies_unchanged);
    suite_add_tcase(s, heavy);
    return s;
}

T_SUITE(proc_suite)
