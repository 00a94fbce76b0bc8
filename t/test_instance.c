/* llll_instance: children that talk to their parent in frames. */
#define _GNU_SOURCE
#include <dirent.h>
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
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"
#include "t.h"


/* Receives one frame and checks it is want. */
static void expect(llll_instance *in, const char *want)
{
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_instance_recv(in, &f, 5000), 0);
    ck_assert_uint_eq(f.len, strlen(want));
    ck_assert(f.len == 0 || memcmp(f.data, want, f.len) == 0);
    llll_buf_free(&f);
}

static void say(llll_instance *in, const char *s)
{
    ck_assert_int_eq(llll_instance_send(in, s, strlen(s)), 0);
}

static bool have_python3(void)
{
    const char *path = getenv("PATH");
    char buf[4096];
    while (path && *path) {
        size_t n = strcspn(path, ":");
        snprintf(buf, sizeof buf, "%.*s/python3", (int)n, path);
        if (access(buf, X_OK) == 0)
            return true;
        path += n + (path[n] == ':');
    }
    return false;
}

/* on_end of an instance's proc: records the status for after free. */
static void keep_status(void *u, int status, const llll_buf *out, const llll_buf *err)
{
    (void)out;
    (void)err;
    *(int *)u = status;
}

static void keep_line(void *u, const char *line, size_t len)
{
    llll_buf *b = u;
    if (b->len + len < b->cap) {
        memcpy((char *)b->data + b->len, line, len);
        b->len += len;
    }
}

/* ------------------------------------------------------ forked children */

/* Echoes frames with "!" added until EOF; the frame "exit" returns 9. */
static int echo_bang(llll_sbc *ch, void *arg)
{
    (void)arg;
    llll_buf f = LLLL_BUF_INIT;
    int rc;
    while ((rc = llll_sbc_recv(ch, &f, -1)) == 0) {
        if (f.len == 4 && memcmp(f.data, "exit", 4) == 0)
            return 9;
        char out[256];
        int n = snprintf(out, sizeof out, "%.*s!", (int)f.len, (char *)f.data);
        if (llll_sbc_send(ch, out, (size_t)n) < 0)
            return 2;
    }
    llll_buf_free(&f);
    return rc == LLLL_EOF ? 0 : 3;
}

/* Says "ready", then echoes until EOF. */
static int ready_then_echo(llll_sbc *ch, void *arg)
{
    if (llll_sbc_send(ch, "ready", 5) < 0)
        return 2;
    return echo_bang(ch, arg);
}

/* Sends its pid in decimal, then echoes until EOF. */
static int pid_then_echo(llll_sbc *ch, void *arg)
{
    char pid[24];
    int n = snprintf(pid, sizeof pid, "%d", (int)getpid());
    if (llll_sbc_send(ch, pid, (size_t)n) < 0)
        return 2;
    return echo_bang(ch, arg);
}

/* Ignores EOF: waits for signals forever. */
static int never_ends(llll_sbc *ch, void *arg)
{
    (void)arg;
    llll_buf f = LLLL_BUF_INIT;
    llll_sbc_send(ch, "ready", 5);
    while (llll_sbc_recv(ch, &f, -1) == 0) {
    }
    for (;;)
        pause();
    return 0;
}

/* Reports what its stdin holds, then prints a line to stdout. */
static int report_stdin(llll_sbc *ch, void *arg)
{
    (void)arg;
    char c;
    ssize_t n = read(0, &c, 1);
    const char *what = n == 0 ? "stdin eof" : "stdin other";
    llll_sbc_send(ch, what, strlen(what));
    printf("printed by the child\n");
    return 0;
}

/* ------------------------------------------------------------- tests */

START_TEST(instance_runs_a_c_child_that_echoes_frames)
{
    const char *argv[] = {t_helper("inst_echo"), NULL};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_start(&in, argv, NULL), 0);
    ck_assert_ptr_nonnull(llll_instance_channel(in));
    say(in, "hello");
    expect(in, "hello");
    say(in, "");
    expect(in, "");
    say(in, "quit");
    int st;
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 7);
    llll_instance_free(in);
    t_assert_no_child();
}
END_TEST

static const char py_echo[] =
    "import os, socket, struct\n"
    "s = socket.socket(fileno=int(os.environ['LLLL_SBC_FD']))\n"
    "def recvn(n):\n"
    "    b = b''\n"
    "    while len(b) < n:\n"
    "        c = s.recv(n - len(b))\n"
    "        if not c:\n"
    "            return None\n"
    "        b += c\n"
    "    return b\n"
    "while True:\n"
    "    h = recvn(4)\n"
    "    if h is None:\n"
    "        break\n"
    "    (n,) = struct.unpack('>I', h)\n"
    "    d = recvn(n) if n else b''\n"
    "    s.sendall(struct.pack('>I', n) + d[::-1])\n";

