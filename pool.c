/* pool.c - pools of worker processes (llll_pool) and the worker loop (llll_serve).
 *
 * Protocol, over each worker's instance channel (frames of sbc.c):
 *   worker -> master  hello: the 11 bytes "llll-pool/1" (magic and protocol
 *                     version), sent once, as soon as llll_serve starts;
 *   master -> worker  request: the argument bytes, as they are;
 *   worker -> master  reply: the result bytes, then 1 status byte (0: fn
 *                     returned 0, 1: fn failed). At the end, so that
 *                     neither side moves the result to make room for it.
 * One request is in flight per worker at a time, so a reply always belongs to
 * the call that owns the worker. The master closing the channel (LLLL_EOF in
 * the worker) ends llll_serve with 0.
 *
 * Locking: one mutex per pool guards the slots' states; it is never held while
 * sending, receiving, spawning or reaping. A call owns its worker (BUSY) from
 * the moment it takes it until it puts it back, so nothing else touches that
 * worker's channel meanwhile, except llll_pool_free, which only shuts it down.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"

#define HELLO "llll-pool/1"
#define HELLO_LEN (sizeof HELLO - 1)
#define START_TIMEOUT_MS 10000
#define FREE_GRACE_MS 200      /* for workers to exit on EOF, all together */
#define SEND_ATTEMPTS 3        /* a worker found dead before it read the request */
#define FRAME_LIMIT ((size_t)UINT32_MAX - 1) /* the 4-byte header's range, minus the status byte */

enum slot_state {
    SLOT_IDLE,      /* in is a live worker nobody uses */
    SLOT_BUSY,      /* owned by one call */
    SLOT_SPAWNING,  /* owned by one call that replaces its worker */
    SLOT_DEAD       /* no worker: replaced by the next call that needs it (unless no_respawn) */
};

struct slot {
    llll_instance *in;  /* NULL when dead (or while a replacement is forked) */
    llll_sbc *ch;       /* in's channel */
    enum slot_state state;
};

struct host {
    struct llll_pool *pool;
    char *name;               /* the launcher's words, for messages */
    char **argv;              /* launcher, env, worker: what a slot runs; NULL: local */
    llll_instance_opts iopts; /* the pool's, with the channel on stdio */
    int fails;                /* launches failed in a row (under the pool lock) */
    int64_t retry_at;         /* no launch before (ms, monotonic) */
    bool dropped;
};

struct llll_pool {
    pthread_mutex_t mu;
    pthread_cond_t idle_cv;   /* a slot became IDLE or DEAD, or the pool is closing */
    pthread_cond_t drain_cv;  /* inside reached 0 while closing */
    struct slot *slots;
    int n;
    int cursor;               /* where a thread without a hint starts looking */
    int nwait;                /* threads waiting on idle_cv */
    int inside;               /* calls between entry and return */
    bool closing;
    _Atomic int nlive;        /* slots with a live worker (IDLE or BUSY): llll_pool_size */
    uint64_t id;              /* unique per pool in this process, for the thread hints */

    char **argv;              /* program workers (deep copy), or NULL */
    llll_serve_fn *fn;        /* forked workers */
    void *ctx;
    llll_instance_opts iopts; /* strings deep-copied below */
    char **env_copy;
    char *cwd_copy, *code_copy;
    int call_timeout_ms;      /* -1: none */
    int start_timeout_ms;
    bool no_respawn;
    size_t max_frame;

    _Atomic uint64_t calls, failures, crashes, timeouts, respawns;

    struct host *hosts;       /* opts' hosts, or NULL */
    int nhosts;
    int *slot_host;           /* slot -> its host */
    bool drop_failed_hosts;
    bool starting;            /* in llll_pool_start */
    int start_error;          /* of the first host left out at start */
    _Atomic uint64_t launch_failures, hosts_dropped;
};

/* The worker a thread used last, per thread, valid for the pool with this id. */
static _Thread_local struct { uint64_t pool_id; int slot; } hint;
static _Atomic uint64_t next_pool_id = 1;

/* ----------------------------------------------------------- the worker */

