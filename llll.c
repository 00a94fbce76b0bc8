/* llll.c - child processes (llll_proc), instances (llll_instance), errors.
 *
 * Locks, always taken in this order (a thread holding one may take those
 * below it, never those above):
 *   p->wlock     one llll_proc_write at a time on p
 *   p->lock      p's reaping, signalling, status and the stdin hand-over
 *   in->mu       threads inside an instance's send/recv (a leaf)
 *   reg_lock     the fd registry below (a leaf but for the fork it covers)
 * The print lock of llll_print_line is a leaf taken with none of these.
 * No lock is held while a callback runs.
 *
 * The fd registry: every live llll_proc is on one list (reg_head), and every
 * fd the library holds for a child lives in its llll_proc: our ends of its
 * pipes and channel, its pidfd, its spawn error pipe (both ends) and the
 * child's ends until the spawn is done. Each of those fds is created and
 * closed with reg_lock held, and every fork (llll_instance_fork, and the
 * fork strategy below) happens with reg_lock held, so the forked child's
 * copy of the list matches its fd table exactly: it closes what the list
 * names (close_inherited) and keeps only its own channel end and, until it
 * is set up, its own error pipe's write end. Programs started by exec lose
 * all of them anyway: every fd is close-on-exec.
 *
 * Spawn strategies, chosen at compile time (one function each):
 *   spawn_clone  clone(CLONE_VM | CLONE_VFORK) on a stack of ours: nothing of
 *                the parent is copied; the child runs child_exec, raw system
 *                calls only, then execs. The default on Linux.
 *   spawn_fork   fork(): llll_instance_fork always; every spawn with
 *                LLLL_SPAWN_FORK, under ThreadSanitizer (which does not
 *                follow a CLONE_VM child) and off Linux.
 * posix_spawn is not used: it cannot ignore SIGINT for an instance or set a
 * parent-death signal, and glibc's reports the exec error through memory
 * shared with the child, which is lost when an emulator (qemu-user) runs
 * CLONE_VFORK as a plain fork.
 * Either way the child writes its errno into a close-on-exec pipe before it
 * exits. A clone child also writes it, and that it ran, into the struct
 * spawn it shares with us: when the clone returns (CLONE_VFORK honoured) the
 * parent reads the outcome there and never waits on the pipe, which a fork
 * made meanwhile by another thread of the program may hold open. Otherwise
 * (a fork, or a clone an emulator such as qemu-user ran as a fork) it reads
 * the pipe until 4 bytes or EOF (the exec closed it), for SETUP_LIMIT_MS at
 * most: a child stuck longer before its exec or fn is killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llll.h"

/* ThreadSanitizer, as gcc and clang announce it. */
#if defined(__SANITIZE_THREAD__)
#define LLLL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LLLL_TSAN 1
#endif
#endif

#if defined(__linux__) && !defined(LLLL_SPAWN_FORK) && !defined(LLLL_TSAN)
#define LLLL_USE_CLONE 1
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
#endif
#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

extern char **environ;

#define LLLL_STR2(x) #x
#define LLLL_STR(x) LLLL_STR2(x)

const char *llll_version(void)
{
    return LLLL_STR(LLLL_VERSION_MAJOR) "." LLLL_STR(LLLL_VERSION_MINOR) "." LLLL_STR(LLLL_VERSION_PATCH);
}

/* glibc (2.32 on) and musl return static or thread-local strings here. */
const char *llll_strerror(int rc)
{
    if (rc == 0)
        return "success";
    if (rc == LLLL_EOF)
        return "end of stream (peer closed the channel)";
    if (rc < 0 && rc > -4096)
        return strerror(-rc);
    return "unknown llll error";
}

/* ------------------------------------------------------------ small tools */

#define READ_CHUNK (64 * 1024)
#define MAX_LINE_DEFAULT (64 * 1024)
#define CHILD_STACK (128 * 1024)
#define POLL_BACKOFF_MAX_MS 100
#define INSTANCE_GRACE_MS 200
/* How long a child may take to exec (or, forked, to reach fn) when its report
 * is read from its error pipe: one stuck longer is killed (-ETIMEDOUT). */
#define SETUP_LIMIT_MS 10000
#define CHANNEL_SOCKBUF (4 << 20)

/* The proc whose reader thread this is (NULL on every other thread): its
 * callbacks must not join it, and its signals are all blocked. */
static _Thread_local llll_proc *tl_current;

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Moves fd off 0-2 (a parent may run with stdio closed), close-on-exec. */
static int fd_high(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return nfd;
}

static int fd_pair_high(int fds[2])
{
    fds[0] = fd_high(fds[0]);
    fds[1] = fd_high(fds[1]);
    if (fds[0] >= 0 && fds[1] >= 0)
        return 0;
    int e = errno;
    close_fd(&fds[0]);
    close_fd(&fds[1]);
    return -e;
}

