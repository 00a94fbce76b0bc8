/* Pools whose workers run through a real OpenSSH server: run by
 * `make test-remote` under t/remote/with_sshd, which provides the server, an
 * ssh_config (hosts "llll-test" and "llll-noserver") and a scratch folder.
 * Each test copies the worker into a folder of its own there, so the
 * processes of one test are those whose command line names that folder. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"
#include "t_hosts.h"

/* ------------------------------------------------------------- helpers */

static const char *ssh_argv[6];

/* The launcher for host "llll-test" or "llll-noserver". */
static const char *const *ssh_to(const char *host)
{
    const char *cfg = getenv("LLLL_T_SSH_CONFIG");
    ck_assert_msg(cfg != NULL, "run under t/remote/with_sshd (make test-remote)");
    ssh_argv[0] = "ssh";
    ssh_argv[1] = "-F";
    ssh_argv[2] = cfg;
    ssh_argv[3] = "-T";
    ssh_argv[4] = host;
    ssh_argv[5] = NULL;
    return ssh_argv;
}

/* "[ssh -F CONFIG -T host] ": how a verbose pool prefixes the host's lines. */
static const char *prefix_of(const char *host)
{
    static char p[1024];
    snprintf(p, sizeof p, "[ssh -F %s -T %s] ", getenv("LLLL_T_SSH_CONFIG"), host);
    return p;
}

/* This test's folder under the scratch folder ("<scratch>/<name>"), made. */
static char dir[512];

static const char *test_dir(const char *name)
{
    const char *scratch = getenv("LLLL_T_REMOTE_DIR");
    ck_assert_ptr_nonnull(scratch);
    snprintf(dir, sizeof dir, "%s/%s", scratch, name);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    return dir;
}

/* Copies the worker to path (absolute: ssh starts in the home folder). */
static void copy_worker(const char *path)
{
    t_copy_file(t_helper("remote_worker"), path);
}

static const char *wargv[4];

/* A copy of the worker in this test's folder, run with arg (may be NULL). */
static const char *const *worker_in(const char *name, const char *arg)
{
    static char path[1024];
    snprintf(path, sizeof path, "%s/worker", test_dir(name));
    copy_worker(path);
    wargv[0] = path;
    wargv[1] = arg;
    wargv[2] = NULL;
    return wargv;
}

/* Pids of the processes whose command line mentions the folder d (workers
 * and the ssh clients that launch them), at most max. */
static int pids_naming(const char *d, pid_t *pids, int max)
{
    DIR *proc = opendir("/proc");
    ck_assert_ptr_nonnull(proc);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(proc)) && n < max) {
        pid_t pid = (pid_t)strtol(e->d_name, NULL, 10);
        if (pid <= 0 || pid == getpid())
            continue;
        char path[64], cmd[8192];
        snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t len = read(fd, cmd, sizeof cmd);
        close(fd);
        if (len > 0 && memmem(cmd, (size_t)len, d, strlen(d)))
            pids[n++] = pid;
    }
    closedir(proc);
    return n;
}

/* Waits (10 s at most, a failure then) until every process naming d has
 * ended, through pidfds: no polling of the process table. A process started
 * late (sshd still setting up a session the client already left) is waited
 * for the same way, until a look at the table finds none. */
static void assert_all_end(const char *d)
{
    pid_t pids[64];
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int n;
    while ((n = pids_naming(d, pids, 64)) > 0) {
        for (int i = 0; i < n; i++) {
            int fd = (int)syscall(SYS_pidfd_open, pids[i], 0);
            if (fd < 0) {   /* gone already; anything else would loop */
                ck_assert_msg(errno == ESRCH, "pidfd_open %d: %s", (int)pids[i], strerror(errno));
                continue;
            }
            clock_gettime(CLOCK_MONOTONIC, &t);
            int left = 10000 - (int)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
            struct pollfd pf = { .fd = fd, .events = POLLIN };
            ck_assert_msg(poll(&pf, 1, left > 0 ? left : 0) == 1, "process %d still runs", (int)pids[i]);
            close(fd);
        }
    }
}

/* "hold" calls: each worker reports "PID PPID" on the FIFO arrive, then
 * waits for a byte on the FIFO release. The test keeps both open both ways,
 * so no open blocks and every worker gets its byte. */
static int arrive_fd, release_fd;
static char arrive_path[600], release_path[600];