/* Answers requests on ch with fn until the master closes it. */
static int serve_channel(llll_sbc *ch, llll_serve_fn *fn, void *ctx)
{
    /* The master bounds what it sends; replies are bounded by the master's
     * receive limit, which it reports as -EMSGSIZE to the caller. */
    llll_sbc_set_max_frame(ch, FRAME_LIMIT + 1);
    int rc = llll_sbc_send(ch, HELLO, HELLO_LEN);
    llll_buf req = LLLL_BUF_INIT, res = LLLL_BUF_INIT;
    while (rc == 0) {
        rc = llll_sbc_recv(ch, &req, -1);
        if (rc)
            break;
        res.len = 0;
        int frc = fn(ctx, req.data, req.len, &res);
        if (res.cap < res.len)   /* fn grew data without keeping cap */
            res.cap = res.len;
        if (llll_buf_reserve(&res, res.len + 1) < 0) {
            rc = -ENOMEM;
            break;
        }
        ((unsigned char *)res.data)[res.len] = frc ? 1 : 0;
        rc = llll_sbc_send(ch, res.data, res.len + 1);
        if (rc == -EPIPE || rc == -ECONNRESET)
            rc = LLLL_EOF;   /* the master went away while fn ran */
    }
    llll_buf_free(&req);
    llll_buf_free(&res);
    return rc == LLLL_EOF ? 0 : rc;
}

int llll_serve(llll_serve_fn *fn, void *ctx)
{
    if (!fn)
        return -EINVAL;
    llll_sbc *ch;
    int rc = llll_sbc_child(&ch);
    if (rc)
        return rc;
    rc = serve_channel(ch, fn, ctx);
    llll_sbc_close(ch);
    return rc;
}

/* Body of a forked worker. */
static int fork_main(llll_sbc *ch, void *arg)
{
    llll_pool *p = arg;
    return serve_channel(ch, p->fn, p->ctx) == 0 ? 0 : 1;
}

/* ------------------------------------------------------ worker lifecycle */

static struct host *host_of(llll_pool *p, int slot);

/* Starts slot i's worker without waiting for its hello. */
static int spawn(llll_pool *p, int i, llll_instance **out)
{
    struct host *h = host_of(p, i);
    if (h && p->starting && h->dropped)
        return -ECANCELED;   /* left out at start */
    if (h && h->argv)
        return llll_instance_start(out, (const char *const *)h->argv, &h->iopts);
    if (p->argv)
        return llll_instance_start(out, (const char *const *)p->argv, &p->iopts);
    return llll_instance_fork(out, fork_main, p, &p->iopts);
}

/* Waits up to timeout_ms (-1: forever) for a worker's hello. */
static int await_hello(llll_instance *in, int timeout_ms)
{
    llll_buf b = LLLL_BUF_INIT;
    llll_sbc *ch = llll_instance_channel(in);
    llll_sbc_set_max_frame(ch, 64);   /* a stranger's bytes stay small */
    int rc = llll_sbc_recv(ch, &b, timeout_ms);
    if (rc == 0 && (b.len != HELLO_LEN || memcmp(b.data, HELLO, HELLO_LEN) != 0))
        rc = -EPROTO;
    else if (rc == LLLL_EOF || rc == -EPIPE)
        rc = -ECONNRESET;
    else if (rc == -EMSGSIZE)
        rc = -EPROTO;
    else if (rc == -EAGAIN)
        rc = -ETIMEDOUT;
    llll_buf_free(&b);
    return rc;
}

/* Kills and reaps a worker. */
static void reap(llll_instance *in)
{
    if (!in)
        return;
    llll_instance_kill(in, SIGKILL);
    llll_instance_free(in);
}

static void unlock(llll_pool *p) { pthread_mutex_unlock(&p->mu); }
static void lock(llll_pool *p) { pthread_mutex_lock(&p->mu); }

/* ------------------------------------------------------------ hosts */

/* Launches on one host that fail in a row before the host is dropped, and
 * the wait before the next launch after the first failure (doubling, up to
 * the maximum). */
#define HOST_MAX_FAILS 5
#define HOST_BACKOFF_MS 100
#define HOST_BACKOFF_MAX_MS 5000

static int64_t mono_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Writes a whole line to stderr in one write where it can, with SIGPIPE
 * blocked in this thread and taken back if the write raised it. */