START_TEST(instance_runs_python_code_from_stdin_that_echoes_frames)
{
    if (!have_python3()) {
        printf("instance_runs_python_code_from_stdin_that_echoes_frames: skipped, python3 not in PATH\n");
        return;
    }
    const char *argv[] = {"python3", "-", NULL};
    llll_instance_opts o = {.code = py_echo};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_start(&in, argv, &o), 0);
    say(in, "abc");
    expect(in, "cba");
    say(in, "hello world");
    expect(in, "dlrow olleh");
    /* EOF on the channel ends the script. */
    ck_assert_int_eq(llll_sbc_shutdown(llll_instance_channel(in)), 0);
    int st;
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    llll_instance_free(in);
    t_assert_no_child();
}
END_TEST

START_TEST(code_reaches_the_interpreter_on_stdin_followed_by_eof)
{
    char store[64] = {0};
    llll_buf lines = {store, 0, sizeof store - 1};
    /* read hits EOF after the script: "eof" proves stdin was closed. */
    llll_instance_opts o = {.code = "echo \"fd=$LLLL_SBC_FD\"; read x || echo eof\n",
                            .proc = {.on_stdout = keep_line, .userdata = &lines}};
    const char *argv[] = {"sh", NULL};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_start(&in, argv, &o), 0);
    int st;
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_str_eq(store, "fd=3\neof\n");
    llll_instance_free(in);
}
END_TEST

/* Whether thread tid of this process sleeps in a write(2) to the pipe that is
 * process pid's stdin (/proc/self/task/TID/syscall: the number, then the
 * arguments, fd first). */
static bool writing_to_stdin_of(pid_t tid, pid_t pid)
{
    char path[64], buf[256] = "";
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool got = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    long nr;
    unsigned long fd;
    if (!got || sscanf(buf, "%ld %lx", &nr, &fd) != 2 || nr != SYS_write)
        return false;
    char mine[64], theirs[64], a[80] = "", b[80] = "";
    snprintf(mine, sizeof mine, "/proc/self/fd/%lu", fd);
    snprintf(theirs, sizeof theirs, "/proc/%d/fd/0", (int)pid);
    ssize_t na = readlink(mine, a, sizeof a - 1), nb = readlink(theirs, b, sizeof b - 1);
    return na > 0 && na == nb && memcmp(a, b, (size_t)na) == 0 && strncmp(a, "pipe:", 5) == 0;
}

/* The first child that thread tid of this process started, or 0. */
static pid_t child_of_thread(pid_t tid)
{
    char path[80];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int pid = 0;
    if (fscanf(f, "%d", &pid) != 1)
        pid = 0;
    fclose(f);
    return (pid_t)pid;
}

typedef struct {
    const char *code;
    llll_instance *in;
    int rc;
    atomic_int tid, done, child;
} code_start;

static void note_child_pid(void *u, const char *line, size_t len)
{
    (void)len;
    code_start *c = u;
    atomic_store(&c->child, atoi(line));
}

static void *start_with_code(void *arg)
{
    code_start *c = arg;
    atomic_store(&c->tid, (int)gettid());
    const char *argv[] = {"sh", "-c", "echo $$; exec sleep 30", NULL};
    llll_instance_opts o = {.code = c->code, .proc = {.on_stdout = note_child_pid, .userdata = c}};
    c->rc = llll_instance_start(&c->in, argv, &o);
    atomic_store(&c->done, 1);
    return NULL;
}

/* The child never reads its stdin: start must leave the code to the
 * library's thread. Were the starting thread found writing it to the
 * child's stdin (the child found as the starting thread's, or by the pid it
 * prints), the child is killed, so that the write ends, and the test
 * fails. */
