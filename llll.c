/* llll.c - child processes (llll_proc), instances (llll_instance), errors. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
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

#if defined(__linux__) && !defined(LLLL_SPAWN_FORK)
#define LLLL_USE_CLONE 1
#define USES_CLONE true
#include <sched.h>
#include <sys/mman.h>
#else
#define USES_CLONE false
#endif
#ifdef __linux__
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
    char *name;         /* argv[0], for verbose lines */
    pthread_t thread;
    int chan_fd;        /* an instance's end of its channel (the sbc's) */
    int cfd[4];         /* the child's ends, until the spawn is done */
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
    int users;             /* threads inside join/stop: free waits for them */
    int status;
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
    char **envp;
    char *paths;               /* npaths NUL-terminated candidates for argv[0] */
    size_t npaths;
    llll_main_fn *fn;
    void *arg;
    const char *const *env;    /* overlay applied in a forked child */
    const char *cwd;
    bool new_group;
    int sigint;
    int fds[4];                /* land on fds 0..3; -1: 0-2 inherited, no 3 */
    int chan;                  /* a forked child's channel end, used in place */
    int errfd;                 /* child writes its errno here on failure */
    sigset_t mask;             /* the spawning thread's, restored in the child */
};

/* ------------------------------------------------------------- the child */

/* Async-signal-safe only from here to exec: in the clone() case the child
 * shares our memory, and another thread may hold any lock. ASan would not
 * understand a process running on a borrowed stack: leave it out here. */
#if defined(__GNUC__) || defined(__clang__)
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define NO_ASAN
#endif

NO_ASAN static int child_setup(const struct spawn *s, bool reset_handlers)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = SIG_DFL;
    if (reset_handlers) {
        /* A handler of the parent running here (signals are unblocked just
         * before exec) would run on the parent's memory. */
        for (int sig = 1; sig < NSIG; sig++) {
            struct sigaction old;
            if (sig == SIGKILL || sig == SIGSTOP || sigaction(sig, NULL, &old) < 0)
                continue;
            if (old.sa_handler != SIG_DFL && old.sa_handler != SIG_IGN)
                sigaction(sig, &sa, NULL);
        }
    }
    if (s->sigint != SIGINT_KEEP) {
        sa.sa_handler = s->sigint == SIGINT_IGNORE ? SIG_IGN : SIG_DFL;
        sigaction(SIGINT, &sa, NULL);
    }
    if (s->new_group && setpgid(0, 0) < 0)
        return errno;
    if (s->cwd && chdir(s->cwd) < 0)
        return errno;

    /* A source on 0..3 other than its own target could be overwritten by an
     * earlier dup2: move it up first. dup2 onto itself keeps FD_CLOEXEC, so
     * that case clears it by hand. */
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = s->fds[i];
        if (fds[i] >= 0 && fds[i] < 4 && fds[i] != i) {
            fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 4);
            if (fds[i] < 0)
                return errno;
        }
    }
    for (int i = 0; i < 4; i++) {
        if (fds[i] < 0)
            continue;
        if (fds[i] == i) {
            if (fcntl(i, F_SETFD, 0) < 0)
                return errno;
        } else if (dup2(fds[i], i) < 0) {
            return errno;
        }
    }
    return 0;
}

NO_ASAN static _Noreturn void child_fail(const struct spawn *s, int err)
{
    while (write(s->errfd, &err, sizeof err) < 0 && errno == EINTR) {
    }
    _exit(127);
}

NO_ASAN static _Noreturn void child_exec(struct spawn *s)
{
    int err = child_setup(s, true);
    if (err)
        child_fail(s, err);
    pthread_sigmask(SIG_SETMASK, &s->mask, NULL);
    bool eacces = false;
    const char *c = s->paths;
    err = ENOENT;
    for (size_t i = 0; i < s->npaths; i++) {
        execve(c, (char *const *)s->argv, s->envp);
        err = errno;
        if (err == EACCES)
            eacces = true;
        else if (err != ENOENT && err != ENOTDIR)
            break;
        c += strlen(c) + 1;
    }
    if (eacces && (err == ENOENT || err == ENOTDIR))
        err = EACCES;
    child_fail(s, err);
}

#ifdef LLLL_USE_CLONE
NO_ASAN static int child_clone_main(void *arg)
{
    child_exec(arg);
}
#endif

/* In a forked child, with reg_lock held by the fork: closes every fd of the
 * library the parent had, but keep (the child's channel end). */