static void write_stderr(const char *s, size_t n)
{
    sigset_t pipeset, old, pending;
    sigemptyset(&pipeset);
    sigaddset(&pipeset, SIGPIPE);
    if (pthread_sigmask(SIG_BLOCK, &pipeset, &old) != 0)
        return;
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE) == 1;
    bool epipe = false;
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            epipe = w < 0 && errno == EPIPE;
            break;
        }
        s += w;
        n -= (size_t)w;
    }
    if (epipe && !was_pending) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipeset, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* One line from a host (its workers' stderr, or a message about it): to the
 * user's on_stderr if set, else to stderr (ending in '\n'); prefixed with
 * "[host's name] " when verbose. No lock is held. */
static void host_line(const struct host *h, const char *line, size_t len)
{
    const llll_proc_opts *u = &h->pool->iopts.proc;
    size_t pre = u->verbose ? strlen(h->name) + 3 : 0;
    bool nl = u->on_stderr || (len > 0 && line[len - 1] == '\n');
    char stack[1024], *buf = stack;
    if (pre == 0 && nl) {
        buf = (char *)line;   /* as it is */
    } else if (pre + len + 1 > sizeof stack && !(buf = malloc(pre + len + 1))) {
        buf = (char *)line;   /* no memory: the line without its prefix */
        pre = 0;
    } else {
        if (pre)
            snprintf(buf, pre + 1, "[%s] ", h->name);
        memcpy(buf + pre, line, len);
    }
    size_t k = pre + len;
    if (!nl && buf != line)
        buf[k++] = '\n';
    if (u->on_stderr)
        u->on_stderr(u->userdata, buf, k);
    else
        write_stderr(buf, k);
    if (buf != stack && buf != line)
        free(buf);
}

static void host_stderr(void *ud, const char *line, size_t len)
{
    host_line(ud, line, len);
}

static void host_end(void *ud, int status, const llll_buf *out, const llll_buf *err)
{
    const struct host *h = ud;
    h->pool->iopts.proc.on_end(h->pool->iopts.proc.userdata, status, out, err);
}

static void free_strv(char **v);

/* Appends n bytes of s to b, keeping it NUL-terminated. */
static int put_str(llll_buf *b, const char *s, size_t n)
{
    if (llll_buf_reserve(b, b->len + n + 1) < 0)
        return -ENOMEM;
    memcpy((char *)b->data + b->len, s, n);
    b->len += n;
    ((char *)b->data)[b->len] = '\0';
    return 0;
}

/* Appends word as one word of a POSIX shell command line: as it is when no
 * character in it means anything to a shell, else in single quotes. */
static int put_quoted(llll_buf *b, const char *w)
{
    size_t n = strlen(w);
    if (n > 0 && strspn(w, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                           "0123456789_@%+=:,./-") == n)
        return put_str(b, w, n);
    int rc = put_str(b, "'", 1);
    for (const char *q; rc == 0 && (q = strchr(w, '\'')); w = q + 1) {
        rc = put_str(b, w, (size_t)(q - w));
        if (rc == 0)
            rc = put_str(b, "'\\''", 4);
    }
    if (rc == 0)
        rc = put_str(b, w, strlen(w));
    return rc ? rc : put_str(b, "'", 1);
}

/* ssh (and rsh, autossh...) joins the words after the host into one command
 * line for the remote shell; srun, docker exec, sudo and the like exec them
 * as they are. */
static bool launcher_joins_words(const char *const *launcher)
{
    const char *base = strrchr(launcher[0], '/');
    base = base ? base + 1 : launcher[0];
    size_t n = strlen(base);
    return n >= 3 && strcmp(base + n - 3, "ssh") == 0;
}

/* The argv a slot of host h runs: the launcher, then "env LLLL_SBC_FD=0,1"
 * and the K=V entries of env (the launcher may not carry the environment),
 * then the worker's argv; all but the launcher quoted when the launcher
 * joins its words into a shell command. */
static char **launch_argv(const char *const *launcher, const char *const *env, char *const *argv)
{
    size_t nl = 0, ne = 0, na = 0;
    while (launcher[nl])
        nl++;
    while (env && env[ne])
        ne++;
    while (argv[na])
        na++;
    char **v = calloc(nl + 2 + ne + na + 1, sizeof *v);
    if (!v)
        return NULL;
    bool quote = launcher_joins_words(launcher);
    size_t k = 0;
    for (size_t i = 0; i < nl + 2 + ne + na; i++) {
        const char *w = i < nl ? launcher[i] : i == nl ? "env" : i == nl + 1 ? "LLLL_SBC_FD=0,1"
                      : i < nl + 2 + ne ? env[i - nl - 2] : argv[i - nl - 2 - ne];
        if (i >= nl + 2 && i < nl + 2 + ne && !strchr(w, '='))
            continue;   /* "K" alone removes K from the launcher's environment only */
        llll_buf b = LLLL_BUF_INIT;
        int rc = quote && i >= nl ? put_quoted(&b, w) : put_str(&b, w, strlen(w));
        if (rc) {
            llll_buf_free(&b);
            free_strv(v);
            return NULL;
        }
        v[k++] = b.data;
    }
    return v;
}

/* Sets up p->hosts from opts (p->argv, p->iopts are set): the slot count in
 * *nproc. -EINVAL for a negative slot count or a launched host that cannot
 * be (a forked worker, or code on stdin). */
static int hosts_new(llll_pool *p, const llll_pool_opts *opts, int *nproc)
{
    long total = 0;
    for (size_t i = 0; i < opts->nhosts; i++) {
        const llll_host *h = &opts->hosts[i];
        if (h->slots < 0 || (h->launcher && (!h->launcher[0] || !p->argv || p->iopts.code)))
            return -EINVAL;
        total += h->slots ? h->slots : 1;
        if (total > INT_MAX)
            return -EINVAL;
    }
    if (total == 0)
        return -EINVAL;
    p->hosts = calloc(opts->nhosts, sizeof *p->hosts);
    p->slot_host = calloc((size_t)total, sizeof *p->slot_host);
    if (!p->hosts || !p->slot_host)
        return -ENOMEM;
    p->nhosts = (int)opts->nhosts;
    int s = 0;
    for (int i = 0; i < p->nhosts; i++) {
        const llll_host *u = &opts->hosts[i];
        struct host *h = &p->hosts[i];
        h->pool = p;
        for (int k = 0; k < (u->slots ? u->slots : 1); k++)
            p->slot_host[s++] = i;
        llll_buf name = LLLL_BUF_INIT;
        int rc = u->launcher ? 0 : put_str(&name, "local", 5);
        for (size_t w = 0; rc == 0 && u->launcher && u->launcher[w]; w++) {
            if (w > 0)
                rc = put_str(&name, " ", 1);
            if (rc == 0)
                rc = put_str(&name, u->launcher[w], strlen(u->launcher[w]));
        }
        h->name = name.data;
        if (rc)
            return rc;
        if (!u->launcher)
            continue;
        if (!(h->argv = launch_argv(u->launcher, p->iopts.proc.env, p->argv)))
            return -ENOMEM;
        h->iopts = p->iopts;
        h->iopts.stdio_channel = true;
        h->iopts.proc.userdata = h;
        h->iopts.proc.on_stderr = host_stderr;
        h->iopts.proc.on_end = p->iopts.proc.on_end ? host_end : NULL;
    }
    *nproc = (int)total;
    return 0;
}

static void hosts_free(llll_pool *p)
{
    for (int i = 0; i < p->nhosts; i++) {
        free(p->hosts[i].name);
        free_strv(p->hosts[i].argv);
    }
    free(p->hosts);
    free(p->slot_host);
}

static struct host *host_of(llll_pool *p, int slot)
{
    return p->hosts ? &p->hosts[p->slot_host[slot]] : NULL;
}

/* Whether slot i may get a worker now (lock held): not when its host was
 * dropped, nor before the back-off after a failed launch ends (then *wake,
 * if given and not earlier already, is set to that time). */
static bool host_may_launch(llll_pool *p, int i, int64_t *wake)
{
    struct host *h = host_of(p, i);
    if (!h)
        return true;
    if (h->dropped)
        return false;
    if (h->fails == 0 || mono_ms() >= h->retry_at)
        return true;
    if (wake && (*wake < 0 || h->retry_at < *wake))
        *wake = h->retry_at;
    return false;
}

/* Waits on idle_cv until woken or until wake (ms, monotonic). Lock held. */
static void wait_idle_until(llll_pool *p, int64_t wake)
{
    int64_t left = wake - mono_ms();
    if (left <= 0)
        return;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);   /* idle_cv's clock */
    dl.tv_sec += (time_t)(left / 1000);
    dl.tv_nsec += (long)(left % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&p->idle_cv, &p->mu, &dl);
}

