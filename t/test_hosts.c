/* Pools over hosts: llll_pool_opts.hosts with launchers run on this machine
 * (env, sh -c, a stand-in for ssh that joins its words as ssh does), and
 * channels on stdio. The same through a real sshd: t/remote/. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"
#include "t_hosts.h"

/* ------------------------------------------------------------- helpers */

static const char *worker_argv[] = { NULL, NULL, NULL };

static const char *const *worker(const char *arg)
{
    worker_argv[0] = t_helper("remote_worker");
    worker_argv[1] = arg;
    return worker_argv;
}

static const char *env_launcher[] = { "env", NULL };

/* A fresh folder for files of one test, removed by the test with rm_tmp. */
static char tmp[256];

static const char *tmp_path(const char *name)
{
    static char path[1024];
    if (!tmp[0]) {
        snprintf(tmp, sizeof tmp, "%s/llll-hosts.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        ck_assert_ptr_nonnull(mkdtemp(tmp));
    }
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    return path;
}

static void rm_tmp(void)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    ck_assert_int_eq(system(cmd), 0);
    tmp[0] = '\0';
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

/* Over the socket sock: the child pid sends the frame "frame", then exits 0. */
static void expect_frame_and_exit_0(int sock, pid_t pid)
{
    llll_sbc *ch;
    ck_assert_int_eq(llll_sbc_open(&ch, sock, sock), 0);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_sbc_recv(ch, &f, -1), 0);
    ck_assert_int_eq(f.len, 5);
    ck_assert_int_eq(memcmp(f.data, "frame", 5), 0);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    llll_buf_free(&f);
    llll_sbc_close(ch);
}

/* ---------------------------------------------------------------- tests */

START_TEST(sbc_child_moves_a_stdio_channel_off_fds_0_and_1_and_stdout_to_stderr)
{
    int sv[2], ep[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ck_assert_int_eq(pipe2(ep, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(sv[1], 0);
        dup2(sv[1], 1);
        dup2(ep[1], 2);
        setenv("LLLL_SBC_FD", "0,1", 1);
        llll_sbc *ch;
        if (llll_sbc_child(&ch) != 0)
            _exit(2);
        printf("stray\n");   /* must not reach the channel */
        fflush(stdout);
        char c;
        if (read(0, &c, 1) != 0)   /* stdin reads /dev/null now */
            _exit(3);
        _exit(llll_sbc_send(ch, "frame", 5) == 0 ? 0 : 4);
    }
    close(sv[1]);
    close(ep[1]);
    expect_frame_and_exit_0(sv[0], pid);
    char err[16] = "";
    ck_assert_int_eq(read(ep[0], err, sizeof err - 1), 6);
    ck_assert_str_eq(err, "stray\n");
    close(ep[0]);
}
END_TEST

START_TEST(sbc_child_with_stderr_closed_points_stdout_at_dev_null)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(sv[1], 0);
        dup2(sv[1], 1);
        close(2);
        setenv("LLLL_SBC_FD", "0,1", 1);
        llll_sbc *ch;
        if (llll_sbc_child(&ch) != 0)
            _exit(2);
        printf("stray\n");
        fflush(stdout);
        struct stat null, out;
        if (stat("/dev/null", &null) != 0 || fstat(1, &out) != 0 || out.st_rdev != null.st_rdev)
            _exit(3);
        _exit(llll_sbc_send(ch, "frame", 5) == 0 ? 0 : 4);
    }
    close(sv[1]);
    expect_frame_and_exit_0(sv[0], pid);
}
END_TEST

START_TEST(launched_and_local_workers_serve_one_pool_with_the_channel_on_stdio)
{
    llll_host hosts[] = { { env_launcher, 2 }, { NULL, 1 } };
    llll_pool_opts o = { .hosts = hosts, .nhosts = 2 };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 99, &o), 0);
    ck_assert_int_eq(llll_pool_size(p), 3);   /* the slots; nproc is ignored */
    fib_from_three_threads(p);
    llll_pool_free(p);

    llll_host only[] = { { env_launcher, 0 } };   /* 0 slots: 1 */
    o = (llll_pool_opts){ .hosts = only, .nhosts = 1 };
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);
    ck_assert_int_eq(llll_pool_size(p), 1);
    call_expect(p, "stdio", "0:null 1:stderr");
    llll_pool_free(p);
}
END_TEST