static void make_hold_fifos(const char *d)
{
    snprintf(arrive_path, sizeof arrive_path, "%s/arrive", d);
    snprintf(release_path, sizeof release_path, "%s/release", d);
    ck_assert_int_eq(mkfifo(arrive_path, 0600), 0);
    ck_assert_int_eq(mkfifo(release_path, 0600), 0);
    arrive_fd = open(arrive_path, O_RDWR | O_CLOEXEC);
    release_fd = open(release_path, O_RDWR | O_CLOEXEC);
    ck_assert(arrive_fd >= 0 && release_fd >= 0);
}

struct hold {
    llll_pool *p;
    pthread_t th;
    int rc;
    char result[32];
};

static void *hold_thread(void *a)
{
    struct hold *h = a;
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "hold %s %s", arrive_path, release_path);
    llll_buf r = LLLL_BUF_INIT;
    h->rc = llll_pool_call(h->p, cmd, strlen(cmd), &r);
    snprintf(h->result, sizeof h->result, "%.*s", (int)r.len, r.len ? (char *)r.data : "");
    llll_buf_free(&r);
    return NULL;
}

/* Reads the next worker's "PID PPID" line from the arrive FIFO. */
static void arrived(pid_t *pid, pid_t *ppid)
{
    char line[64];
    size_t n = 0;
    while (n < sizeof line - 1 && (n == 0 || line[n - 1] != '\n')) {
        ssize_t r = read(arrive_fd, line + n, 1);
        ck_assert_int_eq(r, 1);
        n++;
    }
    line[n] = '\0';
    long a, b;
    ck_assert_int_eq(sscanf(line, "%ld %ld", &a, &b), 2);
    *pid = (pid_t)a;
    *ppid = (pid_t)b;
}

/* The nearest ancestor of pid that runs sshd (its session process: the
 * remote shell may or may not exec the worker), or 0. */
static pid_t sshd_of(pid_t pid)
{
    for (int up = 0; up < 4 && pid > 1; up++) {
        char path[64], st[512] = "";
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (!f)
            return 0;
        size_t n = fread(st, 1, sizeof st - 1, f);
        fclose(f);
        st[n] = '\0';
        char *rp = strrchr(st, ')');
        long ppid;
        if (!rp || sscanf(rp + 1, " %*c %ld", &ppid) != 1)
            return 0;
        if (up > 0 && strncmp(strchr(st, '(') + 1, "sshd)", 5) == 0)
            return pid;
        pid = (pid_t)ppid;
    }
    return 0;
}

static int fib_arg(void *ctx, size_t i, llll_buf *arg)
{
    (void)ctx;
    char cmd[32];
    int n = snprintf(cmd, sizeof cmd, "fib %zu", i + 1);
    return llll_buf_set(arg, cmd, (size_t)n);
}

static int fib_result(void *ctx, size_t i, int rc, const void *result, size_t len)
{
    int *checked = ctx;
    char want[32];
    snprintf(want, sizeof want, "%ld", fib((int)i + 1));
    ck_assert_int_eq(rc, 0);
    ck_assert(len == strlen(want) && memcmp(result, want, len) == 0);
    (*checked)++;
    return 0;
}

/* ---------------------------------------------------------------- tests */

START_TEST(two_ssh_workers_and_one_local_serve_fib_by_calls_and_a_map)
{
    llll_host hosts[] = { { ssh_to("llll-test"), 2 }, { NULL, 1 } };
    llll_pool_opts o = { .hosts = hosts, .nhosts = 2 };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker_in("fib", NULL), 0, &o), 0);
    ck_assert_int_eq(llll_pool_size(p), 3);

    /* Three calls held at once: two workers under sshd, one our child. */
    make_hold_fifos(dir);
    struct hold h[3];
    for (int i = 0; i < 3; i++) {
        h[i] = (struct hold){ .p = p };
        ck_assert_int_eq(pthread_create(&h[i].th, NULL, hold_thread, &h[i]), 0);
    }
    int remote = 0, local = 0;
    for (int i = 0; i < 3; i++) {
        pid_t pid, ppid;
        arrived(&pid, &ppid);
        remote += sshd_of(pid) != 0;
        local += ppid == getpid();
    }
    ck_assert_int_eq(remote, 2);
    ck_assert_int_eq(local, 1);
    ck_assert_int_eq(write(release_fd, "xxx", 3), 3);
    for (int i = 0; i < 3; i++) {
        pthread_join(h[i].th, NULL);
        ck_assert_int_eq(h[i].rc, 0);
        ck_assert_str_eq(h[i].result, "released");
    }

    fib_from_three_threads(p);
    int checked = 0;
    ck_assert_int_eq(llll_pool_map(p, 30, fib_arg, fib_result, &checked, NULL), 0);
    ck_assert_int_eq(checked, 30);
    llll_pool_free(p);
}
END_TEST