/* Leaves host h out of the pool (lock held): its dead slots stay dead. */
static void host_drop(llll_pool *p, struct host *h)
{
    h->dropped = true;
    atomic_fetch_add_explicit(&p->hosts_dropped, 1, memory_order_relaxed);
    if (p->nwait)
        pthread_cond_broadcast(&p->idle_cv);
}

/* Accounts for a launch on slot i's host that ended with rc (lock not
 * held): a success ends the host's run of failures; a failure starts or
 * lengthens its back-off, or drops it (the HOST_MAX_FAILS-th in a row, or
 * any at start with drop_failed_hosts). With verbose, a failure is told on
 * the host's stderr, with the first bytes of a peer that is not a worker.
 * Returns whether the host was dropped. */
static bool host_launched(llll_pool *p, int i, llll_instance *in, int rc)
{
    struct host *h = host_of(p, i);
    if (!h || rc == -ECANCELED)
        return false;
    lock(p);
    bool dropped = false, closing = p->closing;
    if (rc == 0) {
        h->fails = 0;
    } else if (!closing) {
        atomic_fetch_add_explicit(&p->launch_failures, 1, memory_order_relaxed);
        int f = ++h->fails;
        int64_t wait = HOST_BACKOFF_MS;
        while (--f > 0 && wait < HOST_BACKOFF_MAX_MS)
            wait *= 2;
        h->retry_at = mono_ms() + (wait < HOST_BACKOFF_MAX_MS ? wait : HOST_BACKOFF_MAX_MS);
        if (!h->dropped && (p->starting ? p->drop_failed_hosts : h->fails >= HOST_MAX_FAILS)) {
            host_drop(p, h);
            dropped = true;
        }
    }
    unlock(p);
    if (rc == 0 || closing || !p->iopts.proc.verbose)
        return dropped;
    char seen[48], text[4 * sizeof seen + 1], line[512];
    size_t n = in ? llll_sbc_peek(llll_instance_channel(in), seen, sizeof seen) : 0, k = 0;
    for (size_t j = 0; j < n; j++) {
        unsigned char c = (unsigned char)seen[j];
        k += (size_t)(c >= ' ' && c < 127 && c != '\\' && c != '"'
                          ? snprintf(text + k, sizeof text - k, "%c", c)
                          : snprintf(text + k, sizeof text - k, c == '\n' ? "\\n" : "\\x%02x", c));
    }
    text[k] = '\0';
    char why[64];
    int status;
    if (rc == -ECONNRESET && in && llll_instance_join(in, 1000, &status) == 0)
        snprintf(why, sizeof why, "it exited (status %d) before its hello",
                 WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    else
        snprintf(why, sizeof why, "%s", llll_strerror(rc));
    int m = snprintf(line, sizeof line, "llll: worker launch failed: %s%s%s%s%s\n", why,
                     n ? "; not a worker, it sent \"" : "", text, n ? "\"" : "",
                     !dropped ? "" : p->starting ? "; host left out" : "; host dropped after failed launches in a row");
    host_line(h, line, m < 0 ? 0 : (size_t)m < sizeof line ? (size_t)m : sizeof line - 1);
    return dropped;
}

/* At start, after slot i's worker failed to launch with rc: with
 * drop_failed_hosts, the host's other workers go too and start goes on
 * (0); else rc, which fails start. */
static int host_start_failed(llll_pool *p, int i, int rc)
{
    if (host_of(p, i) && host_of(p, i)->dropped)
        return 0;   /* left out already (start runs on one thread) */
    if (!host_launched(p, i, p->slots[i].in, rc))
        return rc;
    if (!p->start_error)
        p->start_error = rc;
    for (int k = 0; k < p->n; k++) {
        if (p->slot_host[k] != p->slot_host[i] || !p->slots[k].in)
            continue;
        reap(p->slots[k].in);
        p->slots[k].in = NULL;
        p->slots[k].ch = NULL;
        p->slots[k].state = SLOT_DEAD;
    }
    return 0;
}

/* Gives slot i, owned by the caller (not IDLE), a new worker; called and
 * returns with the lock held, drops it meanwhile. Ends with the slot IDLE with
 * a worker (give_back) or owned and BUSY (!give_back), or DEAD on failure. */
static int respawn(llll_pool *p, int i, bool give_back)
{
    struct slot *s = &p->slots[i];
    s->state = SLOT_SPAWNING;
    unlock(p);
    llll_instance *in;
    int rc = spawn(p, i, &in);
    if (rc)
        host_launched(p, i, NULL, rc);
    lock(p);
    if (rc == 0) {
        s->in = in;   /* visible to llll_pool_free, which may shut it down */
        s->ch = llll_instance_channel(in);
        rc = p->closing ? -ECANCELED : 0;
        unlock(p);
        if (rc == 0)
            rc = await_hello(in, p->start_timeout_ms);
        host_launched(p, i, in, rc);
        if (rc == 0)
            llll_sbc_set_max_frame(s->ch, p->max_frame + 1);
        lock(p);
        if (rc) {
            s->in = NULL;
            s->ch = NULL;
            unlock(p);
            reap(in);
            lock(p);
        }
    }
    if (rc == 0) {
        atomic_fetch_add_explicit(&p->respawns, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&p->nlive, 1, memory_order_relaxed);
        s->state = give_back ? SLOT_IDLE : SLOT_BUSY;
    } else {
        s->state = SLOT_DEAD;
    }
    if (p->nwait && (rc || give_back))
        pthread_cond_broadcast(&p->idle_cv);
    return rc;
}

/* Kills and reaps the worker of slot i (owned by the caller), then replaces
 * it unless the pool says not to. Lock held on entry and exit. */
static void retire(llll_pool *p, int i)
{
    struct slot *s = &p->slots[i];
    llll_instance *in = s->in;
    s->in = NULL;
    s->ch = NULL;
    s->state = SLOT_SPAWNING;   /* still ours */
    atomic_fetch_sub_explicit(&p->nlive, 1, memory_order_relaxed);
    unlock(p);
    reap(in);
    lock(p);
    if (p->no_respawn || p->closing || !host_may_launch(p, i, NULL)) {
        s->state = SLOT_DEAD;
        if (p->nwait)
            pthread_cond_broadcast(&p->idle_cv);
    } else {
        respawn(p, i, true);
    }
}

/* Takes a worker for a call: 0 with *slot BUSY and owned, or an error. Lock
 * held on entry and exit. */
static int acquire(llll_pool *p, int *slot)
{
    for (;;) {
        if (p->closing)
            return -ECANCELED;
        int h = hint.pool_id == p->id ? hint.slot : -1;
        if (h >= 0 && p->slots[h].state == SLOT_IDLE) {
            p->slots[h].state = SLOT_BUSY;
            *slot = h;
            return 0;
        }
        int dead = -1, alive = 0;
        int64_t wake = -1;   /* when a host's back-off ends */
        for (int k = 0; k < p->n; k++) {
            int i = (p->cursor + k) % p->n;
            enum slot_state st = p->slots[i].state;
            if (st == SLOT_IDLE) {
                p->cursor = (i + 1) % p->n;
                p->slots[i].state = SLOT_BUSY;
                *slot = i;
                return 0;
            }
            if (st == SLOT_DEAD && dead < 0 && host_may_launch(p, i, &wake))
                dead = i;
            else if (st != SLOT_DEAD)
                alive++;
        }
        if (dead >= 0 && !p->no_respawn) {
            int rc = respawn(p, dead, false);
            if (rc == 0)
                *slot = dead;
            return rc;
        }
        if (alive == 0 && (wake < 0 || p->no_respawn))
            return -ECHILD;
        p->nwait++;
        if (wake >= 0 && !p->no_respawn)
            wait_idle_until(p, wake);
        else
            pthread_cond_wait(&p->idle_cv, &p->mu);
        p->nwait--;
    }
}

/* One request and its reply on ch. *sent tells whether the worker may have
 * run fn on the request (false: it never got it whole, so it may go to
 * another worker). */
static int exchange(llll_pool *p, llll_sbc *ch, const void *arg, size_t len, llll_buf *result, bool *sent)
{
    *sent = false;
    int rc = llll_sbc_send(ch, arg, len);
    if (rc)
        return rc;
    *sent = true;
    rc = llll_sbc_recv(ch, result, p->call_timeout_ms);
    if (rc == -ECONNRESET) {
        /* A unix stream socket reads ECONNRESET only when the peer closed
         * with data unread: the worker died before it read this request
         * whole, so fn never ran on it (one that died in fn, having read
         * it, gives LLLL_EOF here). */
        *sent = false;
    }
    if (rc)
        return rc;
    if (result->len == 0)
        return -EPROTO;
    result->len--;
    unsigned char status = ((unsigned char *)result->data)[result->len];
    if (status > 1)
        return -EPROTO;
    return status ? -EREMOTEIO : 0;
}

int llll_pool_call(llll_pool *p, const void *arg, size_t len, llll_buf *result)
{
    if (!p || !result || (!arg && len))
        return -EINVAL;
    result->len = 0;
    if (len > p->max_frame)
        return -EMSGSIZE;
    lock(p);
    if (p->closing) {
        unlock(p);
        return -ECANCELED;
    }
    p->inside++;
    int rc, i;
    for (int attempt = 1;; attempt++) {
        rc = acquire(p, &i);
        if (rc) {
            /* A replacement cut short by free fails with the error it met
             * (EOF on the shut channel...): the caller is owed -ECANCELED. */
            if (p->closing)
                rc = -ECANCELED;
            break;
        }
        llll_sbc *ch = p->slots[i].ch;
        unlock(p);
        bool sent;
        rc = exchange(p, ch, arg, len, result, &sent);
        lock(p);
        hint.pool_id = p->id;
        hint.slot = i;
        if (rc == 0 || rc == -EREMOTEIO) {
            atomic_fetch_add_explicit(&p->calls, 1, memory_order_relaxed);
            if (rc)
                atomic_fetch_add_explicit(&p->failures, 1, memory_order_relaxed);
            p->slots[i].state = SLOT_IDLE;
            if (p->nwait)
                pthread_cond_signal(&p->idle_cv);
            break;
        }
        result->len = 0;
        if (p->closing) {
            /* free shut the channel down; it reaps the worker itself */
            p->slots[i].state = SLOT_IDLE;
            rc = -ECANCELED;
            break;
        }
        if (!sent && rc == -EMSGSIZE) {   /* nothing was sent: the worker is fine */
            p->slots[i].state = SLOT_IDLE;
            if (p->nwait)
                pthread_cond_signal(&p->idle_cv);
            break;
        }
        retire(p, i);
        if (!sent && attempt < SEND_ATTEMPTS)
            continue;   /* it died before taking the request: try another */
        if (rc == -ETIMEDOUT || rc == -EAGAIN) {
            atomic_fetch_add_explicit(&p->timeouts, 1, memory_order_relaxed);
            rc = -ETIMEDOUT;
        } else if (rc != -EMSGSIZE) {
            atomic_fetch_add_explicit(&p->crashes, 1, memory_order_relaxed);
            rc = -ECONNRESET;
        }
        break;
    }
    if (--p->inside == 0 && p->closing)
        pthread_cond_broadcast(&p->drain_cv);
    unlock(p);
    return rc;
}

/* ------------------------------------------------------ create and free */

static void free_strv(char **v)
{
    if (!v)
        return;
    for (char **s = v; *s; s++)
        free(*s);
    free(v);
}

static char **dup_strv(const char *const *v)
{
    size_t n = 0;
    while (v[n])
        n++;
    char **c = calloc(n + 1, sizeof *c);
    if (!c)
        return NULL;
    for (size_t k = 0; k < n; k++) {
        if (!(c[k] = strdup(v[k]))) {
            free_strv(c);
            return NULL;
        }
    }
    return c;
}

static void destroy(llll_pool *p)
{
    free_strv(p->argv);
    free_strv(p->env_copy);
    free(p->cwd_copy);
    free(p->code_copy);
    free(p->slots);
    hosts_free(p);
    pthread_cond_destroy(&p->idle_cv);
    pthread_cond_destroy(&p->drain_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Shuts every channel down first, so all workers see EOF at once (also those
 * whose channel a forked sibling holds a copy of), gives them one grace
 * together, kills those still running, then reaps them one by one (each
 * llll_instance_free's own grace would add up: n of them in a row). */
static void reap_all(llll_pool *p)
{
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].ch)
            llll_sbc_shutdown(p->slots[i].ch);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < p->n; i++) {
        if (!p->slots[i].in)
            continue;
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long spent = (t.tv_sec - t0.tv_sec) * 1000L + (t.tv_nsec - t0.tv_nsec) / 1000000L;
        int left = spent >= FREE_GRACE_MS ? 0 : FREE_GRACE_MS - (int)spent;
        if (llll_instance_join(p->slots[i].in, left, NULL) < 0)
            llll_instance_kill(p->slots[i].in, SIGKILL);
    }
    for (int i = 0; i < p->n; i++) {
        llll_instance_free(p->slots[i].in);
        p->slots[i].in = NULL;
        p->slots[i].ch = NULL;
    }
}

static int pool_new(llll_pool **out, const char *const argv[], llll_serve_fn *fn, void *ctx,
                    int nproc, const llll_pool_opts *opts)
{
    static const llll_pool_opts defaults;
    if (!opts)
        opts = &defaults;
    if (nproc < 0 || opts->call_timeout_ms < 0 || opts->start_timeout_ms < -1)
        return -EINVAL;
    if (nproc == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nproc = c > 0 ? (int)c : 1;
    }
    llll_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->idle_cv, NULL);
    pthread_cond_init(&p->drain_cv, NULL);
    p->id = atomic_fetch_add(&next_pool_id, 1);
    p->n = nproc;
    p->fn = fn;
    p->ctx = ctx;
    p->call_timeout_ms = opts->call_timeout_ms ? opts->call_timeout_ms : -1;
    p->start_timeout_ms = opts->start_timeout_ms ? opts->start_timeout_ms : START_TIMEOUT_MS;
    p->no_respawn = opts->no_respawn;
    p->max_frame = opts->max_frame ? opts->max_frame : LLLL_SBC_MAX_FRAME_DEFAULT;
    if (p->max_frame > FRAME_LIMIT)
        p->max_frame = FRAME_LIMIT;
    p->iopts = opts->instance;
    bool oom = false;
    if (argv && !oom)
        oom = !(p->argv = dup_strv(argv));
    if (opts->instance.proc.env && !oom) {
        oom = !(p->env_copy = dup_strv(opts->instance.proc.env));
        p->iopts.proc.env = (const char *const *)p->env_copy;
    }
    if (opts->instance.proc.cwd && !oom) {
        oom = !(p->cwd_copy = strdup(opts->instance.proc.cwd));
        p->iopts.proc.cwd = p->cwd_copy;
    }
    if (opts->instance.code && !oom) {
        oom = !(p->code_copy = strdup(opts->instance.code));
        p->iopts.code = p->code_copy;
    }
    int rc = 0;
    if (opts->hosts && !oom)
        rc = hosts_new(p, opts, &nproc);
    if (rc == 0 && !oom) {
        p->n = nproc;
        oom = !(p->slots = calloc((size_t)nproc, sizeof *p->slots));
    }
    if (oom || rc) {
        destroy(p);
        return oom ? -ENOMEM : rc;
    }
    p->drop_failed_hosts = opts->drop_failed_hosts;
    p->starting = true;

    /* Start them all, then collect the hellos: they initialise in parallel. */
    for (int i = 0; i < nproc && rc == 0; i++) {
        rc = spawn(p, i, &p->slots[i].in);
        if (rc == 0)
            p->slots[i].ch = llll_instance_channel(p->slots[i].in);
        else
            rc = host_start_failed(p, i, rc);
    }
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < nproc && rc == 0; i++) {
        if (!p->slots[i].in)
            continue;   /* its host was left out */
        int left = p->start_timeout_ms;
        if (left > 0) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            long spent = (t.tv_sec - t0.tv_sec) * 1000L + (t.tv_nsec - t0.tv_nsec) / 1000000L;
            left = spent >= left ? 0 : left - (int)spent;
        }
        rc = await_hello(p->slots[i].in, left);
        if (rc == -EAGAIN)
            rc = -ETIMEDOUT;
        if (rc == 0)
            llll_sbc_set_max_frame(p->slots[i].ch, p->max_frame + 1);
        else
            rc = host_start_failed(p, i, rc);
    }
    int live = 0;
    for (int i = 0; i < nproc; i++)
        live += p->slots[i].in != NULL;
    if (rc == 0 && live == 0)
        rc = p->start_error;   /* every host was left out */
    if (rc) {
        for (int i = 0; i < nproc; i++)
            if (p->slots[i].in)
                llll_instance_kill(p->slots[i].in, SIGKILL);
        reap_all(p);
        destroy(p);
        return rc;
    }
    p->nlive = live;
    p->starting = false;
    *out = p;
    return 0;
}