START_TEST(words_reach_a_launched_worker_intact_through_a_launcher_that_joins_them)
{
    /* A stand-in for ssh: runs its words joined by spaces as one shell
     * command line, as ssh does on the remote side. */
    char fake[1024];
    snprintf(fake, sizeof fake, "%s", tmp_path("ssh"));
    write_file(fake, "#!/bin/sh\nexec /bin/sh -c \"$*\"\n", 0755);
    ck_assert_int_eq(mkdir(tmp_path("dir with space"), 0755), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s", tmp_path("dir with space/it's a $worker"));
    t_copy_file(t_helper("remote_worker"), path);
    /* The path again as a word: under qemu-user, argv[0] is the real binary. */
    const char *argv[] = { path, path, "a b;c", "", "*", NULL };
    const char *launchers[][2] = { { fake, NULL }, { "env", NULL } };
    /* The launcher's environment may not reach the worker: K=V entries of
     * env go on the command line too. */
    const char *env[] = { "LLLL_T_A=x y'z", "LLLL_T_B", NULL };
    for (int i = 0; i < 2; i++) {
        llll_host h = { launchers[i], 1 };
        llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
        o.instance.proc.env = env;
        llll_pool *p;
        ck_assert_int_eq(llll_pool_start(&p, argv, 0, &o), 0);
        char want[1200];
        snprintf(want, sizeof want, "|%s|a b;c||*", path);
        llll_buf r = LLLL_BUF_INIT;
        ck_assert_int_eq(llll_pool_call(p, "argv", 4, &r), 0);
        size_t n = strlen(want);
        ck_assert_msg(r.len > n && memcmp((char *)r.data + r.len - n, want, n) == 0, "argv: got '%.*s', want '...%s'",
                      (int)r.len, (char *)r.data, want);
        llll_buf_free(&r);
        call_expect(p, "getenv LLLL_T_A", "x y'z");
        call_expect(p, "getenv LLLL_SBC_FD", "(unset)");
        llll_pool_free(p);
    }
    rm_tmp();
}
END_TEST

START_TEST(a_launched_worker_that_crashes_is_relaunched_through_its_launcher)
{
    llll_host h = { env_launcher, 1 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);
    llll_buf r = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_pool_call(p, "crash", 5, &r), -ECONNRESET);
    ck_assert_int_eq(llll_pool_size(p), 1);
    call_expect(p, "stdio", "0:null 1:stderr");
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_int_eq(st.crashes, 1);
    ck_assert_int_eq(st.respawns, 1);
    ck_assert_int_eq(st.launch_failures, 0);
    llll_buf_free(&r);
    llll_pool_free(p);
}
END_TEST

START_TEST(workers_stderr_and_stray_stdout_reach_on_stderr_prefixed_with_the_host_when_verbose)
{
    for (int verbose = 0; verbose < 2; verbose++) {
        llll_host h = { env_launcher, 1 };
        llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
        o.instance.proc.on_stderr = keep_line;
        o.instance.proc.verbose = verbose;
        llll_pool *p;
        ck_assert_int_eq(llll_pool_start(&p, worker("--noisy"), 0, &o), 0);
        for (int i = 0; i < 3; i++)
            call_expect(p, "fib 10", "55");
        llll_pool_free(p);   /* the readers are joined: every line is in */
        const char *want = verbose ? "[env] noise 1\n[env] err 1\n[env] noise 2\n[env] err 2\n"
                                     "[env] noise 3\n[env] err 3\n"
                                   : "noise 1\nerr 1\nnoise 2\nerr 2\nnoise 3\nerr 3\n";
        ck_assert_ptr_nonnull(strstr(kept(), want));
        llll_buf_free(&lines);
    }
}
END_TEST