START_TEST(a_worker_path_with_spaces_and_shell_characters_runs_through_ssh)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/it's a $worker; (really)", test_dir("dir with space"));
    copy_worker(path);
    const char *argv[] = { path, "a b;c", "", "*", "\"$HOME\"", NULL };
    llll_host h = { ssh_to("llll-test"), 1 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, argv, 0, &o), 0);
    char want[1400];
    snprintf(want, sizeof want, "%s|a b;c||*|\"$HOME\"", path);
    call_expect(p, "argv", want);
    llll_pool_free(p);
}
END_TEST

START_TEST(a_worker_printing_to_stdout_on_every_call_through_ssh_gets_its_results_right)
{
    llll_host h = { ssh_to("llll-test"), 1 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    o.instance.proc.on_stderr = keep_line;
    o.instance.proc.verbose = true;
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker_in("noisy", "--noisy"), 0, &o), 0);
    for (int i = 0; i < 20; i++)
        call_expect(p, "fib 20", "6765");
    call_expect(p, "stdio", "0:null 1:stderr");
    llll_pool_free(p);   /* every line is in once the readers are joined */
    for (int i = 1; i <= 21; i++) {
        char want[2200];
        snprintf(want, sizeof want, "%snoise %d\n%serr %d\n", prefix_of("llll-test"), i,
                 prefix_of("llll-test"), i);
        ck_assert_msg(strstr(kept(), want), "no '%s' in:\n%s", want, kept());
    }
    llll_buf_free(&lines);
}
END_TEST

START_TEST(a_killed_ssh_session_fails_its_call_as_a_crash_then_the_worker_is_relaunched)
{
    llll_host h = { ssh_to("llll-test"), 1 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker_in("cut", NULL), 0, &o), 0);
    make_hold_fifos(dir);
    struct hold busy = { .p = p };
    ck_assert_int_eq(pthread_create(&busy.th, NULL, hold_thread, &busy), 0);
    pid_t pid, ppid;
    arrived(&pid, &ppid);
    pid_t sshd = sshd_of(pid);
    ck_assert_int_gt(sshd, 0);
    int old = (int)syscall(SYS_pidfd_open, pid, 0);
    ck_assert_int_ge(old, 0);

    ck_assert_int_eq(kill(sshd, SIGKILL), 0);   /* the session, mid-call */
    pthread_join(busy.th, NULL);
    ck_assert_int_eq(busy.rc, -ECONNRESET);
    ck_assert_int_eq(llll_pool_size(p), 1);
    call_expect(p, "fib 20", "6765");
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_int_eq(st.crashes, 1);
    ck_assert_int_eq(st.respawns, 1);

    /* The old worker, cut off, ends once its call returns: it cannot send
     * the reply. */
    ck_assert_int_eq(write(release_fd, "x", 1), 1);
    struct pollfd pf = { .fd = old, .events = POLLIN };
    ck_assert_int_eq(poll(&pf, 1, 10000), 1);
    close(old);
    llll_pool_free(p);
    assert_all_end(dir);
}
END_TEST

START_TEST(a_host_whose_port_has_no_server_fails_start_naming_it_or_is_left_out)
{
    llll_host hosts[] = { { NULL, 1 }, { ssh_to("llll-noserver"), 2 } };
    llll_pool_opts o = { .hosts = hosts, .nhosts = 2 };
    o.instance.proc.on_stderr = keep_line;
    o.instance.proc.verbose = true;
    llll_pool *p;
    const char *const *argv = worker_in("noserver", NULL);
    ck_assert_int_eq(llll_pool_start(&p, argv, 0, &o), -ECONNRESET);
    char want[1200];
    /* ssh's own words (its lines end in "\r\n") */
    snprintf(want, sizeof want, "%sssh: connect to host 127.0.0.1 port 1: Connection refused",
             prefix_of("llll-noserver"));
    ck_assert_msg(strstr(kept(), want), "no '%s' in:\n%s", want, kept());
    snprintf(want, sizeof want, "%sllll: worker launch failed: it exited (status 255) before its hello",
             prefix_of("llll-noserver"));
    ck_assert_msg(strstr(kept(), want), "no '%s' in:\n%s", want, kept());

    o.drop_failed_hosts = true;
    ck_assert_int_eq(llll_pool_start(&p, argv, 0, &o), 0);
    ck_assert_int_eq(llll_pool_size(p), 1);
    call_expect(p, "fib 20", "6765");
    llll_pool_stats st;
    llll_pool_get_stats(p, &st);
    ck_assert_int_eq(st.hosts_dropped, 1);
    llll_pool_free(p);
    llll_buf_free(&lines);
}
END_TEST