static void close_inherited(int keep)
{
    for (llll_proc *q = reg_head; q; q = q->reg_next) {
        int *fds[] = {&q->in_fd, &q->out.fd, &q->err.fd, &q->code_fd, &q->pidfd, &q->chan_fd,
                      &q->cfd[0], &q->cfd[1], &q->cfd[2], &q->cfd[3]};
        for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
            if (*fds[i] != keep)
                close_fd(fds[i]);
    }
    reg_head = NULL; /* those procs are the parent's */
}

static _Noreturn void child_fork(struct spawn *s)
{
    if (s->argv)
        child_exec(s);
    tl_current = NULL;
    int err = child_setup(s, false);
    close_inherited(s->chan);
    pthread_mutex_unlock(&reg_lock); /* held by the parent's thread at fork */
    /* A forked child is single-threaded: environ is its own to change. */
    for (const char *const *e = s->env; !err && e && *e; e++) {
        if (strchr(*e, '=') ? putenv((char *)*e) : unsetenv(*e))
            err = errno;
    }
    llll_sbc *ch = NULL;
    if (!err) {
        int rc = llll_sbc_open(&ch, s->chan, s->chan);
        if (rc < 0)
            err = -rc;
    }
    if (err)
        child_fail(s, err);
    /* "Set up": the parent waits for these 4 bytes, not for EOF, which any
     * other fork of the parent's could delay by holding the pipe. */
    while (write(s->errfd, &err, sizeof err) < 0 && errno == EINTR) {
    }
    close(s->errfd);
    pthread_sigmask(SIG_SETMASK, &s->mask, NULL);
    int ret = s->fn(ch, s->arg);
    fflush(stdout);
    fflush(stderr);
    _exit(ret & 0xff);
}

/* ------------------------------------------------------------ the parent */

/* Starts the child described by s. Returns 0 with *pid, or the child's errno
 * (exec, chdir, ...) with the child already reaped. */
static int spawn(struct spawn *s, pid_t *pid)
{
    int ep[2];
#ifdef LLLL_USE_CLONE
    /* With vfork semantics the child's errno, if any, is in the pipe when we
     * resume: a non-blocking read, no wait for EOF. */
    int rc = make_pipe(ep, s->argv ? O_NONBLOCK : 0);
#else
    int rc = make_pipe(ep, 0);
#endif
    if (rc < 0)
        return rc;
    s->errfd = ep[1];
#ifdef LLLL_USE_CLONE
    void *stack = MAP_FAILED;
    if (s->argv) {
        stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            rc = -errno;
            close(ep[0]);
            close(ep[1]);
            return rc;
        }
    }
#endif
    /* All signals blocked, so no handler runs in the child before it reset
     * the handlers; cancellation off, so this thread cannot vanish while a
     * vfork child borrows its memory. */
    sigset_t all;
    sigfillset(&all);
    int cs;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &cs);
    pthread_sigmask(SIG_BLOCK, &all, &s->mask);
    pid_t c;
#ifdef LLLL_USE_CLONE
    if (s->argv) {
        /* vfork semantics: no copy of our page tables, and we resume only once
         * the child exec'd or exited. */
        c = clone(child_clone_main, (char *)stack + CHILD_STACK,
                  CLONE_VM | CLONE_VFORK | SIGCHLD, s);
    } else
#endif
    {
        c = fork();
        if (c == 0)
            child_fork(s);
    }
    int cerr = errno;
    pthread_sigmask(SIG_SETMASK, &s->mask, NULL);
    pthread_setcancelstate(cs, NULL);
#ifdef LLLL_USE_CLONE
    if (stack != MAP_FAILED)
        munmap(stack, CHILD_STACK);
#endif
    close(ep[1]);
    if (c < 0) {
        close(ep[0]);
        return -cerr;
    }
    int err = 0;
    size_t got = 0;
    while (got < sizeof err) {
        ssize_t n = read(ep[0], (char *)&err + got, sizeof err - got);
        if (n > 0)
            got += (size_t)n;
        else if (!(n < 0 && errno == EINTR))
            break; /* EOF (exec'd) or EAGAIN (clone: exec'd) */
    }
    close(ep[0]);
    if (got == sizeof err && err != 0) {
        while (waitpid(c, NULL, 0) < 0 && errno == EINTR) {
        }
        return -(err ? err : EIO);
    }
    *pid = c;
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

/* Where execve will look for file: itself when it has a '/', else every
 * PATH entry of the child's environment (an empty entry is the cwd). */