START_TEST(without_on_stderr_a_hosts_lines_reach_this_processs_stderr_prefixed_when_verbose)
{
    int ep[2];
    ck_assert_int_eq(pipe2(ep, O_CLOEXEC), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(ep[1], 2);
        llll_host h = { env_launcher, 1 };
        llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
        o.instance.proc.verbose = true;
        llll_pool *p;
        llll_buf r = LLLL_BUF_INIT;
        if (llll_pool_start(&p, worker("--noisy"), 0, &o) != 0 || llll_pool_call(p, "fib 3", 5, &r) != 0)
            _exit(1);
        llll_pool_free(p);
        _exit(0);
    }
    close(ep[1]);
    char all[8192];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof all - 1 && (r = read(ep[0], all + n, sizeof all - 1 - n)) > 0)
        n += (size_t)r;
    all[n] = '\0';
    close(ep[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert_msg(strstr(all, "[env] noise 1\n[env] err 1\n"), "%s", all);
}
END_TEST

START_TEST(a_worker_printing_before_its_hello_is_refused_showing_what_it_printed)
{
    const char *banner[] = { "sh", "-c", "echo Welcome to box1; exec \"$@\"", "sh", NULL };
    llll_host h = { banner, 1 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    o.instance.proc.on_stderr = keep_line;
    o.instance.proc.verbose = true;
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), -EPROTO);
    ck_assert_ptr_null(p);
    ck_assert_msg(strstr(kept(), "[sh -c echo Welcome to box1; exec \"$@\" sh] llll: worker launch failed: "
                                 "Protocol error; not a worker, it sent \"Welcome to box1\\n"),
                  "%s", kept());
    llll_buf_free(&lines);
}
END_TEST

static const char *unreachable[] = { "sh", "-c", "echo cannot reach $0 >&2; exit 255", "box9", NULL };

START_TEST(start_fails_naming_a_host_whose_launch_fails)
{
    llll_host hosts[] = { { NULL, 1 }, { unreachable, 2 } };
    llll_pool_opts o = { .hosts = hosts, .nhosts = 2 };
    o.instance.proc.on_stderr = keep_line;
    o.instance.proc.verbose = true;
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), -ECONNRESET);
    ck_assert_ptr_null(p);
    const char *name = "[sh -c echo cannot reach $0 >&2; exit 255 box9] ";
    char want[512];
    snprintf(want, sizeof want, "%scannot reach box9\n", name);
    ck_assert_msg(strstr(kept(), want), "%s", kept());
    snprintf(want, sizeof want, "%sllll: worker launch failed: it exited (status 255) before its hello\n", name);
    ck_assert_msg(strstr(kept(), want), "%s", kept());
    llll_buf_free(&lines);
}
END_TEST

START_TEST(with_drop_failed_hosts_start_leaves_out_a_host_whose_launch_fails)
{
    llll_host hosts[] = { { NULL, 1 }, { unreachable, 2 } };
    llll_pool_opts o = { .hosts = hosts, .nhosts = 2, .drop_failed_hosts = true };
    o.instance.proc.on_stderr = keep_line;
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);
    ck_assert_int_eq(llll_pool_size(p), 1);
    fib_from_three_threads(p);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_int_eq(st.hosts_dropped, 1);
    ck_assert_int_eq(st.launch_failures, 1);
    ck_assert_int_eq(st.respawns, 0);
    ck_assert_int_eq(llll_pool_size(p), 1);   /* its slots went to no one */
    llll_pool_free(p);

    /* A launcher that cannot even start: its host is left out once. */
    const char *missing[] = { "/nonexistent/ssh", "box", NULL };
    llll_host two[] = { { missing, 2 }, { NULL, 1 } };
    o.hosts = two;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);
    ck_assert_int_eq(llll_pool_size(p), 1);
    llll_pool_get_stats(p, &st);
    ck_assert_int_eq(st.hosts_dropped, 1);
    ck_assert_int_eq(st.launch_failures, 1);
    call_expect(p, "fib 10", "55");
    llll_pool_free(p);

    /* Every host left out: start fails with the first error. */
    o.nhosts = 1;
    o.hosts = &hosts[1];
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), -ECONNRESET);
    llll_buf_free(&lines);
}
END_TEST