START_TEST(start_returns_at_once_with_code_larger_than_a_pipe_the_child_never_reads)
{
    T_SKIP_UNLESS(!t_under_qemu(), "/proc/self/task/TID/syscall is the emulator's under qemu-user");
    size_t n = 4 << 20;
    char *code = malloc(n + 1);
    memset(code, '#', n);
    code[n] = '\0';
    code_start c = {.code = code, .rc = 1};
    atomic_init(&c.tid, 0);
    atomic_init(&c.done, 0);
    atomic_init(&c.child, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, start_with_code, &c), 0);
    bool blocked = false;
    while (!atomic_load(&c.done)) {
        pid_t tid = atomic_load(&c.tid), child = atomic_load(&c.child);
        if (tid && child <= 1)
            child = child_of_thread(tid);
        if (tid && child > 1 && writing_to_stdin_of(tid, child)) {
            blocked = true;
            kill(child, SIGKILL);
            break;
        }
        sched_yield();
    }
    pthread_join(t, NULL);
    ck_assert_msg(!blocked, "start blocked writing the code to the child's stdin");
    ck_assert_int_eq(c.rc, 0);
    llll_instance_free(c.in);
    free(code);
    t_assert_no_child();
}
END_TEST

START_TEST(fork_instance_round_trip_and_exit_status)
{
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, echo_bang, NULL, NULL), 0);
    say(in, "a");
    expect(in, "a!");
    say(in, "second");
    expect(in, "second!");
    say(in, "exit");
    int st;
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 9);
    ck_assert_int_eq(llll_instance_kill(in, SIGTERM), -ESRCH);
    llll_instance_free(in);
    t_assert_no_child();
}
END_TEST

/* Sends "VAR|GONE|cwd": the values of LLLL_T_FORK_VAR and LLLL_T_FORK_GONE
 * ("-" when unset) and the working directory. */
static int report_env_and_cwd(llll_sbc *ch, void *arg)
{
    (void)arg;
    char cwd[4096], out[4200];
    const char *v = getenv("LLLL_T_FORK_VAR"), *g = getenv("LLLL_T_FORK_GONE");
    if (!getcwd(cwd, sizeof cwd))
        return 2;
    int n = snprintf(out, sizeof out, "%s|%s|%s", v ? v : "-", g ? g : "-", cwd);
    return llll_sbc_send(ch, out, (size_t)n) < 0 ? 3 : 0;
}

START_TEST(fork_instance_applies_env_and_cwd)
{
    char dir[] = "/tmp/llll-t-fork-cwd-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    char *real = realpath(dir, NULL);
    ck_assert_ptr_nonnull(real);
    ck_assert_int_eq(setenv("LLLL_T_FORK_GONE", "still here", 1), 0);
    unsetenv("LLLL_T_FORK_VAR");
    const char *env[] = {"LLLL_T_FORK_VAR=set for the child", "LLLL_T_FORK_GONE", NULL};
    llll_instance_opts o = {.proc = {.env = env, .cwd = dir}};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, report_env_and_cwd, NULL, &o), 0);
    char want[4200];
    snprintf(want, sizeof want, "set for the child|-|%s", real);
    expect(in, want);
    int st;
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    llll_instance_free(in);
    /* This process's environment and directory are its own. */
    ck_assert_str_eq(getenv("LLLL_T_FORK_GONE"), "still here");
    ck_assert_ptr_null(getenv("LLLL_T_FORK_VAR"));
    char here[4096];
    ck_assert_ptr_nonnull(getcwd(here, sizeof here));
    ck_assert_str_ne(here, real);
    unsetenv("LLLL_T_FORK_GONE");
    ck_assert_int_eq(rmdir(dir), 0);
    free(real);
    t_assert_no_child();
}
END_TEST

START_TEST(fork_instance_stdin_is_empty_and_stdout_reaches_the_callback)
{
    char store[256] = {0};
    llll_buf lines = {store, 0, sizeof store};
    llll_instance_opts o = {.proc = {.on_stdout = keep_line, .userdata = &lines}};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, report_stdin, NULL, &o), 0);
    expect(in, "stdin eof");
    int st;
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert_int_eq(st, 0);
    ck_assert_str_eq(store, "printed by the child\n");
    llll_instance_free(in);
}
END_TEST

/* An atexit handler that reports (on a pipe) when it runs in another
 * process than the one that registered it. */
static pid_t atexit_owner;
static int atexit_fd = -1;

static void report_foreign_atexit(void)
{
    if (getpid() != atexit_owner && atexit_fd >= 0)
        (void)!write(atexit_fd, "A", 1);
}

static int print_child(llll_sbc *ch, void *arg)
{
    (void)ch;
    (void)arg;
    printf("child|");   /* no newline: still buffered when fn returns */
    return 4;
}