START_TEST(a_login_banner_on_stdout_fails_start_showing_the_banner)
{
    /* The remote command line starts with a greeting, as a chatty shell
     * startup file would print. */
    const char *const *ssh = ssh_to("llll-test");
    const char *banner[] = { ssh[0], ssh[1], ssh[2], ssh[3], ssh[4], "echo Welcome to box1;", NULL };
    llll_host h = { banner, 1 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    o.instance.proc.on_stderr = keep_line;
    o.instance.proc.verbose = true;
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker_in("banner", NULL), 0, &o), -EPROTO);
    ck_assert_msg(strstr(kept(), "llll: worker launch failed: Protocol error; not a worker, it sent "
                                 "\"Welcome to box1\\n"),
                  "%s", kept());
    llll_buf_free(&lines);
    assert_all_end(dir);
}
END_TEST

START_TEST(a_host_whose_relaunches_fail_five_times_in_a_row_is_dropped)
{
    llll_host h = { ssh_to("llll-test"), 1 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    o.instance.proc.on_stderr = keep_line;   /* env's complaints */
    llll_pool *p;
    const char *const *argv = worker_in("gone", NULL);
    ck_assert_int_eq(llll_pool_start(&p, argv, 0, &o), 0);
    ck_assert_int_eq(unlink(argv[0]), 0);   /* no worker on that host any more */
    llll_buf r = LLLL_BUF_INIT;
    assert_dropped_after_five_failed_launches(p, &r);
    llll_buf_free(&r);
    llll_pool_free(p);
    ck_assert_msg(strstr(kept(), "No such file or directory"), "%s", kept());
    llll_buf_free(&lines);
}
END_TEST

START_TEST(freeing_the_pool_leaves_no_worker_process)
{
    llll_host h = { ssh_to("llll-test"), 2 };
    llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
    llll_pool *p;
    ck_assert_int_eq(llll_pool_start(&p, worker_in("free", NULL), 0, &o), 0);
    call_expect(p, "fib 20", "6765");
    pid_t pids[16];
    ck_assert_int_eq(pids_naming(dir, pids, 16), 4);   /* 2 ssh + 2 workers */
    llll_pool_free(p);
    assert_all_end(dir);
}
END_TEST

START_TEST(a_killed_master_leaves_no_worker_process)
{
    const char *const *argv = worker_in("master", NULL);
    int ready[2];
    ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
    pid_t master = fork();
    ck_assert_int_ge(master, 0);
    if (master == 0) {
        llll_host h = { ssh_to("llll-test"), 2 };
        llll_pool_opts o = { .hosts = &h, .nhosts = 1 };
        llll_pool *p;
        if (llll_pool_start(&p, argv, 0, &o) != 0 || write(ready[1], "r", 1) != 1)
            _exit(1);
        for (;;)
            pause();
    }
    close(ready[1]);
    char c;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    pid_t pids[16];
    ck_assert_int_eq(pids_naming(dir, pids, 16), 4);
    ck_assert_int_eq(kill(master, SIGKILL), 0);
    ck_assert_int_eq(waitpid(master, NULL, 0), master);
    assert_all_end(dir);
    close(ready[0]);
}
END_TEST

static Suite *remote_suite(void)
{
    Suite *s = suite_create("remote");
    TCase *tc = tcase_create("ssh");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, two_ssh_workers_and_one_local_serve_fib_by_calls_and_a_map);
    tcase_add_test(tc, a_worker_path_with_spaces_and_shell_characters_runs_through_ssh);
    tcase_add_test(tc, a_worker_printing_to_stdout_on_every_call_through_ssh_gets_its_results_right);
    tcase_add_test(tc, a_killed_ssh_session_fails_its_call_as_a_crash_then_the_worker_is_relaunched);
    tcase_add_test(tc, a_host_whose_port_has_no_server_fails_start_naming_it_or_is_left_out);
    tcase_add_test(tc, a_login_banner_on_stdout_fails_start_showing_the_banner);
    tcase_add_test(tc, a_host_whose_relaunches_fail_five_times_in_a_row_is_dropped);
    tcase_add_test(tc, freeing_the_pool_leaves_no_worker_process);
    tcase_add_test(tc, a_killed_master_leaves_no_worker_process);
    suite_add_tcase(s, tc);
    return s;
}
T_SUITE(remote_suite)