START_TEST(a_host_whose_relaunches_fail_five_times_in_a_row_is_dropped)
{
    /* Launches work while the flag file exists. */
    char flag[1024];
    snprintf(flag, sizeof flag, "%s", tmp_path("up"));
    write_file(flag, "", 0644);
    const char *flaky[] = { "sh", "-c", "[ -e \"$0\" ] && exec \"$@\"; exit 255", flag, NULL };
    llll_host h = { flaky, 1 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);
    ck_assert_int_eq(unlink(flag), 0);
    llll_buf r = LLLL_BUF_INIT;
    assert_dropped_after_five_failed_launches(p, &r);
    /* Dropped for good: the launcher works again, the host stays out. */
    write_file(flag, "", 0644);
    ck_assert_int_eq(llll_pool_call(p, "fib 5", 5, &r), -ECHILD);
    llll_buf_free(&r);
    llll_pool_free(p);
    rm_tmp();
}
END_TEST

static int fib_item(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    char cmd[32];
    int n = snprintf(cmd, sizeof cmd, "fib %zu", i % 25 + 1);
    return llll_buf_set(arg, cmd, (size_t)n);
}

static int fib_checked(void *ctx, size_t i, int rc, const void *result, size_t len)
{
    size_t *checked = ctx;
    char want[32];
    snprintf(want, sizeof want, "%ld", fib((int)(i % 25) + 1));
    ck_assert_int_eq(rc, 0);
    ck_assert(len == strlen(want) && memcmp(result, want, len) == 0);
    ck_assert_uint_eq(i, *checked);
    ++*checked;
    return 0;
}

/* On a thread of its own (no worker used last): asks its worker whether the
 * launcher below started it, and crashes it if so (the next call of a thread
 * goes to the worker it used last). */
static void *crash_if_launched(void *arg)
{
    llll_pool *p = arg;
    llll_buf r = LLLL_BUF_INIT;
    const char *cmd = "getenv LAUNCHED";
    intptr_t crashed = 0;
    if (llll_pool_call(p, cmd, strlen(cmd), &r) == 0 && r.len == 3 && memcmp(r.data, "yes", 3) == 0)
        crashed = llll_pool_call(p, "crash", 5, &r) == -ECONNRESET;
    llll_buf_free(&r);
    return (void *)crashed;
}

/* Crashes the worker started by the launcher below, from new threads, one
 * at a time, until one reaches it. */
static void crash_the_launched_worker(llll_pool *p)
{
    intptr_t crashed = 0;
    for (int t = 0; t < 4 && !crashed; t++) {
        pthread_t th;
        void *ret;
        ck_assert_int_eq(pthread_create(&th, NULL, crash_if_launched, p), 0);
        pthread_join(th, &ret);
        crashed = (intptr_t)ret;
    }
    ck_assert_msg(crashed, "no thread reached the launched worker");
}

START_TEST(a_map_goes_on_with_the_workers_left_when_a_host_is_left_out_or_cannot_relaunch)
{
    llll_pool_opts o = { .nhosts = 2, .drop_failed_hosts = true };
    o.instance.proc.on_stderr = keep_line;
    llll_pool *p;
    size_t checked = 0;

    /* A host left out at start: its slots stay dead, the map uses the rest. */
    const char *missing[] = { "/nonexistent/ssh", "box", NULL };
    llll_host two[] = { { missing, 2 }, { NULL, 1 } };
    o.hosts = two;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);
    ck_assert_int_eq(llll_pool_size(p), 1);
    ck_assert_int_eq(llll_pool_map(p, 500, fib_item, fib_checked, &checked, NULL), 0);
    ck_assert_uint_eq(checked, 500);
    ck_assert_int_eq(llll_pool_size(p), 1);
    llll_pool_free(p);

    /* A launched worker that crashed and whose relaunch failed: the map
     * runs on the local worker while that host backs off. */
    char flag[1024];
    snprintf(flag, sizeof flag, "%s", tmp_path("up"));
    write_file(flag, "", 0644);
    const char *flaky[] = { "sh", "-c", "export LAUNCHED=yes; [ -e \"$0\" ] && exec \"$@\"; exit 255", flag,
                            NULL };
    llll_host hosts[] = { { flaky, 1 }, { NULL, 1 } };
    o.hosts = hosts;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);
    ck_assert_int_eq(llll_pool_size(p), 2);
    ck_assert_int_eq(unlink(flag), 0);
    crash_the_launched_worker(p);
    ck_assert_int_eq(llll_pool_size(p), 1);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_int_eq(st.launch_failures, 1);
    checked = 0;
    ck_assert_int_eq(llll_pool_map(p, 500, fib_item, fib_checked, &checked, NULL), 0);
    ck_assert_uint_eq(checked, 500);
    ck_assert_int_eq(llll_pool_size(p), 1);
    llll_pool_free(p);
    llll_buf_free(&lines);
    rm_tmp();
}
END_TEST