START_TEST(a_forked_instance_ends_with_exit_status_of_fn_without_atexit_or_a_second_flush)
{
    int ap[2];
    ck_assert_int_eq(pipe2(ap, O_CLOEXEC | O_NONBLOCK), 0);
    atexit_owner = getpid();
    atexit_fd = ap[1];
    ck_assert_int_eq(atexit(report_foreign_atexit), 0);

    char path[] = "/tmp/llll-inst-out-XXXXXX";
    int file = mkstemp(path);
    ck_assert_int_ge(file, 0);
    unlink(path);
    fflush(stdout);
    int saved = dup(1);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_eq(dup2(file, 1), 1);

    printf("parent|");  /* buffered in this process at the fork */
    llll_instance *in;
    int rc = llll_instance_fork(&in, print_child, NULL, NULL);
    int st = -1, jrc = -1;
    if (rc == 0)
        jrc = llll_instance_join(in, -1, &st);
    printf("end\n");
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    ck_assert_int_eq(rc, 0);
    ck_assert_int_eq(jrc, 0);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 4);
    llll_instance_free(in);

    char got[64] = {0};
    ck_assert_int_gt(pread(file, got, sizeof got - 1, 0), 0);
    close(file);
    ck_assert_str_eq(got, "parent|child|end\n");
    char c;
    errno = 0;
    ck_assert_int_eq(read(ap[0], &c, 1), -1);   /* the child ran no atexit handler */
    ck_assert_int_eq(errno, EAGAIN);
    atexit_fd = -1;
    close(ap[0]);
    close(ap[1]);
}
END_TEST

START_TEST(sigint_is_ignored_by_instances_by_default)
{
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, ready_then_echo, NULL, NULL), 0);
    expect(in, "ready");
    ck_assert_int_eq(llll_instance_kill(in, SIGINT), 0);
    say(in, "still there");
    expect(in, "still there!");
    llll_instance_free(in);

    const char *argv[] = {t_helper("inst_echo"), NULL};
    ck_assert_int_eq(llll_instance_start(&in, argv, NULL), 0);
    say(in, "ping");
    expect(in, "ping"); /* the child has set itself up */
    ck_assert_int_eq(llll_instance_kill(in, SIGINT), 0);
    say(in, "pong");
    expect(in, "pong");
    llll_instance_free(in);
    t_assert_no_child();
}
END_TEST

START_TEST(keep_sigint_leaves_sigint_deadly)
{
    llll_instance_opts o = {.keep_sigint = true};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, ready_then_echo, NULL, &o), 0);
    expect(in, "ready");
    ck_assert_int_eq(llll_instance_kill(in, SIGINT), 0);
    int st;
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGINT);
    llll_instance_free(in);

    const char *argv[] = {t_helper("inst_echo"), NULL};
    ck_assert_int_eq(llll_instance_start(&in, argv, &o), 0);
    say(in, "ping");
    expect(in, "ping");
    ck_assert_int_eq(llll_instance_kill(in, SIGINT), 0);
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert(WIFSIGNALED(st));
    ck_assert_int_eq(WTERMSIG(st), SIGINT);
    llll_instance_free(in);
}
END_TEST

START_TEST(sbc_child_fails_in_a_process_not_started_as_an_instance)
{
    const char *argv[] = {t_helper("inst_echo"), NULL};
    const char *env[] = {"LLLL_SBC_FD", NULL}; /* in case the runner has it */
    llll_proc_opts o = {.env = env};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 3); /* llll_sbc_child gave -ENOENT */
    llll_proc_free(p);
}
END_TEST

START_TEST(failed_starts_and_forks_leave_no_child_and_no_fd)
{
    int fds = t_count_dir("/proc/self/fd");
    llll_instance *in = (llll_instance *)&in;
    const char *missing[] = {"/nonexistent/llll-instance", NULL};
    ck_assert_int_eq(llll_instance_start(&in, missing, NULL), -ENOENT);
    ck_assert_ptr_null(in);
    llll_instance_opts code = {.code = "exit 0\n", .proc = {.collect_output = true}};
    ck_assert_int_eq(llll_instance_start(&in, missing, &code), -ENOENT);
    llll_instance_opts nodir = {.proc = {.cwd = "/nonexistent/llll-dir"}};
    in = (llll_instance *)&in;
    ck_assert_int_eq(llll_instance_fork(&in, echo_bang, NULL, &nodir), -ENOENT);
    ck_assert_ptr_null(in);
    const char *sh[] = {"sh", NULL};
    ck_assert_int_eq(llll_instance_start(&in, sh, &nodir), -ENOENT);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
}
END_TEST