static char *build_paths(const char *file, char *const *envp, size_t *count)
{
    if (strchr(file, '/')) {
        *count = 1;
        return strdup(file);
    }
    const char *path = NULL;
    for (char *const *e = envp; *e && !path; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    size_t flen = strlen(file), segs = 1;
    for (const char *c = path; *c; c++)
        segs += *c == ':';
    char *out = malloc(strlen(path) + segs * (flen + 2) + 1);
    if (!out)
        return NULL;
    char *w = out;
    const char *seg = path;
    for (;;) {
        size_t len = strcspn(seg, ":");
        if (len) {
            memcpy(w, seg, len);
            w += len;
            *w++ = '/';
        }
        memcpy(w, file, flen + 1);
        w += flen + 1;
        if (!seg[len])
            break;
        seg += len + 1;
    }
    *count = segs;
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
        /* ECHILD: someone else reaped it (SIGCHLD ignored, waitpid(-1)). */
        p->status = r == p->pid ? st : 0;
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
    drain(p, &p->out);
    drain(p, &p->err);
    close_reg(&p->code_fd);
    close_reg(&p->pidfd);
    if (p->verbose) {
        int st = p->status;
        if (WIFSIGNALED(st))
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
    for (int i = 0; i < 4; i++)
        close_fd(&p->cfd[i]);
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
    bool stdio_channel;        /* the channel on the child's fds 0 and 1 */
};

/* Creates the pipes (and channel) of p, reg_lock held: p's ends in p, the
 * child's in p->cfd. On failure the caller's proc_destroy closes them. */
static int make_fds(llll_proc *p, const struct start *st, const llll_proc_opts *o, llll_sbc **chan)
{
    int fd[2], rc;
    if (st->stdio_channel) {
        /* stdin and stdout are the channel (fd[1] below) */
    } else if (!st->instance || st->code) {
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
    } else {
        p->cfd[0] = fd_high(open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (p->cfd[0] < 0)
            return -errno;
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
        p->cfd[3] = fd[1];
        if ((rc = llll_sbc_open(chan, fd[0], fd[0])) < 0)
            return rc; /* it closed fd[0] */
        p->chan_fd = fd[0];
    }
    return 0;
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
        s.paths = s.envp ? build_paths(st->argv[0], s.envp, &s.npaths) : NULL;
        if (!s.paths)
            rc = -ENOMEM;
    } else {
        s.env = o->env;
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
    s.errfd = -1;

    pthread_mutex_lock(&reg_lock);
    reg_add_locked(p);
    if (rc == 0)
        rc = make_fds(p, st, o, chan);
    s.fds[0] = st->stdio_channel ? p->cfd[3] : p->cfd[0];
    s.fds[1] = st->stdio_channel ? p->cfd[3] : p->cfd[1];
    s.fds[2] = p->cfd[2];
    s.fds[3] = st->argv && !st->stdio_channel ? p->cfd[3] : -1;
    s.chan = st->argv ? -1 : p->cfd[3];
    /* A fork happens under reg_lock: the child must see the registry whole
     * (child_fork), and in the fork+exec fallback no instance may be forked
     * meanwhile and hold the error pipe that we read to EOF. */
    bool forks = !st->argv || !USES_CLONE;
    if (rc == 0 && forks)
        rc = spawn(&s, &p->pid);
    pthread_mutex_unlock(&reg_lock);
    if (rc == 0 && !forks)
        rc = spawn(&s, &p->pid);
    free(s.envp);
    free(s.paths);

    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < 4; i++)
        close_fd(&p->cfd[i]);
#if defined(SYS_pidfd_open) && !defined(LLLL_NO_PIDFD)
    if (rc == 0) {
        p->pidfd = fd_high((int)syscall(SYS_pidfd_open, p->pid, 0));
        if (p->pidfd < 0)
            p->pidfd = -1;
    }
#endif
    pthread_mutex_unlock(&reg_lock);
    if (rc < 0)
        goto fail;

    if (p->verbose) {
        char args[256];
        size_t w = 0;
        args[0] = '\0';
        for (const char *const *a = st->argv ? st->argv + 1 : NULL; a && *a && w < sizeof args - 1; a++)
            w += (size_t)snprintf(args + w, sizeof args - w, " %s", *a);
        say(p, "started%s", args);
    }

    /* The reader thread runs with every signal blocked: the user's signals
     * go to the user's threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int e = pthread_create(&p->thread, NULL, reader_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e != 0) {
        kill(p->pid, SIGKILL);
        while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR) {
        }
        rc = -e;
        goto fail;
    }
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
    p->close_in = true;
    if (!p->writing)
        close_reg(&p->in_fd);
    pthread_mutex_unlock(&p->lock);
    return 0;
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