/* The local worker held by a call "hold A R" until the second failed launch
 * is told on on_stderr (verbose): then a byte on the FIFO R releases it. */
static int failed_launches, release_fd = -1;
static char hold_cmd[2200];

static void release_at_second_failed_launch(void *ud, const char *line, size_t len)
{
    keep_line(ud, line, len);
    if (memmem(line, len, "worker launch failed", 20) && ++failed_launches == 2)
        ck_assert_int_eq(write(release_fd, "x", 1), 1);
}

static void *hold_call(void *arg)
{
    llll_buf r = LLLL_BUF_INIT;
    intptr_t ok = llll_pool_call(arg, hold_cmd, strlen(hold_cmd), &r) == 0 && r.len == 8 &&
                  memcmp(r.data, "released", 8) == 0;
    llll_buf_free(&r);
    return (void *)ok;
}

START_TEST(a_failed_relaunch_does_not_fail_a_call_while_other_workers_live)
{
    char flag[1024], arrive[1024], release[1024];
    snprintf(flag, sizeof flag, "%s", tmp_path("up"));
    snprintf(arrive, sizeof arrive, "%s", tmp_path("arrive"));
    snprintf(release, sizeof release, "%s", tmp_path("release"));
    ck_assert_int_eq(mkfifo(arrive, 0600), 0);
    ck_assert_int_eq(mkfifo(release, 0600), 0);
    int arrive_fd = open(arrive, O_RDWR | O_CLOEXEC);
    release_fd = open(release, O_RDWR | O_CLOEXEC);
    ck_assert(arrive_fd >= 0 && release_fd >= 0);
    snprintf(hold_cmd, sizeof hold_cmd, "hold %s %s", arrive, release);
    write_file(flag, "", 0644);
    const char *flaky[] = { "sh", "-c", "export LAUNCHED=yes; [ -e \"$0\" ] && exec \"$@\"; exit 255", flag,
                            NULL };
    llll_host hosts[] = { { flaky, 1 }, { NULL, 1 } };
    llll_pool_opts o = { .hosts = hosts, .nhosts = 2 };
    o.instance.proc.on_stderr = release_at_second_failed_launch;
    o.instance.proc.verbose = true;
    failed_launches = 0;
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);

    /* The launched worker crashes and cannot be relaunched (failure 1). */
    ck_assert_int_eq(unlink(flag), 0);
    crash_the_launched_worker(p);
    ck_assert_int_eq(failed_launches, 1);

    /* The local worker, the only idle one, is held. */
    pthread_t holder;
    ck_assert_int_eq(pthread_create(&holder, NULL, hold_call, p), 0);
    char c;
    do
        ck_assert_int_eq(read(arrive_fd, &c, 1), 1);
    while (c != '\n');

    /* This call waits out the back-off, fails the relaunch (failure 2, which
     * releases the local worker) and is served by the local worker. */
    call_expect(p, "fib 10", "55");
    void *held;
    pthread_join(holder, &held);
    ck_assert(held);
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_int_ge(st.launch_failures, 2);
    ck_assert_int_eq(st.crashes, 1);
    ck_assert_int_eq(llll_pool_size(p), 1);
    llll_pool_free(p);
    close(arrive_fd);
    close(release_fd);
    llll_buf_free(&lines);
    rm_tmp();
}
END_TEST