START_TEST(free_kills_an_instance_that_ignores_eof_and_leaves_nothing)
{
    int fds = t_count_dir("/proc/self/fd");
    int status = -1;
    llll_instance_opts o = {.proc = {.on_end = keep_status, .userdata = &status}};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, never_ends, NULL, &o), 0);
    expect(in, "ready");
    llll_instance_free(in);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGKILL);

    const char *argv[] = {"sleep", "30", NULL};
    status = -1;
    ck_assert_int_eq(llll_instance_start(&in, argv, &o), 0);
    llll_instance_free(in);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    t_assert_no_child();
    ck_assert_int_eq(t_count_dir("/proc/self/fd"), fds);
}
END_TEST

/* The child sees EOF once its channel is shut down, and exits on its own;
 * free then reaps nothing that could be killed. (Whether it does so within
 * free's grace depends on the scheduler, so the shutdown is the test's.) */
START_TEST(free_lets_an_instance_exit_on_eof)
{
    int status = -1;
    llll_instance_opts o = {.proc = {.on_end = keep_status, .userdata = &status}};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, echo_bang, NULL, &o), 0);
    say(in, "x");
    expect(in, "x!");
    ck_assert_int_eq(llll_sbc_shutdown(llll_instance_channel(in)), 0);
    int st = -1;
    ck_assert_int_eq(llll_instance_join(in, -1, &st), 0);
    ck_assert(WIFEXITED(st));
    ck_assert_int_eq(WEXITSTATUS(st), 0);
    llll_instance_free(in);
    ck_assert_int_eq(status, st);
    t_assert_no_child();
}
END_TEST

typedef struct {
    llll_instance *in;
    atomic_int tid;
    int rc;
} blocked_recv;

static void *recv_until_freed(void *arg)
{
    blocked_recv *b = arg;
    llll_buf f = LLLL_BUF_INIT;
    atomic_store(&b->tid, (int)gettid());
    b->rc = llll_instance_recv(b->in, &f, -1);
    llll_buf_free(&f);
    return NULL;
}

START_TEST(free_wakes_a_thread_blocked_in_recv_and_reaps_the_child)
{
    int status = -1;
    llll_instance_opts o = {.proc = {.on_end = keep_status, .userdata = &status}};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, echo_bang, NULL, &o), 0);
    say(in, "x");
    expect(in, "x!");
    blocked_recv b = {.in = in, .rc = 1};
    atomic_init(&b.tid, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, recv_until_freed, &b), 0);
    while (atomic_load(&b.tid) == 0)
        sched_yield();
    t_wait_until_sleeping(atomic_load(&b.tid));
    /* A blocked read keeps the socket alive past a close: free shuts the
     * channel down, which wakes the receiver (and lets the child see EOF),
     * and the receiver must be out before the channel is freed. */
    llll_instance_free(in);
    pthread_join(t, NULL);
    ck_assert_int_eq(b.rc, LLLL_EOF);
    /* The child exited on EOF, or was killed once the grace ran out (its
     * turn to run may come late): either way it was reaped. */
    ck_assert_msg((WIFEXITED(status) && WEXITSTATUS(status) == 0) ||
                  (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL), "status 0x%x", (unsigned)status);
    t_assert_no_child();
}
END_TEST

START_TEST(a_forked_instance_does_not_hold_a_procs_stdin_open)
{
    const char *argv[] = {"cat", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, NULL), 0);
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, never_ends, NULL, NULL), 0);
    expect(in, "ready");
    /* cat sees EOF only if the instance did not keep our end of its stdin
     * (else join waits and the case times out). */
    llll_proc_close_stdin(p);
    int st;
    ck_assert_int_eq(llll_proc_join(p, -1, &st), 0);
    ck_assert_int_eq(st, 0);
    llll_proc_free(p);
    llll_instance_free(in);
}
END_TEST

/* Says whether the fd in arg is open in the child. */
static int fd_is_open(llll_sbc *ch, void *arg)
{
    int fd = *(int *)arg;
    const char *what = fcntl(fd, F_GETFD) >= 0 ? "open" : "closed";
    llll_sbc_send(ch, what, strlen(what));
    return 0;
}

START_TEST(a_forked_instance_keeps_the_programs_own_fds)
{
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(fd, 0);
    llll_instance *in;
    ck_assert_int_eq(llll_instance_fork(&in, fd_is_open, &fd, NULL), 0);
    expect(in, "open");
    llll_instance_free(in);
    close(fd);
}
END_TEST

START_TEST(a_started_instance_sees_only_stdio_and_its_channel_on_fd_3)
{
    for (int fd = 3; fd < 1024; fd++) { /* Check's own fds are not ours */
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0)
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    char store[64] = {0};
    llll_buf lines = {store, 0, sizeof store - 1};
    llll_instance_opts o = {.proc = {.on_stdout = keep_line, .userdata = &lines}};
    const char *argv[] = {t_helper("proc_fds"), NULL};
    llll_instance *in;
    ck_assert_int_eq(llll_instance_start(&in, argv, &o), 0);
    ck_assert_int_eq(llll_instance_join(in, -1, NULL), 0);
    ck_assert_str_eq(store, "0 1 2 3\n");
    llll_instance_free(in);
}
END_TEST