static int make_pipe(int fds[2], int flags)
{
    if (pipe2(fds, O_CLOEXEC | flags) < 0)
        return -errno;
    return fd_pair_high(fds);
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    return 0;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* Milliseconds left until dl (NULL: forever, -1), at least 0. */
static int ms_until(const struct timespec *dl)
{
    if (!dl)
        return -1;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ms = (long long)(dl->tv_sec - now.tv_sec) * 1000 + (dl->tv_nsec - now.tv_nsec) / 1000000;
    return ms <= 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms;
}

/*
 * Writing to a pipe whose reader is gone raises SIGPIPE. Without installing a
 * handler: block it in this thread, write, and if the write failed with EPIPE
 * take the SIGPIPE that write queued, unless one was already pending (then it
 * is someone else's, and it stays blocked by the caller's own mask anyway).
 */
struct sigpipe_guard {
    sigset_t old;
    bool masked;
    bool was_pending;
};

static void sigpipe_block(struct sigpipe_guard *g)
{
    sigset_t s, pending;
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    /* A reader thread has every signal blocked already. */
    g->masked = tl_current == NULL;
    if (g->masked)
        pthread_sigmask(SIG_BLOCK, &s, &g->old);
    g->was_pending = sigpending(&pending) == 0 && sigismember(&pending, SIGPIPE);
}

static void sigpipe_unblock(struct sigpipe_guard *g, bool got_epipe)
{
    if (got_epipe && !g->was_pending) {
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGPIPE);
        struct timespec zero = {0, 0};
        while (sigtimedwait(&s, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    if (g->masked)
        pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* Writes all of iov (modified), looping on partial writes and EINTR. */
static int writev_all(int fd, struct iovec *iov, int cnt)
{
    while (cnt > 0) {
        ssize_t n = writev(fd, iov, cnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (cnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

static int buf_append(llll_buf *b, const void *d, size_t n)
{
    if (llll_buf_reserve(b, b->len + n) < 0)
        return -ENOMEM;
    memcpy((char *)b->data + b->len, d, n);
    b->len += n;
    return 0;
}

/* ----------------------------------------------------------------- types */

struct stream {
    int fd;             /* our read end; -1 when closed or not piped */
    llll_line_fn *fn;   /* NULL: lines are dropped */
    llll_buf part;      /* a line begun in an earlier read, < max_line bytes */
    llll_buf all;       /* every byte, with collect_output */
    llll_buf *sink;     /* every byte too: llll_proc_run's caller's buffer */
};

struct llll_proc {
    pid_t pid;
    int pidfd;          /* -1: none, the reader polls with a back-off instead */
    struct stream out, err;
    char *rbuf;         /* READ_CHUNK bytes, the reader thread's */
    int code_fd;        /* instance stdin while code is written, reader's */
    char *code;
    size_t code_len, code_off;
    llll_end_fn *on_end;
    void *userdata;
    size_t max_line;
    bool collect, verbose, group;
    bool sink_short;    /* a sink could not grow: it stopped there */
    char *name;         /* argv[0], for verbose lines */
    pthread_t thread;
    int chan_fd;        /* an instance's end of its channel (the sbc's) */
    int cfd[4];         /* the child's ends, until the spawn is done */
    llll_sbc *cch;      /* a forked child's channel on cfd[3], made by the
                           parent so that the child allocates nothing */
    int ep[2];          /* the spawn's error pipe, until the spawn is done */
    bool registered;
    llll_proc *reg_prev, *reg_next;

    pthread_mutex_t wlock; /* one llll_proc_write at a time */
    int in_fd;          /* write end of the child's stdin; -1 after close
                           (changed under lock, and never while writing) */
    bool writing;       /* a write on in_fd is in progress (under lock) */
    bool close_in;      /* close_stdin came meanwhile: the writer closes */

    pthread_mutex_t lock;  /* reaping and signalling happen under it */
    pthread_cond_t cond;   /* reaped, ended or users changed */
    bool reaped, ended;
    bool lost;             /* reaped by someone else: status unknown (-1) */
    int users;             /* threads inside join/stop: free waits for them */
    int status;
    struct spawn *spawn;   /* for the reader thread to start (die_with_parent); NULL once it did */
    llll_proc *guard;      /* die_with_parent with new_group: see start_guard */
    int spawn_rc;          /* how that went */
};

struct llll_instance {
    llll_proc *proc;
    llll_sbc *ch;
    pthread_mutex_t mu;
    pthread_cond_t cv;  /* users reached 0 */
    int users;          /* threads inside instance send/recv */
};

/*
 * Every live proc, so that a forked instance can close the fds of the library
 * it inherited, and only those: our end of its own channel (else it never
 * sees EOF), other children's pipes and channels (else their peers never see
 * EOF). Creating or closing any of those fds happens under reg_lock, and so
 * does the fork, so the child's copy of the list matches its fd table.
 */
static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static llll_proc *reg_head;

static void reg_add_locked(llll_proc *p)
{
    p->reg_prev = NULL;
    p->reg_next = reg_head;
    if (reg_head)
        reg_head->reg_prev = p;
    reg_head = p;
    p->registered = true;
}

static void reg_del_locked(llll_proc *p)
{
    if (!p->registered)
        return;
    if (p->reg_prev)
        p->reg_prev->reg_next = p->reg_next;
    else
        reg_head = p->reg_next;
    if (p->reg_next)
        p->reg_next->reg_prev = p->reg_prev;
    p->registered = false;
}

/* Closes one of a proc's fds (reg_lock taken here). */
static void close_reg(int *fd)
{
    if (*fd < 0)
        return;
    pthread_mutex_lock(&reg_lock);
    close_fd(fd);
    pthread_mutex_unlock(&reg_lock);
}

enum { SIGINT_KEEP, SIGINT_IGNORE, SIGINT_DEFAULT };

/* What a child gets, all prepared before the fork (nothing allocates after). */
struct spawn {
    const char *const *argv;   /* exec these, or (NULL) run fn in a fork */
    char **envp;               /* NULL: a forked child keeps environ */
    char **paths;              /* NULL-terminated candidates for argv[0] */
    llll_main_fn *fn;
    void *arg;
    const char *cwd;
    bool new_group;
    bool die_with_parent;
    pid_t ppid;                /* this process, for die_with_parent */
    int sigint;
    int fds[4];                /* land on fds 0..3; -1: 0-2 inherited, no 3 */
    int chan;                  /* a forked child's channel end, used in place */
    llll_sbc *ch;              /* the channel on it, for fn */
    int errfd;                 /* child writes its errno here on failure */
    /* Written by a clone child that shares our memory (not by one an
     * emulator runs as a fork): it ran, and its errno (0: it exec'd). */
    volatile int shared;
    volatile int shared_err;
};

/* ------------------------------------------------------------- the child */

/*
 * From the clone or fork until the exec (or fn) the child makes raw system
 * calls only: a clone child runs on our memory while other threads may hold
 * any libc lock, and a libc wrapper or a sanitizer's interceptor could take
 * one or touch shared state. On x86-64 and AArch64 they are made inline and
 * write no errno. Elsewhere syscall() writes errno when a call fails: in a
 * clone child that is the spawning thread's, which is suspended until the
 * exec and puts its errno back (spawn); under qemu-user, which runs the
 * clone as a fork, it is the child's own. ASan would not understand a
 * process on a borrowed stack: it is left out here.
 */
#if defined(__GNUC__) || defined(__clang__)
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define NO_ASAN
#endif

#ifdef __linux__
/* C_CALL(name, up to 5 arguments): 0 or the call's errno. */
#define C_ARGS5(a, b, c, d, e, ...) (long)(a), (long)(b), (long)(c), (long)(d), (long)(e)
#define C_SYS(name, ...) c_sys(SYS_##name, C_ARGS5(__VA_ARGS__, 0, 0, 0, 0, 0))
#define C_CALL(name, ...) c_err(C_SYS(name, __VA_ARGS__))
#define C_EXIT(code) C_SYS(exit_group, code)
#if !defined(SYS_fcntl) && defined(SYS_fcntl64)
#define SYS_fcntl SYS_fcntl64
#endif
/* The kernel's struct sigaction is not libc's, but all zeros is SIG_DFL, no
 * flags, empty mask on every architecture; SIG_IGN (1) sets the handler,
 * which MIPS puts after the flags. 8 words hold any of them. */
#ifdef __mips__
#define KSA_HANDLER 1
#else
#define KSA_HANDLER 0
#endif
#if defined(__sparc__)
#define KSA_TAIL NULL, NSIG / 8
#elif defined(__alpha__)
#define KSA_TAIL NSIG / 8, NULL
#else
#define KSA_TAIL NSIG / 8
#endif
static const unsigned long ksa_default[8];
static const unsigned long ksa_ignore[8] = {[KSA_HANDLER] = 1};
static const unsigned long ksigset_empty[4];

/* System call n: its result, or -errno. */
NO_ASAN static long c_sys(long n, long a, long b, long c, long d, long e)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    __asm__ volatile("svc 0"
                     : "+r"(x0)
                     : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4)
                     : "memory", "cc");
    return x0;
#else
    long r = syscall(n, a, b, c, d, e);
    return r == -1 ? -errno : r;
#endif
}

/* 0, or the errno in the result r of c_sys. */
NO_ASAN static int c_err(long r)
{
    return r < 0 && r > -4096 ? (int)-r : 0;
}
#else
#define C_CALL(name, ...) c_ret(name(__VA_ARGS__))
#define C_EXIT(code) _exit(code)

/* 0, or the errno of the libc call that returned r. */
NO_ASAN static int c_ret(long r)
{
    return r < 0 ? errno : 0;
}
#endif

/* A copy of fd on 4 or above, close-on-exec; -errno on failure. */
NO_ASAN static int c_dup_high(int fd)
{
#ifdef __linux__
    long r = C_SYS(fcntl, fd, F_DUPFD_CLOEXEC, 4);
    return c_err(r) ? -c_err(r) : (int)r;
#else
    long r = fcntl(fd, F_DUPFD_CLOEXEC, 4);
    return r < 0 ? -errno : (int)r;
#endif
}

/* sig to SIG_DFL, or to SIG_IGN. */
NO_ASAN static int c_signal(int sig, bool ignore)
{
#ifdef __linux__
    return C_CALL(rt_sigaction, sig, ignore ? ksa_ignore : ksa_default, NULL, KSA_TAIL);
#else
    struct sigaction sa = {0};
    sa.sa_handler = ignore ? SIG_IGN : SIG_DFL;
    return c_ret(sigaction(sig, &sa, NULL));
#endif
}

NO_ASAN static int c_unblock_all(void)
{
#ifdef __linux__
    return C_CALL(rt_sigprocmask, SIG_SETMASK, ksigset_empty, NULL, NSIG / 8);
#else
    sigset_t none;
    sigemptyset(&none);
    return c_ret(sigprocmask(SIG_SETMASK, &none, NULL));
#endif
}

/* SIGKILL when the thread that made us ends; it is a library thread that
 * lives as long as this child is unreaped (see spawn_on_reader). */
NO_ASAN static int c_die_with_parent(pid_t ppid)
{
#ifdef __linux__
    int err = C_CALL(prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    /* The parent died before the prctl: nobody will send it any more. */
    if (err == 0 && C_SYS(getppid, 0) != ppid)
        C_EXIT(127);
    return err;
#else
    (void)ppid;
    return ENOSYS;
#endif
}

/* Puts s->fds[i] on fd i (0..3). A source on 0..3 other than its own target
 * could be overwritten by an earlier dup: it is moved up first, and that copy
 * is closed at the end. A dup onto itself keeps FD_CLOEXEC, so that case
 * clears it by hand. */
NO_ASAN static int child_fds(const struct spawn *s)
{
    int fds[4], err = 0;
    for (int i = 0; i < 4; i++) {
        fds[i] = s->fds[i];
        if (fds[i] >= 0 && fds[i] < 4 && fds[i] != i && (fds[i] = c_dup_high(fds[i])) < 0)
            return -fds[i];
    }
    for (int i = 0; i < 4 && !err; i++) {
        if (fds[i] == i)
            err = C_CALL(fcntl, i, F_SETFD, 0);
        else if (fds[i] >= 0)
            err = C_CALL(dup3, fds[i], i, 0);
    }
    for (int i = 0; i < 4; i++)
        if (fds[i] != s->fds[i])
            (void)C_CALL(close, fds[i]);
    return err;
}

/* Signals, group, parent death, cwd and fds 0..3 as s says: 0 or an errno.
 * All signals are blocked here (spawn blocked them before the fork). */
NO_ASAN static int child_setup(const struct spawn *s)
{
    int err = 0;
    /* A program starts with every disposition at its default, whatever this
     * process set (a handler of ours would run on the parent's memory in a
     * clone child); a forked function keeps this program's own. */
    for (int sig = 1; s->argv && sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)c_signal(sig, false);
    if (s->sigint != SIGINT_KEEP && (err = c_signal(SIGINT, s->sigint == SIGINT_IGNORE)))
        return err;
    if (s->new_group && (err = C_CALL(setpgid, 0, 0)))
        return err;
    if (s->die_with_parent && (err = c_die_with_parent(s->ppid)))
        return err;
    if (s->cwd && (err = C_CALL(chdir, s->cwd)))
        return err;
    return child_fds(s);
}

NO_ASAN static _Noreturn void child_fail(struct spawn *s, int err)
{
    s->shared_err = err;
    while (C_CALL(write, s->errfd, &err, sizeof err) == EINTR) {
    }
    for (;;)
        C_EXIT(127);
}

/* The child of a spawn: set up, empty signal mask, exec. */
NO_ASAN static _Noreturn void child_exec(struct spawn *s)
{
    int err = child_setup(s);
    if (!err)
        err = c_unblock_all();
    if (err)
        child_fail(s, err);
    bool eacces = false;
    err = ENOENT;
    for (char *const *c = s->paths; *c; c++) {
        err = C_CALL(execve, *c, (char *const *)s->argv, s->envp);
        if (err == EACCES)
            eacces = true;
        else if (err != ENOENT && err != ENOTDIR)
            break;
    }
    if (eacces && (err == ENOENT || err == ENOTDIR))
        err = EACCES;
    child_fail(s, err);
}

#ifdef LLLL_USE_CLONE
NO_ASAN static int child_clone_main(void *arg)
{
    struct spawn *s = arg;
    s->shared = 1;
    child_exec(s);
}
#endif

/* In a forked child, with reg_lock held by the fork: closes every fd of the
 * library the parent had but keep (the child's channel end) and errfd (its
 * error pipe's write end). */
static void close_inherited(int keep, int errfd)
{
    for (llll_proc *q = reg_head; q; q = q->reg_next) {
        int *fds[] = {&q->in_fd, &q->out.fd, &q->err.fd, &q->code_fd, &q->pidfd, &q->chan_fd,
                      &q->cfd[0], &q->cfd[1], &q->cfd[2], &q->cfd[3], &q->ep[0], &q->ep[1]};
        for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
            if (*fds[i] != keep && *fds[i] != errfd)
                close_fd(fds[i]);
    }
    reg_head = NULL; /* those procs are the parent's */
}

/* The child of llll_instance_fork: set up, then fn, then _exit. */
static _Noreturn void child_fork(struct spawn *s)
{
    tl_current = NULL;
    int err = child_setup(s);
    close_inherited(s->chan, s->errfd);
    pthread_mutex_unlock(&reg_lock); /* held by the parent's thread at fork */
    /* The environment was made by the parent: setenv here could wait for a
     * lock held by a thread of the parent at fork, forever. */
    if (s->envp)
        environ = s->envp;
    if (err)
        child_fail(s, err);
    /* "Set up": the parent waits for these 4 bytes, not for EOF, which a
     * fork of another program's thread could delay by holding the pipe. */
    while (write(s->errfd, &err, sizeof err) < 0 && errno == EINTR) {
    }
    close(s->errfd);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    int ret = s->fn(s->ch, s->arg);
    fflush(stdout);
    fflush(stderr);
    _exit(ret & 0xff);
}

/* ------------------------------------------------------------ the parent */

#ifdef LLLL_USE_CLONE
/* One spare child stack, so that a thread spawning in a loop maps none. */
static _Atomic(void *) spare_stack;

/* clone with vfork semantics: nothing of ours is copied, and this thread
 * resumes once the child exec'd or exited (or at once where an emulator runs
 * it as a plain fork: the error pipe serves both). -1 and errno on failure. */
static pid_t spawn_clone(struct spawn *s)
{
    void *stack = atomic_exchange(&spare_stack, NULL);
    if (!stack) {
        stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED)
            return -1;
    }
    pid_t c = clone(child_clone_main, (char *)stack + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, s);
    int e = errno;
    void *none = NULL;
    if (!atomic_compare_exchange_strong(&spare_stack, &none, stack))
        munmap(stack, CHILD_STACK);
    errno = e;
    return c;
}
#endif

/* fork, reg_lock held by the caller: the child execs s->argv or runs s->fn.
 * -1 and errno on failure. */
static pid_t spawn_fork(struct spawn *s)
{
    pid_t c = fork();
    if (c == 0 && s->argv)
        child_exec(s);
    if (c == 0)
        child_fork(s);
    return c;
}

/* The child's report on its error pipe: its errno (4 bytes), 0 (a forked
 * function set itself up) or EOF (the exec closed the pipe): 0. Waits, so
 * it is right whether the child ran before the parent resumed or not, but
 * SETUP_LIMIT_MS at most: then *hung. */
static int read_child_error(int fd, bool *hung)
{
    int err = 0;
    size_t got = 0;
    struct timespec dl;
    deadline_after(&dl, SETUP_LIMIT_MS);
    while (got < sizeof err) {
        struct pollfd f = {fd, POLLIN, 0};
        int r = poll(&f, 1, ms_until(&dl));
        if (r == 0) {
            *hung = true;
            return ETIMEDOUT;
        }
        if (r < 0) {
            if (errno != EINTR)
                return errno;
            continue;
        }
        ssize_t n = read(fd, (char *)&err + got, sizeof err - got);
        if (n > 0)
            got += (size_t)n;
        else if (n == 0)
            break;
        else if (errno != EINTR)
            return errno;
    }
    return got == sizeof err ? err : got == 0 ? 0 : EIO;
}

/* The child's ends of p's pipes, and the write end of its error pipe, once
 * the child has its own (reg_lock held). */
static void close_child_ends_locked(llll_proc *p)
{
    if (p->cch) {
        llll_sbc_close(p->cch);   /* closes cfd[3] */
        p->cch = NULL;
        p->cfd[3] = -1;
    }
    for (int i = 0; i < 4; i++)
        close_fd(&p->cfd[i]);
    close_fd(&p->ep[1]);
}

static void say_started(const llll_proc *p, const struct spawn *s);

/* Starts the child s describes for p by this build's strategy and waits
 * until it exec'd (a forked function: set itself up). 0 with p->pid (and
 * p->pidfd), or the child's errno with the child reaped. */
static int spawn(llll_proc *p, struct spawn *s)
{
    /* Every signal blocked, so no handler of ours runs in the child before it
     * reset them; cancellation off, so this thread cannot vanish while a
     * vfork child borrows its memory; errno kept, as a clone child's failed
     * calls write this thread's. */
    int saved = errno, cs, cerr;
    sigset_t all, old;
    sigfillset(&all);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    pid_t c;
#ifdef LLLL_USE_CLONE
    if (s->argv) {
        c = spawn_clone(s);
        cerr = errno;
        pthread_mutex_lock(&reg_lock);
    } else
#endif
    {
        /* Under reg_lock: the child must see the registry whole. */
        pthread_mutex_lock(&reg_lock);
        c = spawn_fork(s);
        cerr = errno;
    }
    close_child_ends_locked(p);
    pthread_mutex_unlock(&reg_lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_setcancelstate(cs, NULL);
    errno = saved;

    /* A clone child that shared our memory has exec'd or exited by now: it
     * left its errno there. Otherwise (a fork, or a clone an emulator ran as
     * a fork) its report comes on the pipe, read without a lock: a fork of
     * the library that inherited the write end closes it at once
     * (close_inherited), one of another program's at its exec or exit. */
    bool hung = false;
    int err = c < 0 ? cerr : s->shared ? s->shared_err : read_child_error(p->ep[0], &hung);
    pthread_mutex_lock(&reg_lock);
    close_fd(&p->ep[0]);
#if defined(SYS_pidfd_open) && !defined(LLLL_NO_PIDFD)
    if (c > 0 && !err) {
        p->pidfd = fd_high((int)syscall(SYS_pidfd_open, c, 0));
        if (p->pidfd < 0)
            p->pidfd = -1;
    }
#endif
    pthread_mutex_unlock(&reg_lock);
    if (c < 0)
        return -cerr;
    if (err) {
        if (hung)   /* no report within SETUP_LIMIT_MS: stuck before its exec or fn */
            kill(c, SIGKILL);
        while (waitpid(c, NULL, 0) < 0 && errno == EINTR) {
        }
        return -err;
    }
    p->pid = c;
    say_started(p, s);
    return 0;
}

/* environ with overlay laid over it ("K=V" sets K, "K" removes it), then
 * extra. The strings are not copied. */
static char **build_env(const char *const *overlay, const char *extra)
{
    size_t n = 0, m = 0;
    for (char **e = environ; e && *e; e++)
        n++;
    while (overlay && overlay[m])
        m++;
    char **env = malloc((n + m + 2) * sizeof *env);
    if (!env)
        return NULL;
    for (size_t i = 0; i < n; i++)
        env[i] = environ[i];
    for (size_t j = 0; j <= m; j++) {
        const char *o = j < m ? overlay[j] : extra;
        if (!o)
            continue;
        size_t k = strcspn(o, "="), w = 0;
        for (size_t i = 0; i < n; i++)
            if (!(strncmp(env[i], o, k) == 0 && env[i][k] == '='))
                env[w++] = env[i];
        n = w;
        if (o[k] == '=')
            env[n++] = (char *)o;
    }
    env[n] = NULL;
    return env;
}

/* Where execve will look for file, a NULL-terminated list in one block:
 * file itself when it has a '/', else file in every PATH entry of the
 * child's environment (an empty entry is the cwd). */
static char **build_paths(const char *file, char *const *envp)
{
    const char *path = NULL;
    bool slash = strchr(file, '/') != NULL;
    for (char *const *e = envp; !slash && *e && !path; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    if (!path)
        path = slash ? "" : "/usr/local/bin:/usr/bin:/bin";
    size_t flen = strlen(file);
    if (flen > NAME_MAX)
        path = "";   /* no entry would do: file alone, which fails with ENAMETOOLONG */
    size_t plen = strlen(path), segs = 1;
    for (const char *c = path; *c; c++)
        segs += *c == ':';
    /* per entry: its pointer, a '/', file and its NUL; the size must not
     * wrap around (a long PATH and a long file on a 32-bit size_t) */
    size_t per = sizeof(char *) + flen + 2;
    if (flen > SIZE_MAX / 4 || segs > (SIZE_MAX / 2 - plen) / per)
        return NULL;
    char **out = malloc(sizeof *out + plen + segs * per);
    if (!out)
        return NULL;
    char *w = (char *)(out + segs + 1);
    const char *seg = path;
    for (size_t i = 0;; i++) {
        size_t len = strcspn(seg, ":");
        out[i] = w;
        if (len) {
            memcpy(w, seg, len);
            w += len;
            *w++ = '/';
        }
        memcpy(w, file, flen + 1);
        w += flen + 1;
        if (!seg[len]) {
            out[i + 1] = NULL;
            break;
        }
        seg += len + 1;
    }
    return out;
}

/* One line to stderr, in one write, only with verbose. */
static void say(const llll_proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(const llll_proc *p, const char *fmt, ...)
{
    char line[512];
    int n = snprintf(line, sizeof line, "llll: [%ld] %s ", (long)p->pid, p->name ? p->name : "?");
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof line - 1)
        n += vsnprintf(line + n, sizeof line - 1 - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    struct iovec iov = {line, (size_t)n};
    struct sigpipe_guard g;
    sigpipe_block(&g);
    int rc = writev_all(2, &iov, 1);
    sigpipe_unblock(&g, rc == -EPIPE);
}

/* The verbose line of a start: argv's words after the first. */
static void say_started(const llll_proc *p, const struct spawn *s)
{
    if (!p->verbose)
        return;
    char args[256];
    size_t w = 0;
    args[0] = '\0';
    for (const char *const *a = s->argv ? s->argv + 1 : NULL; a && *a && w < sizeof args - 1; a++)
        w += (size_t)snprintf(args + w, sizeof args - w, " %s", *a);
    say(p, "started%s", args);
}

/*
 * die_with_parent with new_group: the parent-death signal reaches the child,
 * not the rest of its group. A guard does that: `sh` in a group of its own
 * (no terminal signal reaches it) reading a pipe whose write end only this
 * process holds (close-on-exec, and in the registry, so no fork of ours
 * keeps it). When this process dies the read sees EOF and the guard
 * SIGKILLs the group. Once the child was reaped the guard is SIGKILLed, and
 * never reads EOF. It costs a spawn, not a copy of this process, and no
 * shared memory. Started on the reader thread, before any callback runs.
 */
static int start_guard(llll_proc *p)
{
    char pgid[24];
    snprintf(pgid, sizeof pgid, "%ld", (long)p->pid);
    const char *argv[] = {"/bin/sh", "-c", "read x || kill -s KILL -- -\"$1\" 2>/dev/null",
                          "llll-guard", pgid, NULL};
    llll_proc_opts o = {.new_group = true, .cwd = "/"}; /* keeps no directory busy */
    int rc = llll_proc_start(&p->guard, argv, &o);
    if (rc < 0) {
        kill(-p->pid, SIGKILL);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    return rc;
}

/* ----------------------------------------------------- the reader thread */

static void call_line(llll_proc *p, struct stream *s, const char *d, size_t n)
{
    s->fn(p->userdata, d, n);
}

/* Keeps n bytes of an unfinished line; on ENOMEM delivers them as a piece. */
static void part_keep(llll_proc *p, struct stream *s, const char *d, size_t n)
{
    if (buf_append(&s->part, d, n) < 0) {
        if (s->part.len)
            call_line(p, s, s->part.data, s->part.len);
        s->part.len = 0;
        call_line(p, s, d, n);
    }
}

/* Splits d into lines of at most max_line bytes. Lines are passed in place;
 * only one that straddles two reads is copied. */
static void split_lines(llll_proc *p, struct stream *s, const char *d, size_t n)
{
    const size_t max = p->max_line;
    while (n > 0) {
        if (s->part.len > 0) {
            size_t room = max - s->part.len, lim = n < room ? n : room;
            const char *nl = memchr(d, '\n', lim);
            size_t take = nl ? (size_t)(nl - d) + 1 : lim;
            part_keep(p, s, d, take);
            d += take;
            n -= take;
            if ((nl || s->part.len == max) && s->part.len > 0) {
                call_line(p, s, s->part.data, s->part.len);
                s->part.len = 0;
            }
            continue;
        }
        size_t lim = n < max ? n : max;
        const char *nl = memchr(d, '\n', lim);
        size_t len;
        if (nl)
            len = (size_t)(nl - d) + 1;
        else if (n >= max)
            len = max;
        else {
            part_keep(p, s, d, n);
            return;
        }
        call_line(p, s, d, len);
        d += len;
        n -= len;
    }
}

static void consume(llll_proc *p, struct stream *s, const char *d, size_t n)
{
    if (p->collect)
        (void)buf_append(&s->all, d, n); /* on ENOMEM the collection is short */
    if (s->sink && !p->sink_short && buf_append(s->sink, d, n) < 0)
        p->sink_short = true;
    if (s->fn)
        split_lines(p, s, d, n);
}

static void stream_close(llll_proc *p, struct stream *s)
{
    if (s->fn && s->part.len > 0)
        call_line(p, s, s->part.data, s->part.len);
    s->part.len = 0;
    close_reg(&s->fd);
}

static void read_stream(llll_proc *p, struct stream *s)
{
    ssize_t n = read(s->fd, p->rbuf, READ_CHUNK);
    if (n > 0)
        consume(p, s, p->rbuf, (size_t)n);
    else if (n == 0 || (errno != EINTR && errno != EAGAIN))
        stream_close(p, s);
}

/* After the child was reaped: what is readable now, no more (a grandchild
 * may hold the pipe open and keep writing), then the stream is closed. */
static void drain(llll_proc *p, struct stream *s)
{
    if (s->fd < 0)
        return;
    int avail = 0;
    size_t left = ioctl(s->fd, FIONREAD, &avail) == 0 ? (size_t)(avail > 0 ? avail : 0) : (1u << 20);
    if (set_nonblock(s->fd) < 0)
        left = 0;
    while (left > 0) {
        ssize_t n = read(s->fd, p->rbuf, left < READ_CHUNK ? left : READ_CHUNK);
        if (n > 0) {
            consume(p, s, p->rbuf, (size_t)n);
            left -= (size_t)n;
        } else if (!(n < 0 && errno == EINTR)) {
            break;
        }
    }
    stream_close(p, s);
}

static void write_code(llll_proc *p)
{
    ssize_t n = write(p->code_fd, p->code + p->code_off, p->code_len - p->code_off);
    if (n > 0)
        p->code_off += (size_t)n;
    if (p->code_off == p->code_len || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        if (n < 0 && errno == EPIPE) {
            struct sigpipe_guard g = {.masked = false, .was_pending = false};
            sigpipe_unblock(&g, true);
        }
        close_reg(&p->code_fd);
    }
}

/* Reaps the child if it exited. Under the lock, so that kill never signals
 * a pid that was reaped (and may have been recycled). */
static bool reap(llll_proc *p)
{
    pthread_mutex_lock(&p->lock);
    int st = 0;
    pid_t r;
    do
        r = waitpid(p->pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == p->pid || (r < 0 && errno == ECHILD)) {
        /* ECHILD: someone else reaped it (SIGCHLD ignored, waitpid(-1)):
         * its status is unknown, and no status is made up. */
        p->lost = r != p->pid;
        p->status = p->lost ? -1 : st;
        p->reaped = true;
        pthread_cond_broadcast(&p->cond);
    }
    bool done = p->reaped;
    pthread_mutex_unlock(&p->lock);
    return done;
}

/* Without reaping: has the child exited? Blocks when block is set. */
static bool exited(llll_proc *p, bool block)
{
    siginfo_t si;
    si.si_pid = 0;
    int r;
    do
        r = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOWAIT | (block ? 0 : WNOHANG));
    while (r < 0 && errno == EINTR);
    return r < 0 || si.si_pid != 0;
}

static void *reader_main(void *arg)
{
    llll_proc *p = arg;
    tl_current = p;
    if (p->spawn) {
        /* die_with_parent: the child's parent thread must outlive it. */
        int rc = spawn(p, p->spawn);
        if (rc == 0 && p->group)
            rc = start_guard(p);
        pthread_mutex_lock(&p->lock);
        p->spawn = NULL;
        p->spawn_rc = rc;
        pthread_cond_broadcast(&p->cond);
        pthread_mutex_unlock(&p->lock);
        if (rc < 0)
            return NULL;
    }
    int backoff = 1;
    for (;;) {
        struct pollfd f[4];
        int n = 0, io = -1, ie = -1, ic = -1, ip = -1;
        if (p->out.fd >= 0) {
            io = n;
            f[n++] = (struct pollfd){p->out.fd, POLLIN, 0};
        }
        if (p->err.fd >= 0) {
            ie = n;
            f[n++] = (struct pollfd){p->err.fd, POLLIN, 0};
        }
        if (p->code_fd >= 0) {
            ic = n;
            f[n++] = (struct pollfd){p->code_fd, POLLOUT, 0};
        }
        if (p->pidfd >= 0) {
            ip = n;
            f[n++] = (struct pollfd){p->pidfd, POLLIN, 0};
        }
        if (n == 0) {
            /* Nothing left to read and no pidfd: just wait for the exit. */
            exited(p, true);
            if (reap(p))
                break;
            continue;
        }
        /* Without a pidfd, the exit is noticed by a back-off poll, so a
         * grandchild holding the pipes cannot delay on_end for long. */
        int r = poll(f, (nfds_t)n, ip >= 0 ? -1 : backoff);
        if (r < 0) {
            if (errno != EINTR && errno != EAGAIN) {
                exited(p, true);
                if (reap(p))
                    break;
            }
            continue;
        }
        if (r == 0 && backoff < POLL_BACKOFF_MAX_MS)
            backoff *= 2;
        if (io >= 0 && f[io].revents)
            read_stream(p, &p->out);
        if (ie >= 0 && f[ie].revents)
            read_stream(p, &p->err);
        if (ic >= 0 && f[ic].revents)
            write_code(p);
        if ((ip >= 0 ? f[ip].revents != 0 : exited(p, false)) && reap(p))
            break;
    }
    /* Killed, so it never reads EOF: the group is left alone. */
    llll_proc_free(p->guard);
    p->guard = NULL;
    drain(p, &p->out);
    drain(p, &p->err);
    close_reg(&p->code_fd);
    close_reg(&p->pidfd);
    if (p->verbose) {
        int st = p->status;
        if (p->lost)
            say(p, "was reaped elsewhere: status unknown");
        else if (WIFSIGNALED(st))
            say(p, "killed by signal %d", WTERMSIG(st));
        else
            say(p, "exited with status %d", WEXITSTATUS(st));
    }
    if (p->on_end)
        p->on_end(p->userdata, p->status, p->collect ? &p->out.all : NULL,
                  p->collect ? &p->err.all : NULL);
    llll_buf_free(&p->out.all);
    llll_buf_free(&p->err.all);
    pthread_mutex_lock(&p->lock);
    p->ended = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

/* --------------------------------------------------------- proc lifetime */

static void proc_destroy(llll_proc *p)
{
    pthread_mutex_lock(&reg_lock);
    reg_del_locked(p);
    close_fd(&p->in_fd);
    close_fd(&p->out.fd);
    close_fd(&p->err.fd);
    close_fd(&p->code_fd);
    close_fd(&p->pidfd);
    close_child_ends_locked(p);
    close_fd(&p->ep[0]);
    pthread_mutex_unlock(&reg_lock);
    llll_buf_free(&p->out.part);
    llll_buf_free(&p->err.part);
    llll_buf_free(&p->out.all);
    llll_buf_free(&p->err.all);
    free(p->rbuf);
    free(p->code);
    free(p->name);
    pthread_mutex_destroy(&p->wlock);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
}

static llll_proc *proc_new(const llll_proc_opts *o)
{
    llll_proc *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->lock, NULL);
    pthread_mutex_init(&p->wlock, NULL);
    p->pidfd = p->in_fd = p->code_fd = p->out.fd = p->err.fd = p->chan_fd = -1;
    p->cfd[0] = p->cfd[1] = p->cfd[2] = p->cfd[3] = -1;
    p->ep[0] = p->ep[1] = -1;
    p->out.fn = o->on_stdout;
    p->err.fn = o->on_stderr;
    p->on_end = o->on_end;
    p->userdata = o->userdata;
    p->collect = o->collect_output;
    p->verbose = o->verbose;
    p->group = o->new_group;
    p->max_line = o->max_line ? o->max_line : MAX_LINE_DEFAULT;
    p->rbuf = malloc(READ_CHUNK);
    if (!p->rbuf) {
        proc_destroy(p);
        return NULL;
    }
    return p;
}

struct start {
    const char *const *argv;   /* exec, or NULL: fork and run fn */
    llll_main_fn *fn;
    void *arg;
    const llll_proc_opts *opts;
    bool instance;
    const char *code;
    bool keep_sigint;
    llll_buf *sink[2];         /* stdout and stderr also go there */
    bool stdio_channel;        /* the channel on the child's fds 0 and 1 */
};

/* Creates the pipes (and channel) of p and its error pipe, reg_lock held:
 * p's ends in p, the child's in p->cfd. On failure the caller's proc_destroy closes them. */
static int make_fds(llll_proc *p, const struct start *st, const llll_proc_opts *o, llll_sbc **chan)
{
    int fd[2], rc;
    int in = st->instance ? (st->code ? LLLL_STDIN_PIPE : LLLL_STDIN_NULL) : o->stdin_mode;
    if (st->stdio_channel) {
        /* stdin and stdout are the channel (fd[1] below) */
    } else if (in == LLLL_STDIN_PIPE) {
        if ((rc = make_pipe(fd, 0)) < 0)
            return rc;
        p->cfd[0] = fd[0];
        if (!st->instance) {
            p->in_fd = fd[1];
        } else {
            p->code_fd = fd[1];
            if ((rc = set_nonblock(fd[1])) < 0)
                return rc;
        }
    } else if (in == LLLL_STDIN_NULL) {
        p->cfd[0] = fd_high(open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (p->cfd[0] < 0)
            return -errno;
    } else if (in != LLLL_STDIN_INHERIT) {
        return -EINVAL;
    }
    if (!st->stdio_channel && (!st->instance || o->on_stdout || o->collect_output)) {
        if ((rc = make_pipe(fd, 0)) < 0)
            return rc;
        p->out.fd = fd[0];
        p->cfd[1] = fd[1];
    }
    if (!st->instance || o->on_stderr || o->collect_output) {
        if ((rc = make_pipe(fd, 0)) < 0)
            return rc;
        p->err.fd = fd[0];
        p->cfd[2] = fd[1];
    }
    if (st->instance) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd) < 0)
            return -errno;
        if ((rc = fd_pair_high(fd)) < 0)
            return rc;
        int size = CHANNEL_SOCKBUF;
        for (int i = 0; i < 2; i++) {
            /* Best effort: the kernel caps these at net.core.[wr]mem_max. */
            (void)setsockopt(fd[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
            (void)setsockopt(fd[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        }
        if (st->fn && (rc = llll_sbc_open(&p->cch, fd[1], fd[1])) < 0) {
            close(fd[0]);
            return rc; /* it closed fd[1] */
        }
        p->cfd[3] = fd[1];
        if ((rc = llll_sbc_open(chan, fd[0], fd[0])) < 0)
            return rc; /* it closed fd[0] */
        p->chan_fd = fd[0];
    }
    return make_pipe(p->ep, 0);
}

/* Starts p's reader thread, with every signal blocked: the user's signals
 * go to the user's threads. */
static int create_reader(llll_proc *p)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&p->thread, NULL, reader_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return -e;
}

/* The reader of a child already started; without one, the child goes. */
static int start_reader(llll_proc *p)
{
    int rc = create_reader(p);
    if (rc < 0) {
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
        }
    }
    return rc;
}

/*
 * die_with_parent: the kernel's parent-death signal fires when the *thread*
 * that forked the child ends, so the caller's thread (which may be gone
 * long before the child) cannot start it. The child's reader thread can:
 * it lives until the child was reaped, and dies with this process. So the
 * reader is started first, spawns, reports here, and goes on reading.
 */
static int spawn_on_reader(llll_proc *p, struct spawn *s)
{
    p->spawn = s;
    int rc = create_reader(p);
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&p->lock);
    while (p->spawn)
        pthread_cond_wait(&p->cond, &p->lock);
    rc = p->spawn_rc;
    pthread_mutex_unlock(&p->lock);
    if (rc < 0)
        pthread_join(p->thread, NULL);
    return rc;
}

/* The one way a child is started: a proc (stdin a pipe, stdout and stderr
 * piped), or an instance (a channel on fd 3, stdin code or /dev/null,
 * stdout and stderr inherited unless callbacks want them). */
static int proc_create(llll_proc **out, const struct start *st, llll_sbc **chan)
{
    static const llll_proc_opts none;
    const llll_proc_opts *o = st->opts ? st->opts : &none;
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (chan)
        *chan = NULL;
    if (st->argv && (!st->argv[0]))
        return -EINVAL;
    if (st->argv && !st->argv[0][0])
        return -ENOENT;
    if (!st->argv && !st->fn)
        return -EINVAL;

    llll_proc *p = proc_new(o);
    if (!p)
        return -ENOMEM;
    p->out.sink = st->sink[0];
    p->err.sink = st->sink[1];
    struct spawn s;
    memset(&s, 0, sizeof s);
    int rc = 0;
    if (st->instance && st->code) {
        p->code_len = strlen(st->code);
        p->code = malloc(p->code_len + 1);
        if (p->code)
            memcpy(p->code, st->code, p->code_len + 1);
        else
            rc = -ENOMEM;
    }
    if (rc == 0 && o->verbose) {
        p->name = strdup(st->argv ? st->argv[0] : "(forked instance)");
        if (!p->name)
            rc = -ENOMEM;
    }
    if (rc == 0 && st->argv) {
        s.envp = build_env(o->env, !st->instance ? NULL : st->stdio_channel ? "LLLL_SBC_FD=0,1" : "LLLL_SBC_FD=3");
        s.paths = s.envp ? build_paths(st->argv[0], s.envp) : NULL;
        if (!s.paths)
            rc = -ENOMEM;
    } else {
        if (o->env && !(s.envp = build_env(o->env, NULL)))
            rc = -ENOMEM;
        /* The child flushes what fn printed; it must not print ours again. */
        fflush(stdout);
        fflush(stderr);
    }
    s.argv = st->argv;
    s.fn = st->fn;
    s.arg = st->arg;
    s.cwd = o->cwd;
    s.new_group = o->new_group;
    s.sigint = !st->instance ? SIGINT_KEEP : st->keep_sigint ? SIGINT_DEFAULT : SIGINT_IGNORE;
    s.die_with_parent = o->die_with_parent;
    s.ppid = getpid();

    pthread_mutex_lock(&reg_lock);
    reg_add_locked(p);
    if (rc == 0)
        rc = make_fds(p, st, o, chan);
    pthread_mutex_unlock(&reg_lock);
    s.fds[0] = st->stdio_channel ? p->cfd[3] : p->cfd[0];
    s.fds[1] = st->stdio_channel ? p->cfd[3] : p->cfd[1];
    s.fds[2] = p->cfd[2];
    s.fds[3] = st->argv && !st->stdio_channel ? p->cfd[3] : -1;
    s.chan = st->argv ? -1 : p->cfd[3];
    s.ch = p->cch;
    s.errfd = p->ep[1];
    if (rc == 0 && o->die_with_parent)
        rc = spawn_on_reader(p, &s);
    else if (rc == 0 && (rc = spawn(p, &s)) == 0)
        rc = start_reader(p);
    free(s.envp);
    free(s.paths);
    if (rc < 0)
        goto fail;
    *out = p;
    return 0;

fail:
    if (chan && *chan) {
        pthread_mutex_lock(&reg_lock);
        llll_sbc_close(*chan);
        p->chan_fd = -1;
        pthread_mutex_unlock(&reg_lock);
        *chan = NULL;
    }
    proc_destroy(p);
    return rc;
}

/* Waits (lock held) until *flag is set, timeout_ms as everywhere. */
static int wait_flag(llll_proc *p, const bool *flag, int timeout_ms)
{
    struct timespec dl;
    if (timeout_ms > 0)
        deadline_after(&dl, timeout_ms);
    while (!*flag) {
        if (timeout_ms == 0)
            return -ETIMEDOUT;
        if (timeout_ms < 0)
            pthread_cond_wait(&p->cond, &p->lock);
        else if (pthread_cond_timedwait(&p->cond, &p->lock, &dl) == ETIMEDOUT && !*flag)
            return -ETIMEDOUT;
    }
    return 0;
}

/* kill with p->lock held. */
static int signal_locked(llll_proc *p, int sig)
{
    if (p->reaped)
        return -ESRCH;
    if (kill(p->group ? -p->pid : p->pid, sig) < 0)
        return -errno;
    return 0;
}

/* ------------------------------------------------------------ public proc */

int llll_proc_start(llll_proc **out, const char *const argv[], const llll_proc_opts *opts)
{
    if (!argv) {
        if (out)
            *out = NULL;
        return -EINVAL;
    }
    struct start st = {.argv = argv, .opts = opts};
    return proc_create(out, &st, NULL);
}

int llll_proc_write(llll_proc *p, const void *data, size_t len)
{
    if (!p || (!data && len))
        return -EINVAL;
    pthread_mutex_lock(&p->wlock);
    pthread_mutex_lock(&p->lock);
    int fd = p->close_in ? -1 : p->in_fd;
    p->writing = fd >= 0;
    pthread_mutex_unlock(&p->lock);
    int rc = -EBADF;
    if (fd >= 0) {
        struct iovec iov = {(void *)data, len};
        struct sigpipe_guard g;
        sigpipe_block(&g);
        rc = writev_all(fd, &iov, 1);
        sigpipe_unblock(&g, rc == -EPIPE);
        pthread_mutex_lock(&p->lock);
        p->writing = false;
        if (p->close_in)
            close_reg(&p->in_fd);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&p->wlock);
    return rc;
}

/* Never waits for a write in progress (a callback calling this while another
 * thread's write waits for the child, which waits for the callback to return,
 * would deadlock): that write closes stdin when it is done. */
int llll_proc_close_stdin(llll_proc *p)
{
    if (!p)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    int rc = 0;
    if (p->in_fd < 0 && !p->close_in) {
        rc = -EBADF; /* stdin_mode gave it no pipe */
    } else {
        p->close_in = true;
        if (!p->writing)
            close_reg(&p->in_fd);
    }
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int llll_proc_kill(llll_proc *p, int sig)
{
    if (!p)
        return -EINVAL;
    pthread_mutex_lock(&p->lock);
    int rc = signal_locked(p, sig ? sig : SIGKILL);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

/* Lock held, counted in users: waits for the end, reads the status, leaves
 * (the last one to leave wakes a free waiting for join/stop to return). */
static int join_locked(llll_proc *p, int timeout_ms, int *status)
{
    int rc = wait_flag(p, &p->ended, timeout_ms);
    if (rc == 0 && status)
        *status = p->status;
    if (rc == 0 && p->lost)
        rc = -ECHILD;
    if (--p->users == 0)
        pthread_cond_broadcast(&p->cond);
    return rc;
}

int llll_proc_join(llll_proc *p, int timeout_ms, int *status)
{
    if (!p)
        return -EINVAL;
    if (tl_current == p)
        return -EDEADLK;
    pthread_mutex_lock(&p->lock);
    p->users++;
    int rc = join_locked(p, timeout_ms, status);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

int llll_proc_stop(llll_proc *p, int grace_ms, int *status)
{
    if (!p)
        return -EINVAL;
    if (tl_current == p)
        return -EDEADLK;
    /* One stretch under the lock, counted in users, so that a free from
     * another thread cannot destroy p between the kill and the join. */
    pthread_mutex_lock(&p->lock);
    p->users++;
    if (signal_locked(p, SIGTERM) == 0 && wait_flag(p, &p->reaped, grace_ms) < 0)
        (void)signal_locked(p, SIGKILL);
    int rc = join_locked(p, -1, status);
    pthread_mutex_unlock(&p->lock);
    return rc;
}

pid_t llll_proc_pid(const llll_proc *p)
{
    return p ? p->pid : -1;
}

void llll_proc_free(llll_proc *p)
{
    /* From its own callback (documented misuse) a leak beats a use after
     * free: the thread could not be joined. */
    if (!p || tl_current == p)
        return;
    pthread_mutex_lock(&p->lock);
    (void)signal_locked(p, SIGKILL);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    /* Threads woken in join/stop still have to retake p->lock and read the
     * status: they must be out before p is destroyed. Ended is set, so none
     * of them waits for long. */
    pthread_mutex_lock(&p->lock);
    while (p->users > 0)
        pthread_cond_wait(&p->cond, &p->lock);
    pthread_mutex_unlock(&p->lock);
    proc_destroy(p);
}

void llll_print_line(void *userdata, const char *line, size_t len)
{
    static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;
    (void)userdata;
    struct iovec iov[2] = {{(void *)line, len}, {(void *)"\n", 1}};
    int cnt = len > 0 && line[len - 1] == '\n' ? 1 : 2;
    struct sigpipe_guard g;
    sigpipe_block(&g);
    /* Whole lines from every thread of this process: one writev each, and
     * the lock keeps a partial write's rest from being interleaved. */
    pthread_mutex_lock(&print_lock);
    int rc = writev_all(1, iov, cnt);
    pthread_mutex_unlock(&print_lock);
    sigpipe_unblock(&g, rc == -EPIPE);
}

/* ------------------------------------------------------------ proc_run */

#define RUN_GRACE_MS 200

/* Writes n bytes at d to p's stdin, never blocking past dl, then closes it.
 * The reader thread drains stdout and stderr meanwhile, so a child that
 * writes much before it reads cannot deadlock against this. A child that
 * stops reading (EPIPE) is not an error: its status tells. */
static int run_feed(llll_proc *p, const char *d, size_t n, const struct timespec *dl)
{
    int rc = n ? set_nonblock(p->in_fd) : 0;
    struct sigpipe_guard g;
    sigpipe_block(&g);
    bool epipe = false;
    while (rc == 0 && n > 0) {
        ssize_t w = write(p->in_fd, d, n);
        if (w >= 0) {
            d += w;
            n -= (size_t)w;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            struct pollfd f = {p->in_fd, POLLOUT, 0};
            int r = poll(&f, 1, ms_until(dl));
            if (r == 0)
                rc = -ETIMEDOUT;
            else if (r < 0 && errno != EINTR)
                rc = -errno;
        } else if (errno != EINTR) {
            epipe = errno == EPIPE;
            break;
        }
    }
    sigpipe_unblock(&g, epipe);
    (void)llll_proc_close_stdin(p);
    return rc;
}

int llll_proc_run(const char *const argv[], const llll_proc_opts *opts, const void *input,
                  size_t input_len, int timeout_ms, int *status, llll_buf *out, llll_buf *err)
{
    static const llll_proc_opts none;
    llll_proc_opts o = opts ? *opts : none;
    if (out)
        out->len = 0;
    if (err)
        err->len = 0;
    if (!argv || (!input && input_len) || (input && o.stdin_mode != LLLL_STDIN_PIPE))
        return -EINVAL;
    if (!input && o.stdin_mode == LLLL_STDIN_PIPE)
        o.stdin_mode = LLLL_STDIN_NULL;
    struct timespec dl;
    if (timeout_ms >= 0)
        deadline_after(&dl, timeout_ms);
    const struct timespec *dlp = timeout_ms >= 0 ? &dl : NULL;

    struct start st = {.argv = argv, .opts = &o, .sink = {out, err}};
    llll_proc *p;
    int rc = proc_create(&p, &st, NULL);
    if (rc < 0)
        return rc;
    if (input)
        rc = run_feed(p, input, input_len, dlp);
    int stat = 0;
    if (rc == 0)
        rc = llll_proc_join(p, ms_until(dlp), &stat);
    if (rc < 0)
        (void)llll_proc_stop(p, RUN_GRACE_MS, &stat);
    else if (p->sink_short)
        rc = -ENOMEM;
    if (status)
        *status = stat;
    llll_proc_free(p);
    return rc;
}

/* -------------------------------------------------------------- instances */

/* Starts the child st describes (a program or a function) as an instance. */
static int instance_new(llll_instance **out, struct start *st, const llll_instance_opts *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!st->argv && !st->fn)
        return -EINVAL;
    st->opts = opts ? &opts->proc : NULL;
    st->instance = true;
    st->code = opts ? opts->code : NULL;
    st->keep_sigint = opts && opts->keep_sigint;
    st->stdio_channel = opts && opts->stdio_channel && st->argv;
    if (st->stdio_channel && st->code)
        return -EINVAL;
    llll_instance *in = calloc(1, sizeof *in);
    if (!in)
        return -ENOMEM;
    int rc = proc_create(&in->proc, st, &in->ch);
    if (rc < 0) {
        free(in);
        return rc;
    }
    pthread_mutex_init(&in->mu, NULL);
    pthread_cond_init(&in->cv, NULL);
    *out = in;
    return 0;
}

int llll_instance_start(llll_instance **out, const char *const argv[], const llll_instance_opts *opts)
{
    struct start st = {.argv = argv};
    return instance_new(out, &st, opts);
}

int llll_instance_fork(llll_instance **out, llll_main_fn *fn, void *arg, const llll_instance_opts *opts)
{
    struct start st = {.fn = fn, .arg = arg};
    return instance_new(out, &st, opts);
}

/* Counts a thread in or out of the channel, so free can wait for it. */
static void instance_enter(llll_instance *in)
{
    pthread_mutex_lock(&in->mu);
    in->users++;
    pthread_mutex_unlock(&in->mu);
}

static void instance_leave(llll_instance *in)
{
    pthread_mutex_lock(&in->mu);
    if (--in->users == 0)
        pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
}

int llll_instance_send(llll_instance *in, const void *data, size_t len)
{
    if (!in)
        return -EINVAL;
    instance_enter(in);
    int rc = llll_sbc_send(in->ch, data, len);
    instance_leave(in);
    return rc;
}

int llll_instance_recv(llll_instance *in, llll_buf *frame, int timeout_ms)
{
    if (!in)
        return -EINVAL;
    instance_enter(in);
    int rc = llll_sbc_recv(in->ch, frame, timeout_ms);
    instance_leave(in);
    return rc;
}

llll_sbc *llll_instance_channel(llll_instance *in)
{
    return in ? in->ch : NULL;
}

int llll_instance_kill(llll_instance *in, int sig)
{
    return in ? llll_proc_kill(in->proc, sig) : -EINVAL;
}

int llll_instance_join(llll_instance *in, int timeout_ms, int *status)
{
    return in ? llll_proc_join(in->proc, timeout_ms, status) : -EINVAL;
}

void llll_instance_free(llll_instance *in)
{
    if (!in)
        return;
    /* EOF on its channel is the child's cue to exit; give it a moment.
     * Shutdown, not just close: it wakes our threads blocked in send/recv
     * (a blocked read keeps the socket alive past a close, so the child
     * would see no EOF), and they must leave before the channel and its fd
     * number are let go. */
    llll_proc *p = in->proc;
    (void)llll_sbc_shutdown(in->ch);
    pthread_mutex_lock(&in->mu);
    while (in->users > 0)
        pthread_cond_wait(&in->cv, &in->mu);
    pthread_mutex_unlock(&in->mu);
    pthread_mutex_lock(&reg_lock);
    llll_sbc_close(in->ch);
    p->chan_fd = -1;
    pthread_mutex_unlock(&reg_lock);
    pthread_mutex_lock(&p->lock);
    (void)wait_flag(p, &p->reaped, INSTANCE_GRACE_MS);
    pthread_mutex_unlock(&p->lock);
    llll_proc_free(p);
    pthread_mutex_destroy(&in->mu);
    pthread_cond_destroy(&in->cv);
    free(in);
}