/* The pid of the worker that answers this thread's next call. */
static pid_t worker_pid(llll_pool *p)
{
    llll_buf r = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_pool_call(p, "pids", 4, &r), 0);
    long pid = 0;
    ck_assert_int_eq(sscanf(r.data, "%ld", &pid), 1);
    llll_buf_free(&r);
    return (pid_t)pid;
}

START_TEST(a_launcher_is_never_put_in_a_process_group_of_its_own)
{
    llll_host h = { env_launcher, 1 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    o.instance.proc.new_group = true;   /* applies to local workers only */
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);
    pid_t pid = worker_pid(p);   /* env execs the worker: the launcher's pid */
    ck_assert_int_eq(getpgid(pid), getpgid(0));
    llll_pool_free(p);

    h.launcher = NULL;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), 0);
    pid = worker_pid(p);
    ck_assert_int_eq(getpgid(pid), pid);
    llll_pool_free(p);
}
END_TEST

START_TEST(start_refuses_hosts_it_cannot_launch_on)
{
    llll_pool *p;
    llll_host neg = { NULL, -1 };
    llll_pool_opts o = { .hosts = &neg, .nhosts = 1 };
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), -EINVAL);
    llll_host h = { env_launcher, 1 };
    o = (llll_pool_opts){ .hosts = &h, .nhosts = 1 };
    o.instance.code = "print(1)\n";   /* stdin is the channel */
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), -EINVAL);
    o.instance.code = NULL;
    const char *empty[] = { NULL };
    h.launcher = empty;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), -EINVAL);
    /* Over INT_MAX slots in all, also where the sum would wrap around (on a
     * 32-bit long: INT_MAX + INT_MAX + 4 is 2) */
    llll_host many[3] = { { NULL, INT_MAX }, { NULL, INT_MAX }, { NULL, 4 } };
    o = (llll_pool_opts){ .hosts = many, .nhosts = 3 };
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), -EINVAL);
    o.nhosts = 2;
    many[1].slots = 1;
    ck_assert_int_eq(llll_pool_start(&p, worker(NULL), 0, &o), -EINVAL);
}
END_TEST

static Suite *hosts_suite(void)
{
    Suite *s = suite_create("hosts");
    TCase *tc = tcase_create("launchers");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, sbc_child_moves_a_stdio_channel_off_fds_0_and_1_and_stdout_to_stderr);
    tcase_add_test(tc, sbc_child_with_stderr_closed_points_stdout_at_dev_null);
    tcase_add_test(tc, launched_and_local_workers_serve_one_pool_with_the_channel_on_stdio);
    tcase_add_test(tc, words_reach_a_launched_worker_intact_through_a_launcher_that_joins_them);
    tcase_add_test(tc, a_launched_worker_that_crashes_is_relaunched_through_its_launcher);
    tcase_add_test(tc, workers_stderr_and_stray_stdout_reach_on_stderr_prefixed_with_the_host_when_verbose);
    tcase_add_test(tc, without_on_stderr_a_hosts_lines_reach_this_processs_stderr_prefixed_when_verbose);
    tcase_add_test(tc, a_worker_printing_before_its_hello_is_refused_showing_what_it_printed);
    tcase_add_test(tc, start_fails_naming_a_host_whose_launch_fails);
    tcase_add_test(tc, with_drop_failed_hosts_start_leaves_out_a_host_whose_launch_fails);
    tcase_add_test(tc, a_host_whose_relaunches_fail_five_times_in_a_row_is_dropped);
    tcase_add_test(tc, start_refuses_hosts_it_cannot_launch_on);
    tcase_add_test(tc, a_map_goes_on_with_the_workers_left_when_a_host_is_left_out_or_cannot_relaunch);
    tcase_add_test(tc, a_failed_relaunch_does_not_fail_a_call_while_other_workers_live);
    tcase_add_test(tc, a_launcher_is_never_put_in_a_process_group_of_its_own);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(hosts_suite)