/* ------------------------------------------------ fds under concurrency */

/* The fds of a process as /proc/PID/fd shows them, with their targets. */
typedef struct {
    int n;
    int fd[128];
    char what[128][80];
} fdlist;

static bool list_fds(pid_t pid, fdlist *l)
{
    char dir[64];
    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return false;
    l->n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && l->n < 128) {
        if (e->d_name[0] == '.')
            continue;
        int fd = atoi(e->d_name);
        if (pid == getpid() && fd == dirfd(d))
            continue;
        /* valgrind keeps its own fds above the limit it shows the program */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (rlim_t)fd >= rl.rlim_cur)
            continue;
        char path[352];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        ssize_t n = readlink(path, l->what[l->n], sizeof l->what[0] - 1);
        l->what[l->n][n > 0 ? n : 0] = '\0';
        l->fd[l->n++] = fd;
    }
    closedir(d);
    return true;
}

static const char *target_of(const fdlist *l, int fd)
{
    for (int i = 0; i < l->n; i++)
        if (l->fd[i] == fd)
            return l->what[i];
    return NULL;
}

/* Our end of a's channel, a socket, is not among b's fds: b was forked
 * after a, and kept only its own channel of the library's fds. (Were it a
 * copy, a would see no EOF when our end is closed but not shut down.) */
START_TEST(a_forked_instance_does_not_hold_other_instances_channels)
{
    static fdlist before, after, in_b;
    ck_assert(list_fds(getpid(), &before));
    llll_instance *a, *b;
    ck_assert_int_eq(llll_instance_fork(&a, echo_bang, NULL, NULL), 0);
    ck_assert(list_fds(getpid(), &after));
    ck_assert_int_eq(llll_instance_fork(&b, pid_then_echo, NULL, NULL), 0);
    llll_buf f = LLLL_BUF_INIT;
    ck_assert_int_eq(llll_instance_recv(b, &f, 5000), 0);
    char pid[24] = "";
    memcpy(pid, f.data, f.len < sizeof pid - 1 ? f.len : sizeof pid - 1);
    llll_buf_free(&f);
    ck_assert(list_fds((pid_t)atoi(pid), &in_b));
    int ours = 0, sockets_in_b = 0;
    for (int i = 0; i < after.n; i++) {
        const char *was = target_of(&before, after.fd[i]);
        if (strncmp(after.what[i], "socket:", 7) != 0 || (was && strcmp(was, after.what[i]) == 0))
            continue;
        ours++;   /* a new socket: our end of a's channel */
        for (int k = 0; k < in_b.n; k++)
            ck_assert_msg(strcmp(in_b.what[k], after.what[i]) != 0, "b holds %s on fd %d", in_b.what[k], in_b.fd[k]);
    }
    for (int k = 0; k < in_b.n; k++)
        sockets_in_b += strncmp(in_b.what[k], "socket:", 7) == 0;
    ck_assert_int_eq(ours, 1);
    ck_assert_int_ge(sockets_in_b, 1);   /* its own channel */
    say(a, "y");
    expect(a, "y!");
    llll_instance_free(a);
    llll_instance_free(b);
    t_assert_no_child();
}
END_TEST

static fdlist base;                /* the test process's own fds */
static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static char fail_msg[256];

static void fail_once(const char *fmt, int a, const char *s)
{
    pthread_mutex_lock(&fail_mu);
    if (!fail_msg[0])
        snprintf(fail_msg, sizeof fail_msg, fmt, a, s);
    pthread_mutex_unlock(&fail_mu);
}

static void post_line(void *u, const char *line, size_t len)
{
    (void)line;
    (void)len;
    sem_post(u);
}

/* An exec'd child holds 0, 1, 2 and nothing else (looked at once cat
 * echoed a line: the loader's and libc's own files are closed by then). */