int llll_pool_start(llll_pool **out, const char *const argv[], int nproc, const llll_pool_opts *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!argv || !argv[0])
        return -EINVAL;
    return pool_new(out, argv, NULL, NULL, nproc, opts);
}

int llll_pool_fork(llll_pool **out, llll_serve_fn *fn, void *ctx, int nproc, const llll_pool_opts *opts)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!fn)
        return -EINVAL;
    return pool_new(out, NULL, fn, ctx, nproc, opts);
}

int llll_pool_size(const llll_pool *p)
{
    return p ? atomic_load_explicit(&p->nlive, memory_order_relaxed) : 0;
}

void llll_pool_get_stats(const llll_pool *p, llll_pool_stats *out)
{
    if (!out)
        return;
    memset(out, 0, sizeof *out);
    if (!p)
        return;
    out->calls = atomic_load_explicit(&p->calls, memory_order_relaxed);
    out->failures = atomic_load_explicit(&p->failures, memory_order_relaxed);
    out->crashes = atomic_load_explicit(&p->crashes, memory_order_relaxed);
    out->timeouts = atomic_load_explicit(&p->timeouts, memory_order_relaxed);
    out->respawns = atomic_load_explicit(&p->respawns, memory_order_relaxed);
    out->launch_failures = atomic_load_explicit(&p->launch_failures, memory_order_relaxed);
    out->hosts_dropped = atomic_load_explicit(&p->hosts_dropped, memory_order_relaxed);
}

void llll_pool_free(llll_pool *p)
{
    if (!p)
        return;
    lock(p);
    p->closing = true;
    pthread_cond_broadcast(&p->idle_cv);
    /* Wake the calls blocked on a worker; the slot stays theirs until they
     * notice, so its instance is not freed under them. */
    for (int i = 0; i < p->n; i++)
        if (p->slots[i].state != SLOT_IDLE && p->slots[i].ch)
            llll_sbc_shutdown(p->slots[i].ch);
    while (p->inside > 0)
        pthread_cond_wait(&p->drain_cv, &p->mu);
    unlock(p);
    reap_all(p);
    destroy(p);
}