static void check_started(int kind)
{
    const char *argv[] = {"cat", NULL};
    sem_t echoed;
    sem_init(&echoed, 0, 0);
    llll_proc_opts o = {.on_stdout = post_line, .userdata = &echoed, .die_with_parent = kind == 2};
    llll_proc *p;
    int rc = llll_proc_start(&p, argv, &o);
    if (rc < 0) {
        fail_once("start: %d%s", rc, "");
        return;
    }
    fdlist l;
    if ((rc = llll_proc_write(p, "x\n", 2)) < 0)
        fail_once("write: %d%s", rc, "");
    else if (sem_wait(&echoed), !list_fds(llll_proc_pid(p), &l))
        fail_once("no /proc/%d/fd%s", llll_proc_pid(p), "");
    else if (l.n != 3 || !target_of(&l, 0) || !target_of(&l, 1) || !target_of(&l, 2))
        fail_once("a started child holds %d fds, one is %s", l.n, l.what[l.n - 1]);
    llll_proc_close_stdin(p);
    llll_proc_join(p, -1, NULL);
    llll_proc_free(p);
    sem_destroy(&echoed);
}

/* A forked child holds this process's own fds, its channel (the one
 * socket not ours) and nothing else of the library: no pipe, no other
 * socket, no pidfd, no /dev/null. Another thread's listing of /proc may be
 * inherited too (a directory under /proc). */
static void check_forked(int kind)
{
    llll_instance_opts o = {.proc = {.die_with_parent = kind == 3}};
    llll_instance *in;
    int rc = llll_instance_fork(&in, pid_then_echo, NULL, &o);
    if (rc < 0) {
        fail_once("fork: %d%s", rc, "");
        return;
    }
    llll_buf f = LLLL_BUF_INIT;
    fdlist l;
    if (llll_instance_recv(in, &f, 5000) != 0 || llll_buf_reserve(&f, f.len + 1) != 0)
        fail_once("no pid from %d%s", 0, "");
    else if (((char *)f.data)[f.len] = '\0', !list_fds((pid_t)atoi(f.data), &l))
        fail_once("no /proc/PID/fd (%d)%s", 0, "");
    else {
        int sockets = 0;
        for (int i = 0; i < l.n; i++) {
            const char *mine = target_of(&base, l.fd[i]);
            if (l.fd[i] < 3 || (mine && strcmp(mine, l.what[i]) == 0) ||
                strncmp(l.what[i], "/proc/", 6) == 0)
                continue;
            if (strncmp(l.what[i], "socket:", 7) == 0 && sockets++ == 0)
                continue;
            fail_once("a forked child holds fd %d: %s", l.fd[i], l.what[i]);
        }
        if (sockets != 1)
            fail_once("a forked child holds %d sockets%s", sockets, "");
    }
    llll_buf_free(&f);
    llll_instance_free(in);
}

#if defined(__SANITIZE_ADDRESS__)
#define T_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define T_ASAN 1
#endif
#endif

static void *spawn_and_fork(void *arg)
{
    int kind = (int)(intptr_t)arg % 4;
#ifdef T_ASAN
    /* AddressSanitizer's allocator (gcc 12) is not fork-safe: a child forked
     * while another thread allocates may wait forever for its lock. Under
     * ASan the 8 threads only start programs; the plain build, TSan and
     * valgrind runs check the forks. */
    kind &= ~1;
#endif
    for (int i = 0; i < 6; i++) {
        if (kind == 0 || kind == 2)
            check_started(kind);
        else
            check_forked(kind);
    }
    return NULL;
}

START_TEST(children_of_8_threads_spawning_and_forking_at_once_hold_only_their_own_fds)
{
    /* qemu-user (7.2) now and then hangs, inside qemu, a child forked while
     * other threads run, before it reaches exec (a plain pthreads program
     * whose 8 threads fork in a loop hangs too); every spawn is a fork
     * there. */
    T_SKIP_UNLESS(!t_under_qemu(), "qemu-user hangs a child forked among running threads now and then");
    for (int fd = 3; fd < 1024; fd++) { /* Check's own fds are not ours */
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0)
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
    }
    ck_assert(list_fds(getpid(), &base));
#ifdef T_ASAN
    fprintf(stderr, "children_of_8_threads...: forks left out under ASan (its allocator is not fork-safe)\n");
#endif
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, spawn_and_fork, (void *)(intptr_t)i), 0);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    ck_assert_msg(fail_msg[0] == '\0', "%s", fail_msg);
    t_assert_no_child();
}
END_TEST

START_TEST(a_forked_instance_holds_no_copy_of_a_stdin_source_that_sat_on_fd_3)
{
    /* With fd 3 free, the instance's /dev/null lands there and has to be
     * moved out of the channel's way in the child: that copy must go. */
    int saved = fcntl(3, F_DUPFD_CLOEXEC, 10);
    close(3);
    ck_assert(list_fds(getpid(), &base));
    check_forked(1);
    if (saved >= 0) {
        dup2(saved, 3);
        close(saved);
    }
    ck_assert_msg(fail_msg[0] == '\0', "%s", fail_msg);
}
END_TEST

/* Says whether any signal is blocked in fn's thread. */
static int report_mask(llll_sbc *ch, void *arg)
{
    (void)arg;
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    bool any = false;
    for (int sig = 1; sig < SIGRTMIN; sig++)
        any = any || sigismember(&cur, sig) == 1;
    const char *what = any ? "blocked" : "none blocked";
    llll_sbc_send(ch, what, strlen(what));
    return 0;
}

typedef struct {
    int rc;
    char mask[32];
} mask_report;

/* A callback runs on a reader thread, which blocks every signal. */
static void on_line_forks(void *u, const char *line, size_t len)
{
    (void)line;
    (void)len;
    mask_report *m = u;
    llll_instance *in;
    m->rc = llll_instance_fork(&in, report_mask, NULL, NULL);
    if (m->rc < 0)
        return;
    llll_buf f = LLLL_BUF_INIT;
    m->rc = llll_instance_recv(in, &f, 5000);
    if (m->rc == 0)
        snprintf(m->mask, sizeof m->mask, "%.*s", (int)f.len, (char *)f.data);
    llll_buf_free(&f);
    llll_instance_free(in);
}

START_TEST(a_forked_instance_started_from_a_callback_runs_fn_with_no_signal_blocked)
{
    mask_report m = {.rc = 1};
    llll_proc_opts o = {.on_stdout = on_line_forks, .userdata = &m};
    const char *argv[] = {"echo", "go", NULL};
    llll_proc *p;
    ck_assert_int_eq(llll_proc_start(&p, argv, &o), 0);
    ck_assert_int_eq(llll_proc_join(p, -1, NULL), 0);
    llll_proc_free(p);
    ck_assert_int_eq(m.rc, 0);
    ck_assert_str_eq(m.mask, "none blocked");
}
END_TEST

static Suite *instance_suite(void)
{
    Suite *s = suite_create("instance");
    TCase *tc = tcase_create("instance");
    tcase_set_timeout(tc, 8);
    tcase_add_test(tc, instance_runs_a_c_child_that_echoes_frames);
    tcase_add_test(tc, instance_runs_python_code_from_stdin_that_echoes_frames);
    tcase_add_test(tc, code_reaches_the_interpreter_on_stdin_followed_by_eof);
    tcase_add_test(tc, start_returns_at_once_with_code_larger_than_a_pipe_the_child_never_reads);
    tcase_add_test(tc, fork_instance_round_trip_and_exit_status);
    tcase_add_test(tc, fork_instance_stdin_is_empty_and_stdout_reaches_the_callback);
    tcase_add_test(tc, fork_instance_applies_env_and_cwd);
    tcase_add_test(tc, a_forked_instance_ends_with_exit_status_of_fn_without_atexit_or_a_second_flush);
    tcase_add_test(tc, sigint_is_ignored_by_instances_by_default);
    tcase_add_test(tc, keep_sigint_leaves_sigint_deadly);
    tcase_add_test(tc, sbc_child_fails_in_a_process_not_started_as_an_instance);
    tcase_add_test(tc, failed_starts_and_forks_leave_no_child_and_no_fd);
    tcase_add_test(tc, free_kills_an_instance_that_ignores_eof_and_leaves_nothing);
    tcase_add_test(tc, free_lets_an_instance_exit_on_eof);
    tcase_add_test(tc, free_wakes_a_thread_blocked_in_recv_and_reaps_the_child);
    tcase_add_test(tc, a_forked_instance_does_not_hold_other_instances_channels);
    tcase_add_test(tc, a_forked_instance_does_not_hold_a_procs_stdin_open);
    tcase_add_test(tc, a_forked_instance_keeps_the_programs_own_fds);
    tcase_add_test(tc, a_started_instance_sees_only_stdio_and_its_channel_on_fd_3);
    suite_add_tcase(s, tc);
    TCase *heavy = tcase_create("instance_heavy");
    tcase_set_timeout(heavy, 30);
    tcase_add_test(heavy, a_forked_instance_holds_no_copy_of_a_stdin_source_that_sat_on_fd_3);
    tcase_add_test(heavy, a_forked_instance_started_from_a_callback_runs_fn_with_no_signal_blocked);
    tcase_add_test(heavy, children_of_8_threads_spawning_and_forking_at_once_hold_only_their_own_fds);
    suite_add_tcase(s, heavy);
    return s;
}

T_SUITE(instance_suite)
