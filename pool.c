/* pool.c - pools of worker processes (llll_pool), bulk maps over them
 * (llll_pool_map) and the worker loop (llll_serve).
 *
 * Wire protocol 2, over each worker's instance channel (frames of sbc.c: a
 * 4-byte big-endian length, then that many bytes). Every integer below is an
 * unsigned 32-bit big-endian number.
 *
 *   hello    worker -> master, once, as soon as llll_serve starts: the 11
 *            bytes "llll-pool/2". A master refuses any other hello; one of
 *            another version ("llll-pool/1") fails the start with -EPROTO.
 *
 *   request  master -> worker: a batch of count >= 1 arguments
 *              id      request id, chosen by the master (it counts per worker)
 *              limit   the largest reply frame the master accepts, in bytes
 *              count   number of arguments
 *            then count times:
 *              len     the argument's length
 *              bytes   len bytes
 *
 *   reply    worker -> master: the results of a run of the request's items,
 *            each result followed by its status and length, the frame ending
 *            with the request id, so the result of a single call starts at
 *            byte 0 of the frame (nobody moves it):
 *            count times, for items first, first+1, ...:
 *              bytes   the result
 *              status  1 byte: 0 fn returned 0; 1 fn failed (the bytes are
 *                      its message); 2 the result would not fit in limit
 *                      (no bytes: the caller gets -EMSGSIZE)
 *              len     the result's length
 *            then
 *              id      the request's id
 *              first   index in the request of the first item in this frame
 *              count   number of results in this frame (>= 1)
 *            A worker answers a request's items in order, in one reply frame
 *            when they fit in limit, else in several (first says where each
 *            begins). A reply is read from its end.
 *
 * The master keeps up to two requests in flight per worker (a map), or one (a
 * call); replies come in request order. A reply whose id is not the oldest
 * request in flight, or that does not parse, retires the worker (-EPROTO).
 * The master closing the channel (LLLL_EOF in the worker) ends llll_serve.
 *
 * Locking: one mutex per pool guards the slots, the queue of threads waiting
 * for a worker, and the state of every map; it is never held while sending,
 * receiving, spawning, reaping or calling user code. A slot is owned by one
 * thread at a time (a call, the thread a waiting call handed its request to,
 * or one pump thread of a map), which alone uses its channel; llll_pool_free
 * only shuts channels down, and the watchdog only kills workers.
 *
 * Lanes (calls on a pool without call_timeout_ms): a call takes the worker
 * its thread used last when it is idle, with one compare-and-swap on the
 * slot's state (IDLE to BUSY only ever so), and leads that slot's lane; when
 * the worker is busy with a call, it queues in the lane (under the slot's
 * own lock, lm) and sleeps. A leader sends its own call and those queued in
 * its lane in one frame, posts each caller when its result is in, then hands
 * the lane to the oldest call queued since, or lets the worker go idle. No
 * pool lock is taken: threads calling different workers never meet, and the
 * callers of one worker share its frames and stay together, so that the
 * scheduler keeps each group on a CPU of its own. While lane calls are short
 * and outnumber the workers, a call takes the lane of its thread's CPU
 * instead (cpu_lanes_new). A thread with no worker of its own, or whose
 * worker is not a lane's, takes any idle worker. The lane
 * watcher, a thread started when a call first queues in a lane, looks every
 * LANE_WATCH_MS while calls are queued: the calls of a lane whose worker ran
 * one frame all that time (a long call), or all of them when a worker stayed
 * idle all that time, may then go to any worker that goes idle. Anything
 * else (a failed frame, a dead worker, a thread in the pool's queue, a map)
 * goes the slow way, under the mutex, as below.
 *
 * More callers than workers, the slow way (call_timeout_ms set, a call run
 * alone after its worker died, a dead worker to replace): a thread that
 * finds every worker busy queues its request in the pool's queue and sleeps
 * on a semaphore; a thread that owns a worker runs the queued calls on it,
 * up to COMBINE_MAX in one frame and DELEGATE_MAX frames, before it returns
 * (posting each caller when its result is in), then hands the worker itself
 * to the next waiter, or to its lane. The worker is never idle while a
 * caller in the pool's queue sleeps, and no thread is woken for nothing. A
 * map's pump that has nothing to do lets its worker go to a waiting thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llll.h"

#define PROTOCOL 2
#define HELLO "llll-pool/2"
#define HELLO_PREFIX "llll-pool/"
#define HELLO_LEN (sizeof HELLO - 1)
#define REQ_HEAD 12            /* id, limit, count */
#define ARG_HEAD 4             /* an argument's length */
#define REPLY_TAIL 12          /* id, first, count */
#define RESULT_TAIL 5          /* status, length */
#define FRAME_LIMIT ((size_t)UINT32_MAX)
#define MAX_FRAME_LIMIT (FRAME_LIMIT - (1 << 20))  /* the largest max_frame */
#define START_TIMEOUT_MS 10000
#define FREE_GRACE_MS 200      /* for workers to exit on EOF, all together */
#define DRAIN_LOOK_MS 10       /* free: how often it looks for calls left (fast_leave) */
#define SEND_ATTEMPTS 3        /* a worker found dead before it read the request */
#define DELEGATE_MAX 8         /* frames of queued calls a worker's owner runs before handing it on */
#define COMBINE_MAX 64         /* queued calls it sends together, in one frame */
#define SHORT_CALL_NS 50000    /* lane calls this short go by CPU (cpu_lanes_new) */
#define YIELD_AFTER_NS 20000   /* a worker yields after a request this long (serve_channel) */

/* Maps */
#define BATCH_MAX 8192         /* items per request frame */
#define BATCH_BYTES (64 << 10) /* request bytes per frame (a larger item goes alone) */
#define PIPE_BYTES (128 << 10) /* request bytes in flight per worker before a second frame */
#define BATCH_TARGET_NS 500000.0   /* how long a batch should keep its worker busy */
#define SLOW_ITEM_NS 5000000.0     /* items this slow go one at a time: a round trip
                                      costs them little, and a second item queued
                                      behind one could wait while another worker idles */
/* Built and not yet delivered, per worker: many small batches, so that a slow
 * item holding back the delivery does not leave the other workers idle, but
 * no more items than a few full batches, so that memory stays bounded. */
#define WINDOW_BATCHES 64
#define WINDOW_ITEMS (4 * BATCH_MAX)
/* Batches built ahead, waiting for a worker: this much work per worker, so
 * that the pumps keep the workers busy while the map's thread waits for a
 * CPU (a woken thread can wait a scheduler tick, ms, behind a busy worker). */
#define AHEAD_NS 8000000.0
#define AHEAD_BATCHES 4      /* per worker, at most: each batch keeps its buffers */
#define AHEAD_ITEM_NS 10000.0  /* only for items this slow: batches of a few items */
/* Work sent to a worker before it asked (past two frames): enough to hide a
 * wait of that long for a CPU, not so much that a worker still busy holds
 * items another one could run at the end. */
#define PIPE_NS 3000000.0
#define PIPE_FRAMES 4

struct waiter;

/* A FIFO of waiters, linked through their next. */
struct wlist {
    struct waiter *head, *tail;
};

enum slot_state {
    SLOT_IDLE,      /* a live worker nobody uses (only while no thread waits) */
    SLOT_BUSY,      /* owned by one thread */
    SLOT_SPAWNING,  /* owned by one thread that replaces its worker */
    SLOT_DEAD       /* no worker: replaced by the next thread that needs it (unless no_respawn) */
};

struct slot {
    llll_instance *in;  /* NULL when dead (or while a replacement starts) */
    llll_sbc *ch;       /* in's channel */
    _Atomic int state;  /* enum slot_state; IDLE to BUSY only by compare-and-swap */
    pthread_mutex_t lm;      /* the slot's lane: lane, leading */
    struct wlist lane;       /* calls queued for the lane's leader */
    _Atomic bool leading;    /* a call leads the lane: it owns the slot */
    _Atomic unsigned epoch;  /* taken, or a frame of its lane started */
    unsigned seen_epoch;     /* the lane watcher's: epoch at its last look */
    bool seen_idle;          /* the lane watcher's: idle at its last look */
    int64_t deadline;   /* CLOCK_MONOTONIC ms; 0: none (the watchdog reads it) */
    bool expired;       /* the watchdog killed the worker at its deadline */
    uint32_t next_id;   /* owner only: the last request id sent */
    llll_buf tx;        /* owner only: a call's request frame */
    llll_buf rx;        /* owner only: replies to calls run together */
};

/* A thread waiting for a worker: a call (which an owner of a worker may run
 * for it) or a map. Lives on the waiting thread's stack. */
enum wait_state { W_WAITING, W_RUNNING, W_DONE, W_GRANTED, W_RETRY,
                  W_LEAD,   /* a lane's call: lead the lane of slot `slot` */
                  W_SLOW }; /* a lane's call: go the slow way */
struct waiter {
    struct waiter *next;
    sem_t wake;               /* posted by the thread that changed state */
    _Atomic int state;        /* enum wait_state */
    int slot;                 /* W_GRANTED: the slot it now owns */
    bool is_call;
    bool alone;               /* its worker died in a frame shared with others: runs alone */
    bool stealable;           /* queued in a lane long enough to go to another worker */
    const void *arg;          /* a call's request and outcome */
    size_t len;
    llll_buf *result;
    int rc;
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
    pthread_cond_t drain_cv;  /* inside reached 0 while closing */
    pthread_cond_t pump_cv;   /* maps' pumps with nothing to do wait here */
    int idle_pumps;           /* how many */
    struct slot *slots;
    int n;
    int cursor;               /* where a thread without a hint starts looking */
    struct wlist q;           /* threads waiting for a worker */
    int inside;               /* calls and maps between entry and return */
    _Atomic int fast_inside;  /* calls in the lanes (not in inside) */
    _Atomic uint32_t crowd;   /* lane calls in flight, a running mean (x16); next
                                 to fast_inside, whose line every call writes */
    _Atomic int seeking;      /* threads in acquire: a worker let go goes to them */
    _Atomic int lane_waiting; /* stealable calls queued in the lanes */
    _Atomic int lane_queued;  /* calls queued in the lanes */
    pthread_t lw;             /* the lane watcher */
    _Atomic bool lw_running, lw_failed;
    _Atomic bool lw_asleep;   /* it waits for a call to queue */
    pthread_cond_t lw_cv;
    _Atomic unsigned lane_cursor;  /* the lane of a thread's first call */
    int16_t *cpu_lane;        /* CPU -> its lane, or NULL: see cpu_lanes_new */
    int ncpu_lane;            /* entries in cpu_lane */
    _Atomic uint32_t call_ns; /* a lane call's time, a running mean (ns) */
    _Atomic bool closing;
    _Atomic int nlive;        /* slots with a live worker: llll_pool_size */
    uint64_t id;              /* unique per pool in this process, for the thread hints */

    pthread_t wd;             /* watchdog: kills a worker past its deadline */
    bool wd_running;
    bool wd_waiting;          /* it sleeps without a deadline */
    int64_t wd_next;          /* the deadline it sleeps until */
    pthread_cond_t wd_cv;

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
    size_t reply_limit;       /* largest reply frame: one result of max_frame */

    _Atomic uint64_t calls, failures, crashes, timeouts, respawns, protocol_errors;

    struct host *hosts;       /* opts' hosts, or NULL */
    int nhosts;
    int *slot_host;           /* slot -> its host */
    bool drop_failed_hosts;
    bool starting;            /* in llll_pool_start */
    int start_error;          /* of the first host left out at start */
    _Atomic uint64_t launch_failures, hosts_dropped;

    /* Here, out of the lines above, whose layout the calls' speed depends on */
    struct pump *parked;      /* pumps between maps (see struct pump) */
    struct pump *pumps;       /* every pump, parked or not */
    bool pumps_end;           /* set by llll_pool_free: parked pumps return */
};

/* The worker a thread used last, per thread, valid for the pool with this id. */
static _Thread_local struct { uint64_t pool_id; int slot; } hint;
static _Atomic uint64_t next_pool_id = 1;

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A CLOCK_MONOTONIC time in ms as a timespec, for a timed wait on the
 * pool's monotonic condition variables. */
static struct timespec ts_of_ms(int64_t ms)
{
    return (struct timespec){ .tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L };
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Starts a library thread with every signal blocked (the user's handlers
 * never run on it): pthread_create's value. */
static int thread_start(pthread_t *th, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(th, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static void bump(_Atomic uint64_t *c, uint64_t by)
{
    if (by)
        atomic_fetch_add_explicit(c, by, memory_order_relaxed);
}

/* ----------------------------------------------------------- the worker */

/* Copies n bytes from s to d, which may overlap: a few bytes (an item of a
 * bulk map, say) without a call to memmove. sbc.c has the same for
 * llll_buf_set: the library exports only the names of llll.h, and a call
 * from one file to the other would cost what inlining saves. */
static inline void copy_small(void *d, const void *s, size_t n)
{
    unsigned char *o = d;
    const unsigned char *i = s;
    if (n >= 8 && n <= 16) {
        uint64_t a, b;
        memcpy(&a, i, 8);
        memcpy(&b, i + n - 8, 8);
        memcpy(o, &a, 8);
        memcpy(o + n - 8, &b, 8);
    } else if (n >= 4 && n < 8) {
        uint32_t a, b;
        memcpy(&a, i, 4);
        memcpy(&b, i + n - 4, 4);
        memcpy(o, &a, 4);
        memcpy(o + n - 4, &b, 4);
    } else if (n > 0 && n < 4) {
        unsigned char a = i[0], b = i[n / 2], c = i[n - 1];
        o[0] = a;
        o[n / 2] = b;
        o[n - 1] = c;
    } else if (n > 16) {
        memmove(d, s, n);
    }
}

/* Makes room for len more bytes after b's contents: a pointer to them (b->len
 * is not moved), or NULL. Inline: the bulk paths call it per item. */
static inline unsigned char *room(llll_buf *b, size_t len)
{
    if (b->cap < b->len || b->cap - b->len < len) {
        if (b->len > SIZE_MAX - len || llll_buf_reserve(b, b->len + len) < 0)
            return NULL;
    }
    return (unsigned char *)b->data + b->len;
}

/* Appends len bytes to b. */
static inline int append(llll_buf *b, const void *data, size_t len)
{
    unsigned char *d = room(b, len);
    if (!d)
        return -ENOMEM;
    if (len)
        memcpy(d, data, len);
    b->len += len;
    return 0;
}

/* Ends the reply frame in out (its results already in) and sends it. */
static int send_reply(llll_sbc *ch, llll_buf *out, uint32_t id, uint32_t first, uint32_t count)
{
    unsigned char tail[REPLY_TAIL];
    put32(tail, id);
    put32(tail + 4, first);
    put32(tail + 8, count);
    if (append(out, tail, sizeof tail) < 0)
        return -ENOMEM;
    return llll_sbc_send(ch, out->data, out->len);
}

/* Runs fn on every argument of one request frame and sends the replies. */
static int serve_request(llll_sbc *ch, llll_serve_fn *fn, void *ctx, const llll_buf *req,
                         llll_buf *out, llll_buf *res)
{
    const unsigned char *f = req->data;
    if (req->len < REQ_HEAD)
        return -EPROTO;
    uint32_t id = get32(f), count = get32(f + 8);
    size_t limit = get32(f + 4);
    if (count == 0 || limit < RESULT_TAIL + REPLY_TAIL)
        return -EPROTO;
    size_t pos = REQ_HEAD;
    uint32_t first = 0, nout = 0;
    out->len = 0;
    for (uint32_t j = 0; j < count; j++) {
        if (req->len - pos < ARG_HEAD)
            return -EPROTO;
        size_t len = get32(f + pos);
        pos += ARG_HEAD;
        if (req->len - pos < len)
            return -EPROTO;
        /* The first result of a frame is written in place. */
        llll_buf *dst = nout == 0 ? out : res;
        dst->len = 0;
        int frc = fn(ctx, f + pos, len, dst);
        pos += len;
        if (dst->cap < dst->len)   /* fn grew data without keeping cap */
            dst->cap = dst->len;
        unsigned char tail[RESULT_TAIL] = { frc ? 1 : 0 };
        size_t rlen = dst->len;
        if (rlen > limit - RESULT_TAIL - REPLY_TAIL) {
            tail[0] = 2;
            rlen = 0;
            if (dst == out)
                out->len = 0;
        }
        if (dst == res && out->len + rlen + RESULT_TAIL + REPLY_TAIL > limit) {
            int rc = send_reply(ch, out, id, first, nout);
            if (rc)
                return rc;
            first += nout;
            nout = 0;
            out->len = 0;
        }
        /* One check of room for the result (unless it is in place) and its tail. */
        size_t add = (dst == res ? rlen : 0) + RESULT_TAIL;
        unsigned char *d = room(out, add);
        if (!d)
            return -ENOMEM;
        if (dst == res)
            copy_small(d, res->data, rlen);
        d += add - RESULT_TAIL;
        d[0] = tail[0];
        put32(d + 1, (uint32_t)rlen);
        out->len += add;
        nout++;
    }
    if (pos != req->len)
        return -EPROTO;
    return send_reply(ch, out, id, first, nout);
}

/* Answers requests on ch with fn until the master closes it; bufs (or
 * NULL): the request, reply and result buffers to start with, its own. */
static int serve_channel(llll_sbc *ch, llll_serve_fn *fn, void *ctx, const llll_buf bufs[3])
{
    /* The master bounds its requests; replies are bounded by the limit
     * each request carries. */
    llll_sbc_set_max_frame(ch, FRAME_LIMIT);
    int rc = llll_sbc_send(ch, HELLO, HELLO_LEN);
    llll_buf req = LLLL_BUF_INIT, out = LLLL_BUF_INIT, res = LLLL_BUF_INIT;
    if (bufs) {
        req = bufs[0];
        out = bufs[1];
        res = bufs[2];
    }
    while (rc == 0) {
        rc = llll_sbc_recv(ch, &req, -1);
        if (rc == 0) {
            int64_t t0 = now_ns();
            rc = serve_request(ch, fn, ctx, &req, &out, &res);
            /* The reply woke a master thread, likely onto this CPU, where
             * it would wait behind the next request's work until the
             * scheduler's tick (ms): a map's pump with more work for the
             * other workers, or a caller with its next call. Yielding once
             * lets it run now. After a short request the worker soon blocks
             * in recv anyway, and the yield would only cost a system call. */
            if (rc == 0 && now_ns() - t0 >= YIELD_AFTER_NS)
                sched_yield();
        }
        if (rc == -EPIPE || rc == -ECONNRESET)
            rc = LLLL_EOF;   /* the master went away while fn ran */
    }
    llll_buf_free(&req);
    llll_buf_free(&out);
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
    rc = serve_channel(ch, fn, ctx, NULL);
    llll_sbc_close(ch);
    return rc;
}

/* A forked worker's buffers, reserved by the parent just before the fork,
 * so that the child serves requests of up to WORKER_BUF_BYTES (and results
 * of up to WORKER_RES_BYTES) without allocating: an allocator that is not
 * fork-safe then cannot stop it on a lock another thread held at the fork. */
#define WORKER_BUF_BYTES PIPE_BYTES
#define WORKER_RES_BYTES 4096
struct fork_start {
    llll_pool *p;
    llll_buf bufs[3];   /* request, reply, result */
};

/* Body of a forked worker. */
static int fork_main(llll_sbc *ch, void *arg)
{
    struct fork_start *fs = arg;
    return serve_channel(ch, fs->p->fn, fs->p->ctx, fs->bufs) == 0 ? 0 : 1;
}

/* Forks a worker of p, with its buffers (see struct fork_start). */
static int fork_worker(llll_pool *p, llll_instance **out)
{
    struct fork_start fs = { .p = p };   /* empty buffers */
    int rc = llll_buf_reserve(&fs.bufs[0], WORKER_BUF_BYTES);
    if (rc == 0)
        rc = llll_buf_reserve(&fs.bufs[1], WORKER_BUF_BYTES);
    if (rc == 0)
        rc = llll_buf_reserve(&fs.bufs[2], WORKER_RES_BYTES);
    if (rc == 0)
        rc = llll_instance_fork(out, fork_main, &fs, &p->iopts);
    for (int k = 0; k < 3; k++)   /* the child has its own copies */
        llll_buf_free(&fs.bufs[k]);
    return rc;
}

/* ------------------------------------------------------ worker lifecycle */

static struct host *host_of(llll_pool *p, int slot);

/* Starts slot i's worker without waiting for its hello: on its host,
 * through the host's launcher, if it has one. */
static int launch_worker(llll_pool *p, int i, llll_instance **out)
{
    struct host *h = host_of(p, i);
    if (h && p->starting && h->dropped)
        return -ECANCELED;   /* left out at start */
    if (h && h->argv)
        return llll_instance_start(out, (const char *const *)h->argv, &h->iopts);
    if (p->argv)
        return llll_instance_start(out, (const char *const *)p->argv, &p->iopts);
    return fork_worker(p, out);
}

/* Waits up to timeout_ms (-1: forever) for a worker's hello. */
static int await_hello(llll_pool *p, llll_instance *in, int timeout_ms)
{
    llll_buf b = LLLL_BUF_INIT;
    llll_sbc *ch = llll_instance_channel(in);
    llll_sbc_set_max_frame(ch, 64);   /* a stranger's bytes stay small */
    int rc = llll_sbc_recv(ch, &b, timeout_ms);
    if (rc == 0 && (b.len != HELLO_LEN || memcmp(b.data, HELLO, HELLO_LEN) != 0)) {
        rc = -EPROTO;
        size_t plen = sizeof HELLO_PREFIX - 1;
        if (p->iopts.proc.verbose && b.len > plen && b.len < 32 && memcmp(b.data, HELLO_PREFIX, plen) == 0)
            fprintf(stderr, "llll: a pool worker speaks protocol version %.*s; this library speaks version %d\n",
                    (int)(b.len - plen), (const char *)b.data + plen, PROTOCOL);
    } else if (rc == LLLL_EOF || rc == -EPIPE) {
        rc = -ECONNRESET;
    } else if (rc == -EMSGSIZE) {
        rc = -EPROTO;
    }
    if (rc == 0)   /* our requests: a batch of BATCH_BYTES and one argument more */
        llll_sbc_set_max_frame(ch, p->reply_limit + BATCH_BYTES + 64);
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

/* Wakes the maps' idle pumps: a batch to send, a thread waiting for a
 * worker, or the end. Lock held. */
static void wake_pumps(llll_pool *p)
{
    if (p->idle_pumps)
        pthread_cond_broadcast(&p->pump_cv);
}

static void wl_push(struct wlist *l, struct waiter *w)
{
    w->next = NULL;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
}

static void wl_push_front(struct wlist *l, struct waiter *w)
{
    w->next = l->head;
    l->head = w;
    if (!l->tail)
        l->tail = w;
}

/* Takes w out of l: whether it was there. */
static bool wl_remove(struct wlist *l, struct waiter *w)
{
    struct waiter **pp = &l->head, *prev = NULL;
    while (*pp && *pp != w) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (!*pp)
        return false;
    *pp = w->next;
    if (l->tail == w)
        l->tail = prev;
    return true;
}

/* The pool's queue. Lock held. */
static void enqueue(llll_pool *p, struct waiter *w)
{
    wake_pumps(p);
    w->state = W_WAITING;
    wl_push(&p->q, w);
}

static struct waiter *dequeue(llll_pool *p)
{
    struct waiter *w = p->q.head;
    if (w)
        wl_remove(&p->q, w);
    return w;
}

static void unqueue(llll_pool *p, struct waiter *w)
{
    wl_remove(&p->q, w);
}

/* A slot became DEAD: the oldest waiter looks again (it may replace it, or
 * learn that no worker is left). Lock held. */
static void kick(llll_pool *p)
{
    struct waiter *w = dequeue(p);
    if (w) {
        w->state = W_RETRY;
        sem_post(&w->wake);
    }
}

/* Takes slot i if it is idle. */
static bool take(llll_pool *p, int i)
{
    int idle = SLOT_IDLE;
    if (!atomic_compare_exchange_strong(&p->slots[i].state, &idle, SLOT_BUSY))
        return false;
    atomic_fetch_add_explicit(&p->slots[i].epoch, 1, memory_order_relaxed);
    return true;
}

/* A call in a lane leaves the pool: its last use of p. While free waits,
 * under the lock, so that free goes on only once the lock is let go. (A
 * call that saw no free begin, and leaves as it begins, wakes nobody: free
 * looks again every DRAIN_LOOK_MS.) */
static void fast_leave(llll_pool *p)
{
    if (!atomic_load(&p->closing)) {
        atomic_fetch_sub(&p->fast_inside, 1);
        return;
    }
    lock(p);
    if (atomic_fetch_sub(&p->fast_inside, 1) == 1)
        pthread_cond_broadcast(&p->drain_cv);
    unlock(p);
}

/* A lane's queue (lm held). lane_push returns whether the lane watcher
 * sleeps, or was never started, and must be woken by the caller once it let
 * lm go. */
static bool lane_push(llll_pool *p, struct slot *s, struct waiter *w)
{
    w->state = W_WAITING;
    wl_push(&s->lane, w);
    w->stealable = p->lw_failed;   /* no watcher: any idle worker may take it */
    if (w->stealable)
        atomic_fetch_add(&p->lane_waiting, 1);
    return atomic_fetch_add(&p->lane_queued, 1) == 0 && (atomic_load(&p->lw_asleep) || !p->lw_running);
}

static bool lane_remove(llll_pool *p, struct slot *s, struct waiter *w)
{
    if (!wl_remove(&s->lane, w))
        return false;
    if (w->stealable)
        atomic_fetch_sub(&p->lane_waiting, 1);
    atomic_fetch_sub(&p->lane_queued, 1);
    return true;
}

/* The oldest call queued in s's lane (the oldest stealable one: stealable). */
static struct waiter *lane_pop(llll_pool *p, struct slot *s, bool stealable)
{
    struct waiter *w = s->lane.head;
    while (w && stealable && !w->stealable)
        w = w->next;
    if (w)
        lane_remove(p, s, w);
    return w;
}

/* Ends a lane call that waits (not the caller's own) with state st. */
static void lane_post(struct waiter *w, int st)
{
    w->state = st;
    sem_post(&w->wake);
}

/* The calls queued in slot j's lane go the slow way; with end, the lane has
 * no leader any more (its slot died, the pool closes, its leader failed). */
static void lane_flush(llll_pool *p, int j, bool end)
{
    struct slot *s = &p->slots[j];
    pthread_mutex_lock(&s->lm);
    struct waiter *w;
    while ((w = lane_pop(p, s, false)))
        lane_post(w, W_SLOW);
    if (end)
        s->leading = false;
    pthread_mutex_unlock(&s->lm);
}

static void release(llll_pool *p, int i);

/* Slot j, owned by the caller, goes to the oldest call queued in its lane,
 * which leads it next; else idle, unless a thread seeks a worker (it gets
 * this one, through the lock), or a stealable call waits in another lane (it
 * leads this one). Lock held if locked (the pool's queue is then empty). */
static void let_go(llll_pool *p, int j, bool locked)
{
    struct slot *s = &p->slots[j];
    for (int round = 0; round < 4; round++) {
        pthread_mutex_lock(&s->lm);
        struct waiter *w = p->closing ? NULL : lane_pop(p, s, false);
        if (!w) {
            while (p->closing && (w = lane_pop(p, s, false)))
                lane_post(w, W_SLOW);   /* to learn -ECANCELED */
            s->leading = false;
            s->state = SLOT_IDLE;
        }
        pthread_mutex_unlock(&s->lm);
        if (w) {   /* queued while the lane was still led */
            w->slot = j;
            lane_post(w, W_LEAD);
            return;
        }
        if (!locked && atomic_load(&p->seeking)) {
            if (take(p, j)) {
                lock(p);
                release(p, j);
                unlock(p);
            }
            return;
        }
        if (p->closing || !atomic_load(&p->lane_waiting) || !take(p, j))
            return;
        for (int k = 1; k < p->n && !w; k++) {
            struct slot *o = &p->slots[(j + k) % p->n];
            pthread_mutex_lock(&o->lm);
            w = lane_pop(p, o, true);
            pthread_mutex_unlock(&o->lm);
        }
        if (w) {
            s->leading = true;
            w->slot = j;
            lane_post(w, W_LEAD);
            return;
        }
    }
}

/* The owner of slot i (with a live worker) lets it go: to the oldest thread
 * waiting in the pool's queue; else to the oldest call queued in the slot's
 * lane, which leads it next; else idle. Lock held. */
static void release(llll_pool *p, int i)
{
    struct slot *s = &p->slots[i];
    if (p->closing) {
        lane_flush(p, i, true);
        s->state = SLOT_IDLE;
        return;
    }
    struct waiter *w = dequeue(p);
    if (w) {
        /* A call given a worker leads its lane (llll_pool_call); anything
         * else would hold the lane's calls up: they go the slow way. */
        if (!w->is_call || w->alone || p->call_timeout_ms >= 0)
            lane_flush(p, i, true);
        w->slot = i;
        w->state = W_GRANTED;
        sem_post(&w->wake);
        return;
    }
    let_go(p, i, true);
}

/* ------------------------------------------------------------ hosts */

/* Launches on one host that fail in a row before the host is dropped, and
 * the wait before the next launch after the first failure (doubling, up to
 * the maximum). */
#define HOST_MAX_FAILS 5
#define HOST_BACKOFF_MS 100
#define HOST_BACKOFF_MAX_MS 5000

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
    int total = 0;
    for (size_t i = 0; i < opts->nhosts; i++) {
        const llll_host *h = &opts->hosts[i];
        if (h->slots < 0 || (h->launcher && (!h->launcher[0] || !p->argv || p->iopts.code)))
            return -EINVAL;
        int add = h->slots ? h->slots : 1;
        if (add > INT_MAX - total)   /* over INT_MAX slots */
            return -EINVAL;
        total += add;
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
        /* The launcher is signalled alone, never its group: srun's helper
         * child, in its group, cancels the job when srun dies; killing it
         * too would leave the task running. */
        h->iopts.proc.new_group = false;
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
    if (h->fails == 0 || now_ms() >= h->retry_at)
        return true;
    if (wake && (*wake < 0 || h->retry_at < *wake))
        *wake = h->retry_at;
    return false;
}

/* Waits for a post on sem until wake (ms, CLOCK_MONOTONIC): whether one came
 * (false: the time ran out). */
static bool sem_wait_until(sem_t *sem, int64_t wake)
{
    int64_t left = wake - now_ms();
    if (left <= 0)
        return sem_trywait(sem) == 0;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);   /* sem_timedwait's clock */
    dl.tv_sec += (time_t)(left / 1000);
    dl.tv_nsec += (long)(left % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    int rc;
    while ((rc = sem_timedwait(sem, &dl)) < 0 && errno == EINTR) {
    }
    return rc == 0;
}

/* Leaves host h out of the pool (lock held): its dead slots stay dead. */
static void host_drop(llll_pool *p, struct host *h)
{
    h->dropped = true;
    bump(&p->hosts_dropped, 1);
    /* Every waiting thread looks again: it may have waited for this host's
     * back-off, and may now find no worker left at all. */
    while (p->q.head)
        kick(p);
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
        bump(&p->launch_failures, 1);
        int f = ++h->fails;
        int64_t wait = HOST_BACKOFF_MS;
        while (--f > 0 && wait < HOST_BACKOFF_MAX_MS)
            wait *= 2;
        h->retry_at = now_ms() + (wait < HOST_BACKOFF_MAX_MS ? wait : HOST_BACKOFF_MAX_MS);
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

/* Slot i, owned by the caller, has no worker now: its lane's calls go the
 * slow way, and the oldest waiter looks again. Lock held. */
static void set_dead(llll_pool *p, int i)
{
    p->slots[i].state = SLOT_DEAD;
    lane_flush(p, i, true);
    kick(p);
}

/* Gives slot i, owned by the caller, a new worker; called and returns with
 * the lock held, drops it meanwhile. 0: the slot is owned (BUSY) with a live
 * worker; else the slot is DEAD and no longer the caller's. */
static int respawn(llll_pool *p, int i)
{
    struct slot *s = &p->slots[i];
    s->state = SLOT_SPAWNING;
    unlock(p);
    llll_instance *in;
    int rc = launch_worker(p, i, &in);
    if (rc)
        host_launched(p, i, NULL, rc);
    lock(p);
    if (rc == 0) {
        s->in = in;   /* visible to llll_pool_free, which may shut it down */
        s->ch = llll_instance_channel(in);
        s->next_id = 0;
        rc = p->closing ? -ECANCELED : 0;
        unlock(p);
        if (rc == 0)
            rc = await_hello(p, in, p->start_timeout_ms);
        host_launched(p, i, in, rc);
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
        bump(&p->respawns, 1);
        atomic_fetch_add_explicit(&p->nlive, 1, memory_order_relaxed);
        s->state = SLOT_BUSY;
    } else {
        set_dead(p, i);
    }
    return rc;
}

/* Kills and reaps the worker of slot i (owned by the caller), then replaces
 * it unless the pool says not to. Lock held on entry and exit. 0: the slot
 * is still the caller's, with a new worker; else it is DEAD. */
static int retire(llll_pool *p, int i)
{
    struct slot *s = &p->slots[i];
    llll_instance *in = s->in;
    s->in = NULL;
    s->ch = NULL;
    s->deadline = 0;
    s->expired = false;
    s->state = SLOT_SPAWNING;   /* still ours */
    atomic_fetch_sub_explicit(&p->nlive, 1, memory_order_relaxed);
    unlock(p);
    reap(in);
    lock(p);
    if (p->no_respawn || p->closing || !host_may_launch(p, i, NULL)) {
        set_dead(p, i);
        return p->closing ? -ECANCELED : -ECHILD;
    }
    return respawn(p, i);
}

/* Takes a worker: 0 with *slot owned, 1 when another thread ran the call
 * (w->rc; the lock is then not held, and the call left the pool), or an
 * error. Lock held on entry and (but for 1) on exit. */
static int acquire_locked(llll_pool *p, struct waiter *w, int *slot)
{
    for (;;) {
        if (p->closing)
            return -ECANCELED;
        if (!p->q.head) {
            int h = hint.pool_id == p->id ? hint.slot : -1;
            if (h >= 0 && h < p->n && take(p, h)) {
                *slot = h;
                return 0;
            }
        }
        int dead = -1, alive = 0;
        int64_t wake = -1;   /* when a host's back-off ends */
        for (int k = 0; k < p->n; k++) {
            int i = (p->cursor + k) % p->n;
            enum slot_state st = p->slots[i].state;
            if (st == SLOT_IDLE && !p->q.head && take(p, i)) {
                p->cursor = (i + 1) % p->n;
                *slot = i;
                return 0;
            }
            if (st == SLOT_DEAD && dead < 0 && host_may_launch(p, i, &wake))
                dead = i;
            else if (st != SLOT_DEAD)
                alive++;
        }
        if (dead >= 0 && !p->no_respawn) {
            int rc = respawn(p, dead);
            if (rc == 0)
                *slot = dead;
            /* A host's failed launch fails the caller only when no worker
             * is left: else it waits for those (the host now backs off). */
            if (rc == 0 || rc == -ECANCELED || !host_of(p, dead) || alive == 0 || p->closing)
                return rc;
            continue;
        }
        if (alive == 0 && (wake < 0 || p->no_respawn))
            return -ECHILD;
        /* Sleep without the lock: a thread that runs our call for us
         * posts when it is done, and we return without taking the lock (it
         * left the pool for us), so a finished call costs one wake-up. Only
         * slots whose host is backing off after a failed launch: sleep until
         * the first back-off ends at most, then look again. */
        enqueue(p, w);
        for (;;) {
            unlock(p);
            if (wake >= 0 && !p->no_respawn && !sem_wait_until(&w->wake, wake)) {
                lock(p);
                if (w->state == W_WAITING) {   /* nobody posted, nor will */
                    unqueue(p, w);
                    break;
                }
                wake = -1;   /* a post came, or comes when our call is run;
                                the loop's top lets the lock go */
                continue;
            }
            if (wake < 0 || p->no_respawn) {
                while (sem_wait(&w->wake) < 0 && errno == EINTR) {
                }
            }
            if (w->state == W_DONE)
                return 1;
            lock(p);
            if (w->state == W_GRANTED) {
                *slot = w->slot;
                return 0;
            }
            if (w->state == W_RETRY)
                break;
            if (w->state == W_WAITING && p->closing) {
                unqueue(p, w);
                return -ECANCELED;
            }
        }
    }
}

/* acquire_locked, counted in seeking: a lane's call that lets a worker go
 * while a thread looks for one, or waits for one, takes the lock to give it
 * to that thread. The seeker counts itself before it looks, and
 * the call looks at seeking after the worker went idle, so one of the two
 * sees the other. */
static int acquire(llll_pool *p, struct waiter *w, int *slot)
{
    atomic_fetch_add(&p->seeking, 1);
    int rc = acquire_locked(p, w, slot);
    if (rc != 1)   /* 1: the thread that ran the call did, with its leave */
        atomic_fetch_sub(&p->seeking, 1);
    return rc;
}

/* Sets the deadline of slot i: call_timeout_ms from now, plus extra_ms (the
 * time a batch's other items are expected to take). Lock held. */
static void arm(llll_pool *p, int i, int64_t extra_ms)
{
    if (p->call_timeout_ms < 0)
        return;
    int64_t d = now_ms() + p->call_timeout_ms + extra_ms;
    p->slots[i].deadline = d;
    if (p->wd_waiting || d < p->wd_next)
        pthread_cond_signal(&p->wd_cv);
}

/* Clears the deadline; true when the watchdog killed the worker. Lock held. */
static bool disarm(llll_pool *p, int i)
{
    bool expired = p->slots[i].expired;
    p->slots[i].deadline = 0;
    p->slots[i].expired = false;
    return expired;
}

/* Kills every worker past its deadline, so that whatever its owner waits for
 * (a send to a worker that does not read, or a reply) ends. */
static void *watchdog(void *arg)
{
    llll_pool *p = arg;
    lock(p);
    while (!p->closing) {
        int64_t now = now_ms(), next = 0;
        for (int i = 0; i < p->n; i++) {
            struct slot *s = &p->slots[i];
            if (!s->deadline)
                continue;
            if (s->deadline <= now && s->in) {
                llll_instance_kill(s->in, SIGKILL);
                s->expired = true;
                s->deadline = 0;
            } else if (!next || s->deadline < next) {
                next = s->deadline;
            }
        }
        p->wd_next = next;
        if (!next) {
            p->wd_waiting = true;
            pthread_cond_wait(&p->wd_cv, &p->mu);
            p->wd_waiting = false;
        } else {
            struct timespec ts = ts_of_ms(next);
            pthread_cond_timedwait(&p->wd_cv, &p->mu, &ts);
        }
    }
    unlock(p);
    return NULL;
}

/* ------------------------------------------------------------------ calls */

/* How an exchange with a worker ended. */
enum fate {
    FT_OK,        /* the worker answered: rc is 0, -EREMOTEIO or -EMSGSIZE */
    FT_LOCAL,     /* nothing was sent (-ENOMEM here): the worker is fine */
    FT_UNSENT,    /* the worker died before it read the request */
    FT_DIED,      /* the worker died, or was killed, after it read it */
    FT_BAD,       /* a malformed or mismatched reply: -EPROTO */
    FT_MIDFRAME   /* a failure here (-ENOMEM, -EMSGSIZE) left a reply half read */
};

#define AGAIN 1  /* call_on: the worker died unread and its slot is gone: take another */

/* The fate of a failed send or receive on a worker's channel. */
static enum fate io_fate(int rc)
{
    /* A unix stream socket reads ECONNRESET only when the peer closed with
     * data unread: the worker died before it read our request whole, so fn
     * never ran on it (one that died in fn, having read it, gives EOF). */
    if (rc == -ECONNRESET)
        return FT_UNSENT;
    if (rc == -ENOMEM || rc == -EMSGSIZE)
        return FT_MIDFRAME;
    return FT_DIED;
}

/* Puts a request frame's head into f. */
static void put_request_head(unsigned char *f, uint32_t id, size_t limit, uint32_t count)
{
    put32(f, id);
    put32(f + 4, (uint32_t)limit);
    put32(f + 8, count);
}

/* Reads the tail of a reply frame of len bytes: its id, first and count. */
static bool reply_tail(const unsigned char *f, size_t len, uint32_t *id, uint32_t *first, uint32_t *count)
{
    if (len < REPLY_TAIL)
        return false;
    *id = get32(f + len - 12);
    *first = get32(f + len - 8);
    *count = get32(f + len - 4);
    return *count > 0;
}

/* Reads the result that ends at *end (moved to its start): its status as a
 * return code, *off and *len. false when it does not parse. */
static bool result_before(const llll_pool *p, const unsigned char *f, size_t *end, int *rc, size_t *off, uint32_t *len)
{
    if (*end < RESULT_TAIL)
        return false;
    uint32_t n = get32(f + *end - 4);
    unsigned status = f[*end - 5];
    if (status > 2 || n > *end - RESULT_TAIL || n > p->max_frame || (status == 2 && n))
        return false;
    *rc = status == 0 ? 0 : status == 1 ? -EREMOTEIO : -EMSGSIZE;
    *len = n;
    *off = *end - RESULT_TAIL - n;
    *end = *off;
    return true;
}

/* One call's request and reply on slot s, whose owner we are. */
static int exchange(llll_pool *p, struct slot *s, const void *arg, size_t len, llll_buf *result, enum fate *fate)
{
    *fate = FT_LOCAL;
    if (llll_buf_reserve(&s->tx, REQ_HEAD + ARG_HEAD + len) < 0)
        return -ENOMEM;
    unsigned char *f = s->tx.data;
    uint32_t id = ++s->next_id;
    put_request_head(f, id, p->reply_limit, 1);
    put32(f + REQ_HEAD, (uint32_t)len);
    if (len)
        memcpy(f + REQ_HEAD + ARG_HEAD, arg, len);
    s->tx.len = REQ_HEAD + ARG_HEAD + len;
    int rc = llll_sbc_send(s->ch, s->tx.data, s->tx.len);
    if (rc) {
        *fate = FT_UNSENT;
        return rc;
    }
    rc = llll_sbc_recv(s->ch, result, -1);
    if (rc) {
        *fate = io_fate(rc);
        return rc;
    }
    *fate = FT_BAD;
    uint32_t rid, first, count, rlen;
    size_t end = result->len - (result->len >= REPLY_TAIL ? REPLY_TAIL : 0), off;
    if (!reply_tail(result->data, result->len, &rid, &first, &count) || rid != id || first || count != 1 ||
        !result_before(p, result->data, &end, &rc, &off, &rlen) || off != 0)
        return -EPROTO;
    *fate = FT_OK;
    result->len = rc == -EMSGSIZE ? 0 : rlen;
    return rc;
}

/* An exchange made in a lane, which failed. */
struct done {
    int rc;
    enum fate fate;
};

/* Runs one call on slot i, which the caller owns; lock held on entry and
 * exit (dropped meanwhile). Returns its outcome, or AGAIN; *owned tells
 * whether slot i is still the caller's, with a live worker. A request that
 * its worker never read goes to the worker's replacement. With pre, the
 * first exchange was made already, with that outcome. */
static int call_on(llll_pool *p, int i, const void *arg, size_t len, llll_buf *result, bool *owned,
                   const struct done *pre)
{
    *owned = true;
    for (int attempt = 1;; attempt++) {
        struct slot *s = &p->slots[i];
        enum fate fate;
        int rc;
        if (pre && attempt == 1) {
            rc = pre->rc;
            fate = pre->fate;
        } else {
            arm(p, i, 0);
            unlock(p);
            rc = exchange(p, s, arg, len, result, &fate);
            lock(p);
        }
        bool expired = disarm(p, i);
        if (fate == FT_OK) {
            bump(&p->calls, 1);
            if (rc == -EREMOTEIO)
                bump(&p->failures, 1);
            if (expired)   /* killed as it answered: the answer stands */
                *owned = retire(p, i) == 0;
            return rc;
        }
        result->len = 0;
        if (p->closing)
            return -ECANCELED;   /* free reaps the worker itself */
        if (fate == FT_LOCAL)
            return rc;
        if (expired) {
            bump(&p->timeouts, 1);
            *owned = retire(p, i) == 0;
            return -ETIMEDOUT;
        }
        if (fate == FT_BAD)
            bump(&p->protocol_errors, 1);
        if (fate == FT_BAD || fate == FT_MIDFRAME) {
            *owned = retire(p, i) == 0;
            return rc;
        }
        bool again = fate == FT_UNSENT && attempt < SEND_ATTEMPTS;
        *owned = retire(p, i) == 0;
        if (again && *owned)
            continue;
        if (again)
            return AGAIN;
        bump(&p->crashes, 1);
        return -ECONNRESET;
    }
}

/* A call or map leaves the pool. Lock held. */
static void leave(llll_pool *p)
{
    if (--p->inside == 0 && p->closing)
        pthread_cond_broadcast(&p->drain_cv);
}

/* The owner of slot i runs calls waiting in the queue, oldest first, up to
 * DELEGATE_MAX, waking each caller with its outcome, then lets the slot go
 * (to the next waiter). Lock held. */
/* Ends queued call w with rc and wakes its caller; the caller's own call
 * (self) only gets its rc. Lock held. */
static void finish_call(llll_pool *p, struct waiter *w, int rc, const struct waiter *self)
{
    w->rc = rc;
    if (w == self)
        return;
    if (rc != AGAIN) {   /* for its caller, which returns without touching p */
        atomic_fetch_sub(&p->seeking, 1);
        leave(p);
    }
    w->state = rc == AGAIN ? W_RETRY : W_DONE;
    sem_post(&w->wake);
}

/* Builds the request frame of the m calls ws[] in slot s's tx (emptying
 * their results): its request id, or 0 when out of memory. */
static uint32_t batch_frame(const llll_pool *p, struct slot *s, struct waiter **ws, uint32_t m)
{
    size_t need = REQ_HEAD;
    for (uint32_t k = 0; k < m; k++)
        need += ARG_HEAD + ws[k]->len;
    if (llll_buf_reserve(&s->tx, need) < 0)
        return 0;
    unsigned char *f = s->tx.data;
    uint32_t id = ++s->next_id;
    if (!id)
        id = ++s->next_id;
    put_request_head(f, id, p->reply_limit, m);
    size_t pos = REQ_HEAD;
    for (uint32_t k = 0; k < m; k++) {
        ws[k]->result->len = 0;
        put32(f + pos, (uint32_t)ws[k]->len);
        if (ws[k]->len)
            memcpy(f + pos + ARG_HEAD, ws[k]->arg, ws[k]->len);
        pos += ARG_HEAD + ws[k]->len;
    }
    s->tx.len = pos;
    return id;
}

/* Sends slot s's tx frame (request id) and reads the replies to its m calls
 * ws[], filing each call's result and rc; lock not held. *got calls were
 * answered, *failures of them with -EREMOTEIO. Returns 0 when all were, else
 * the error that ended the exchange, *fate telling how. */
static int batch_io(const llll_pool *p, struct slot *s, struct waiter **ws, uint32_t m, uint32_t id,
                    uint32_t *got, uint32_t *failures, enum fate *fate)
{
    *got = *failures = 0;
    *fate = FT_UNSENT;
    int rc = llll_sbc_send(s->ch, s->tx.data, s->tx.len);
    while (rc == 0 && *got < m) {
        *fate = FT_DIED;
        rc = llll_sbc_recv(s->ch, &s->rx, -1);
        if (rc) {
            *fate = io_fate(rc);
            break;
        }
        uint32_t rid, first, count, len;
        size_t end = s->rx.len - (s->rx.len >= REPLY_TAIL ? REPLY_TAIL : 0), off;
        *fate = FT_BAD;
        rc = -EPROTO;
        if (!reply_tail(s->rx.data, s->rx.len, &rid, &first, &count) || rid != id || first != *got ||
            count > m - *got)
            break;
        /* Results are read from the end: check them all before using any. */
        size_t e = end;
        int item_rc;
        uint32_t j;
        for (j = 0; j < count && result_before(p, s->rx.data, &e, &item_rc, &off, &len); j++) {
        }
        if (j < count || e != 0)
            break;
        for (j = count; j-- > 0;) {
            result_before(p, s->rx.data, &end, &item_rc, &off, &len);
            struct waiter *w = ws[first + j];
            if (item_rc != -EMSGSIZE && llll_buf_set(w->result, (char *)s->rx.data + off, len) < 0)
                item_rc = -ENOMEM;
            w->rc = item_rc;
            *failures += item_rc == -EREMOTEIO;
        }
        *got += count;
        rc = 0;
        *fate = FT_OK;
    }
    return rc;
}

/* Ends call w of a frame with rc: a call from a lane (lane) is posted at
 * once, one from the pool's queue through finish_call. Lock held. */
static void end_call(llll_pool *p, struct waiter *w, int rc, const struct waiter *self, bool lane)
{
    if (!lane || w == self) {
        finish_call(p, w, rc, self);
    } else {
        w->rc = rc;
        lane_post(w, W_DONE);
    }
}

/* After batch_io of the m calls ws[] on slot i (owned by the caller): counts
 * and wakes the answered calls; when the worker failed, the calls it did not
 * answer run again, each alone (so only a call that kills a worker alone
 * fails for it): from the front of the pool's queue, or the slow way for
 * the calls of a lane (lane); self (ws[0], or NULL), which is not posted,
 * then gets AGAIN. Lock held. Returns whether slot i is still the caller's. */
static bool batch_end(llll_pool *p, int i, struct waiter **ws, uint32_t m, struct waiter *self,
                      uint32_t got, uint32_t failures, enum fate fate, int rc, bool lane)
{
    bool expired = disarm(p, i);
    bump(&p->calls, got);
    bump(&p->failures, failures);
    for (uint32_t k = 0; k < got; k++)
        end_call(p, ws[k], ws[k]->rc, self, lane);
    if (got == m) {
        if (expired)
            return retire(p, i) == 0;
        return true;
    }
    if (p->closing) {
        for (uint32_t k = got; k < m; k++)
            end_call(p, ws[k], -ECANCELED, self, lane);
        return true;
    }
    if (fate == FT_BAD)
        bump(&p->protocol_errors, 1);
    if (fate == FT_BAD || (fate == FT_MIDFRAME && !expired)) {
        for (uint32_t k = got; k < m; k++)
            end_call(p, ws[k], rc, self, lane);
    } else {
        for (uint32_t k = m; k-- > got;) {
            if (ws[k] == self) {
                self->rc = AGAIN;
                continue;
            }
            ws[k]->alone = true;
            if (lane) {
                lane_post(ws[k], W_SLOW);
            } else {
                ws[k]->state = W_WAITING;
                wl_push_front(&p->q, ws[k]);
            }
        }
    }
    return retire(p, i) == 0;
}

/* Runs the m calls ws[] together on slot i, owned by the caller: one
 * request frame, their results copied to their callers. ws[0] may be the
 * caller's own call (self), which is not posted. Lock held on entry and
 * exit. Returns whether slot i is still the caller's. */
static bool combine_on(llll_pool *p, int i, struct waiter **ws, uint32_t m, struct waiter *self)
{
    struct slot *s = &p->slots[i];
    uint32_t id = batch_frame(p, s, ws, m);
    if (!id) {
        for (uint32_t k = 0; k < m; k++)
            finish_call(p, ws[k], -ENOMEM, self);
        return true;
    }
    arm(p, i, 0);   /* only without call_timeout_ms are calls run together */
    unlock(p);
    uint32_t got, failures;
    enum fate fate;
    int rc = batch_io(p, s, ws, m, id, &got, &failures, &fate);
    lock(p);
    return batch_end(p, i, ws, m, self, got, failures, fate, rc, false);
}

/* The owner of slot i runs calls waiting in the queue, oldest first (up to
 * COMBINE_MAX of them in one frame, DELEGATE_MAX frames), waking each caller
 * with its outcome, then lets the slot go (to the next waiter). Lock held. */
static void serve_queue_and_release(llll_pool *p, int i)
{
    struct waiter *ws[COMBINE_MAX];
    for (int k = 0; k < DELEGATE_MAX && !p->closing && p->q.head && p->q.head->is_call; k++) {
        uint32_t m = 0;
        if (!p->q.head->alone && p->call_timeout_ms < 0) {
            size_t bytes = 0;
            while (m < COMBINE_MAX && p->q.head && p->q.head->is_call && !p->q.head->alone &&
                   (m == 0 || bytes + p->q.head->len <= BATCH_BYTES)) {
                bytes += p->q.head->len;
                ws[m] = dequeue(p);
                ws[m++]->state = W_RUNNING;
            }
        }
        bool owned;
        if (m > 1) {
            owned = combine_on(p, i, ws, m, NULL);
        } else {
            struct waiter *w = m ? ws[0] : dequeue(p);
            if (!w)
                break;
            w->state = W_RUNNING;
            finish_call(p, w, call_on(p, i, w->arg, w->len, w->result, &owned, NULL), NULL);
        }
        if (!owned)
            return;
    }
    release(p, i);
}

/* Runs the caller's own call w on slot i, which it owns: with the calls
 * waiting in the queue in one frame, if there are any (a frame's round trip
 * then serves them all), else alone. Lock held. Returns as call_on. */
static int run_own(llll_pool *p, int i, struct waiter *w, bool *owned)
{
    struct waiter *ws[COMBINE_MAX];
    uint32_t m = 0;
    size_t bytes = w->len;
    ws[m++] = w;
    while (m < COMBINE_MAX && !w->alone && p->call_timeout_ms < 0 && !p->closing && p->q.head && p->q.head->is_call &&
           !p->q.head->alone && bytes + p->q.head->len <= BATCH_BYTES) {
        bytes += p->q.head->len;
        ws[m] = dequeue(p);
        ws[m++]->state = W_RUNNING;
    }
    if (m == 1)
        return call_on(p, i, w->arg, w->len, w->result, owned, NULL);
    *owned = combine_on(p, i, ws, m, w);
    if (w->rc != AGAIN || !*owned)
        return w->rc;
    return call_on(p, i, w->arg, w->len, w->result, owned, NULL);   /* alone, now */
}

/* ------------------------------------------------------------ the lanes */

/* Lanes by CPU. A thread's lane is the worker it used last, so that the
 * callers of one worker stay together and the scheduler can keep each group
 * on a CPU. For short calls the scheduler's placement decides the speed (a
 * call whose thread and worker run on different CPUs waits for wake-ups
 * across them, at worst a tick behind a busy task). So while lane calls are
 * short and more of them are in flight than there are workers (both running
 * means, so that a thread does not switch lanes call by call), a call takes
 * the lane of the CPU its thread runs on instead: the groups follow the
 * scheduler rather than wait for it to follow them. That needs a lane per
 * CPU: the thread starting the pool may run on no more CPUs than the pool
 * has workers (its affinity, which its threads and workers inherit), all
 * local. Slow calls keep their threads' lanes, which spread the threads
 * evenly over the workers whichever CPU they run on. */
static void cpu_lanes_new(llll_pool *p)
{
    for (int h = 0; h < p->nhosts; h++)
        if (p->hosts[h].argv)
            return;   /* a remote worker's CPU is not ours */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set))
        return;
    int count = CPU_COUNT(&set), top = 0;
    if (count < 2 || count > p->n)
        return;
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            top = c + 1;
    p->cpu_lane = malloc((size_t)top * sizeof *p->cpu_lane);
    if (!p->cpu_lane)
        return;   /* lanes by thread only */
    int16_t rank = 0;
    for (int c = 0; c < top; c++)
        p->cpu_lane[c] = CPU_ISSET(c, &set) ? rank++ : -1;
    p->ncpu_lane = top;
    p->call_ns = SHORT_CALL_NS;   /* not short until calls show it */
}

/* Moves the running mean *m an eighth of the way to x; returns it. Racing
 * threads may lose a step, which a mean can afford. A steady mean is not
 * written, so that its cache line stays shared. */
static uint32_t mean8(_Atomic uint32_t *m, uint32_t x)
{
    uint32_t mean = atomic_load_explicit(m, memory_order_relaxed);
    uint32_t next = mean - mean / 8 + x / 8;
    if (next != mean)
        atomic_store_explicit(m, next, memory_order_relaxed);
    return next;
}

/* Whether the running mean of lane calls in flight (crowd, x16) is over the
 * number of workers. */
static bool crowd_over(const llll_pool *p, uint32_t crowd)
{
    return crowd > 16u * (uint32_t)p->n;
}

/* The caller's lane call goes on the slow way, counted in inside. Lock held. */
static void slow_down(llll_pool *p)
{
    p->inside++;
    atomic_fetch_sub(&p->fast_inside, 1);
}

/* The leader of slot j's lane is done: threads seeking a worker (a map, a
 * call that found no lane) come first, through the lock; else the oldest
 * call queued leads next; else the slot is let go. */
static void lane_end(llll_pool *p, int j)
{
    if (atomic_load(&p->seeking)) {
        lock(p);
        serve_queue_and_release(p, j);
        unlock(p);
        return;
    }
    let_go(p, j, false);
}

enum lane {
    LANE_NO,      /* not taken: the slow way, from the start */
    LANE_DONE,    /* the call ran: *rc */
    LANE_FAILED,  /* the exchange on slot *slot (owned) failed as *pre says */
    LANE_OWNED,   /* slot *slot ended a frame with *rc (AGAIN: run alone); *owned */
    LANE_RETRY    /* the slow way, from acquire */
};
/* (LANE_FAILED, LANE_OWNED and LANE_RETRY: lock held, the call counted in
 * inside.) */

/* The caller leads slot j's lane (the slot is its): runs its own call and
 * the calls queued in the lane in one frame, posts their callers, then
 * hands the lane on. */
static enum lane lead(llll_pool *p, int j, struct waiter *self, int *rc, int *slot, struct done *pre, bool *owned)
{
    struct slot *s = &p->slots[j];
    hint.pool_id = p->id;
    hint.slot = j;
    atomic_fetch_add_explicit(&s->epoch, 1, memory_order_relaxed);   /* the lane moves */
    struct waiter *ws[COMBINE_MAX];
    uint32_t m = 0;
    size_t bytes = self->len;
    ws[m++] = self;
    pthread_mutex_lock(&s->lm);
    while (m < COMBINE_MAX && s->lane.head && bytes + s->lane.head->len <= BATCH_BYTES) {
        bytes += s->lane.head->len;
        ws[m++] = lane_pop(p, s, false);
    }
    pthread_mutex_unlock(&s->lm);
    /* timed only while lanes may go by CPU */
    bool timed = p->cpu_lane && crowd_over(p, atomic_load_explicit(&p->crowd, memory_order_relaxed));
    int64_t t0 = timed ? now_ns() : 0;
    int r;
    if (m == 1) {
        r = exchange(p, s, self->arg, self->len, self->result, &pre->fate);
        if (pre->fate != FT_OK) {
            lock(p);
            lane_flush(p, j, true);
            slow_down(p);
            pre->rc = r;
            *slot = j;
            return LANE_FAILED;
        }
        bump(&p->calls, 1);
        bump(&p->failures, r == -EREMOTEIO);
    } else {
        uint32_t id = batch_frame(p, s, ws, m), got = 0, failures = 0;
        enum fate fate = FT_OK;
        int e = id ? batch_io(p, s, ws, m, id, &got, &failures, &fate) : 0;
        if (e) {   /* the worker failed: not every call was answered */
            lock(p);
            lane_flush(p, j, true);
            slow_down(p);
            *owned = batch_end(p, j, ws, m, self, got, failures, fate, e, true);
            *rc = self->rc;
            *slot = j;
            return LANE_OWNED;
        }
        bump(&p->calls, got);
        bump(&p->failures, failures);
        for (uint32_t k = 1; k < m; k++) {
            if (!id)
                ws[k]->rc = -ENOMEM;   /* nothing was sent: the worker is fine */
            lane_post(ws[k], W_DONE);
        }
        r = id ? self->rc : -ENOMEM;
    }
    if (timed) {
        /* per call; one held up by the scheduler for ms moves the mean by
         * at most a quarter of SHORT_CALL_NS */
        int64_t ns = (now_ns() - t0) / m;
        mean8(&p->call_ns, ns < 2 * SHORT_CALL_NS ? (uint32_t)ns : 2 * SHORT_CALL_NS);
    }
    lane_end(p, j);
    fast_leave(p);
    *rc = r;
    return LANE_DONE;
}

/* A call queued in a lane waits for its outcome, or to lead, or to go the
 * slow way. */
static enum lane lane_wait(llll_pool *p, struct waiter *w, int *rc, int *slot, struct done *pre, bool *owned)
{
    for (;;) {
        while (sem_wait(&w->wake) < 0 && errno == EINTR) {
        }
        int st = w->state;
        if (st == W_DONE) {
            *rc = w->rc;
            fast_leave(p);
            return LANE_DONE;
        }
        if (st == W_LEAD)
            return lead(p, w->slot, w, rc, slot, pre, owned);
        if (st == W_SLOW) {
            lock(p);
            if (p->closing) {
                unlock(p);
                fast_leave(p);
                *rc = -ECANCELED;
                return LANE_DONE;
            }
            slow_down(p);
            return LANE_RETRY;
        }
    }
}

/* How often the lane watcher looks, while calls are queued in the lanes. A
 * call queued in a lane waits for its own worker, even while another is
 * idle: the callers of one worker stay together, and the scheduler keeps
 * each group on a CPU of its own. The watcher moves the calls of a lane
 * whose worker has run one frame for a whole period (a long call), or all
 * of them when a worker stayed idle for a whole period, to the idle workers. */
#define LANE_WATCH_MS 10

static void *lane_watch(void *arg)
{
    llll_pool *p = arg;
    lock(p);
    while (!p->closing) {
        if (!atomic_load(&p->lane_queued)) {
            p->lw_asleep = true;
            if (!atomic_load(&p->lane_queued) && !p->closing)
                pthread_cond_wait(&p->lw_cv, &p->mu);
            p->lw_asleep = false;
        } else {
            struct timespec ts = ts_of_ms(now_ms() + LANE_WATCH_MS);
            pthread_cond_timedwait(&p->lw_cv, &p->mu, &ts);
        }
        if (p->closing)
            break;
        bool idled = false;
        for (int k = 0; k < p->n; k++) {
            struct slot *s = &p->slots[k];
            bool idle = s->state == SLOT_IDLE;
            idled |= idle && s->seen_idle && atomic_load(&s->epoch) == s->seen_epoch;
        }
        for (int k = 0; k < p->n; k++) {
            struct slot *s = &p->slots[k];
            unsigned e = atomic_load(&s->epoch);
            bool stuck = e == s->seen_epoch;
            if (stuck && p->nlive < p->n) {
                lane_flush(p, k, false);   /* the slow way replaces a dead worker */
            } else if (idled || stuck) {
                pthread_mutex_lock(&s->lm);
                for (struct waiter *w = s->lane.head; w; w = w->next) {
                    if (!w->stealable) {
                        w->stealable = true;
                        atomic_fetch_add(&p->lane_waiting, 1);
                    }
                }
                pthread_mutex_unlock(&s->lm);
            }
            s->seen_epoch = e;
            s->seen_idle = s->state == SLOT_IDLE;
        }
        for (int k = 0; k < p->n && atomic_load(&p->lane_waiting); k++)
            if (take(p, k))
                release(p, k);
    }
    unlock(p);
    return NULL;
}

/* Starts the lane watcher, with every signal blocked; without it, calls
 * queued in a lane may go to any idle worker at once. Lock held. */
static void lane_watch_start(llll_pool *p)
{
    if (p->lw_running || p->lw_failed || p->closing)
        return;
    int rc = thread_start(&p->lw, lane_watch, p);
    p->lw_running = rc == 0;
    p->lw_failed = rc != 0;
}

/* Where a call goes, from the worker its thread used last (h) on: a worker
 * it took idle (*took), else h's lane when a call leads it (not another
 * idle worker: the callers of one worker stay together), else, when h is
 * not a lane's, any idle worker, else any led lane; -1: none. */
static int lane_pick(llll_pool *p, int h, bool *took)
{
    int n = p->n;
    bool seek = atomic_load(&p->seeking);   /* threads in the pool's queue come first */
    *took = true;
    if (!seek && take(p, h))
        return h;
    bool led = p->slots[h].leading;
    for (int k = 1; k < n && !led && !seek; k++)
        if (take(p, (h + k) % n))
            return (h + k) % n;
    *took = false;
    for (int k = 0; k < n; k++)
        if (p->slots[(h + k) % n].leading)
            return (h + k) % n;
    return -1;
}

/* A call that went by CPU leaves the thread's own lane, mine, as it was (of
 * the pool with this id: e may have left the pool, p is not to be read). */
static enum lane kept(uint64_t id, bool by_cpu, int mine, enum lane e)
{
    if (by_cpu) {
        hint.pool_id = id;
        hint.slot = mine;
    }
    return e;
}

/* The lanes: a call on a pool without call_timeout_ms takes the worker its
 * thread used last when it is idle, with one compare-and-swap, and leads its
 * lane; when that worker is busy with a call, it queues in its lane, and the
 * lane's leader runs it with the others queued, in one frame. A thread with
 * no worker of its own takes an idle one. No pool lock is taken: threads
 * calling different workers never meet, and the callers of one worker share
 * frames. */
static enum lane call_fast(llll_pool *p, struct waiter *w, int *rc, int *slot, struct done *pre, bool *owned)
{
    /* free sets closing, then shuts the busy workers' channels down, then
     * waits for fast_inside: a call counted before it took its worker sees
     * closing, or has its channel shut down. LANE_NO leaves it counted. */
    int inside = atomic_fetch_add(&p->fast_inside, 1) + 1;
    if (p->call_timeout_ms >= 0)
        return LANE_NO;
    int n = p->n;
    uint64_t id = p->id;
    bool own = hint.pool_id == id;   /* else it only takes an idle worker */
    int h = own ? hint.slot : (int)(atomic_fetch_add(&p->lane_cursor, 1) % (unsigned)n);
    int mine = h;   /* the thread's own lane, kept for when calls are slow */
    if (p->cpu_lane && crowd_over(p, mean8(&p->crowd, 16u * (uint32_t)(inside < 1024 ? inside : 1024))) &&
        atomic_load_explicit(&p->call_ns, memory_order_relaxed) < SHORT_CALL_NS) {
        int c = sched_getcpu();
        if (c >= 0 && c < p->ncpu_lane && p->cpu_lane[c] >= 0)
            h = p->cpu_lane[c];
    }
    for (int round = 0; round < 2 && !p->closing; round++) {
        bool took;
        int q = lane_pick(p, h, &took);
        if (q < 0)
            break;
        struct slot *s = &p->slots[q];
        if (took) {
            pthread_mutex_lock(&s->lm);
            s->leading = true;
            pthread_mutex_unlock(&s->lm);
            if (!p->closing)
                return kept(id, h != mine, mine, lead(p, q, w, rc, slot, pre, owned));
            lane_flush(p, q, true);
            s->state = SLOT_IDLE;
            break;
        }
        /* A dead worker is replaced by a thread that finds none idle: the
         * slow way does that. */
        if (!own || atomic_load_explicit(&p->nlive, memory_order_relaxed) < n)
            break;
        pthread_mutex_lock(&s->lm);
        bool queued = s->leading && !p->closing, wake = false;
        if (queued)
            wake = lane_push(p, s, w);
        pthread_mutex_unlock(&s->lm);
        if (!queued)
            continue;
        if (wake) {
            lock(p);
            lane_watch_start(p);
            pthread_cond_signal(&p->lw_cv);
            unlock(p);
        }
        return kept(id, h != mine, mine, lane_wait(p, w, rc, slot, pre, owned));
    }
    return LANE_NO;
}

int llll_pool_call(llll_pool *p, const void *arg, size_t len, llll_buf *result)
{
    if (!p || !result || (!arg && len))
        return -EINVAL;
    result->len = 0;
    if (len > p->max_frame)
        return -EMSGSIZE;
    struct waiter w = { .is_call = true, .arg = arg, .len = len, .result = result };
    sem_init(&w.wake, 0, 0);
    int rc = -ECANCELED, i = -1;
    struct done pre;
    bool owned = false;
    enum lane lane = call_fast(p, &w, &rc, &i, &pre, &owned);
    if (lane == LANE_DONE) {
        sem_destroy(&w.wake);
        return rc;
    }
    if (lane == LANE_NO) {
        lock(p);
        slow_down(p);
        if (p->closing) {
            leave(p);
            unlock(p);
            sem_destroy(&w.wake);
            return -ECANCELED;
        }
    }
    for (;;) {
        if (lane == LANE_FAILED) {
            rc = call_on(p, i, arg, len, result, &owned, &pre);
        } else if (lane == LANE_OWNED) {
            if (rc == AGAIN && owned)   /* its worker died in a shared frame: alone, now */
                rc = call_on(p, i, arg, len, result, &owned, NULL);
            else if (rc == AGAIN)
                w.alone = true;
        } else {
            rc = acquire(p, &w, &i);
            if (rc == 1) {   /* run by another thread; we are out of the pool */
                sem_destroy(&w.wake);
                return w.rc;
            }
            if (rc) {
                /* A replacement cut short by free fails with the error it met
                 * (EOF on the shut channel...): the caller is owed -ECANCELED. */
                if (p->closing)
                    rc = -ECANCELED;
                break;
            }
            if (p->call_timeout_ms < 0 && !w.alone && !p->closing && !(p->q.head && p->q.head->is_call)) {
                /* Given a worker, a call leads its lane: calls that find
                 * every worker busy queue there, not in the pool's queue
                 * (unless calls wait there: they go with this one). */
                struct slot *s = &p->slots[i];
                pthread_mutex_lock(&s->lm);
                s->leading = true;
                pthread_mutex_unlock(&s->lm);
                atomic_fetch_add(&p->fast_inside, 1);
                p->inside--;
                unlock(p);
                lane = lead(p, i, &w, &rc, &i, &pre, &owned);
                if (lane == LANE_DONE) {
                    sem_destroy(&w.wake);
                    return rc;
                }
                continue;
            }
            rc = run_own(p, i, &w, &owned);
        }
        lane = LANE_NO;
        if (rc == AGAIN)
            continue;
        if (owned) {
            hint.pool_id = p->id;
            hint.slot = i;
            serve_queue_and_release(p, i);
        }
        break;
    }
    leave(p);
    unlock(p);
    sem_destroy(&w.wake);
    return rc;
}

/* ------------------------------------------------------------------ maps */

/*
 * The calling thread (the map's thread) fetches arguments in index order into
 * batches, hands them to one pump thread per worker it holds, and delivers
 * the results in index order. A pump sends batches to its worker (up to two
 * in flight while they are small, so the worker never waits for a round
 * trip) and files the replies into their batches. Everything below is
 * guarded by the pool's mutex.
 */

struct outcome {
    int rc;
    uint32_t len;
    size_t off;                  /* in the batch's res */
};

struct batch {
    struct batch *next;          /* in the send queue, or in flight on a pump */
    struct batch *wnext;         /* in the window, by index */
    struct batch *all;           /* every batch of the map, to free them */
    struct batch *parent;        /* a retry: the batch its item belongs to */
    uint32_t pidx;               /* a retry: the item's index in parent */
    size_t first;                /* index of the first item */
    uint32_t n, got;             /* items; items with an outcome */
    uint32_t id;                 /* request id while in flight */
    int attempts;                /* a retry: workers that died before reading it */
    bool retry, done;
    int64_t t_head;              /* ns: since when it is the oldest in flight */
    llll_buf req;                /* the request frame, kept for retries */
    llll_buf res;                /* result bytes */
    struct outcome *out;         /* n of them */
    size_t out_cap;
};

struct map;

/* A pump thread drives one worker for a map. It outlives the map: parked in
 * its pool between maps (on cv, until a map hands it a worker), so that a
 * map of a few items costs no thread start; llll_pool_free joins it. At
 * most one per worker: a pump is made only when a map takes a worker and
 * none is parked. */
struct pump {
    llll_pool *p;
    struct map *m;               /* NULL: parked */
    struct pump *next;           /* in m's pumps, or in the pool's parked list */
    struct pump *all;            /* every pump of the pool, to join them */
    pthread_t th;
    pthread_cond_t cv;           /* parked: a map or the end */
    int slot;                    /* -1: its worker died and was not replaced */
    struct batch *head, *tail;   /* in flight, oldest first */
    int nflight;
    size_t flight_bytes, flight_items;
    bool leave;                  /* send nothing more; let the worker go once drained */
    llll_buf rx;
};

struct map {
    llll_pool *p;
    pthread_cond_t cv;           /* the map's thread waits here */
    struct batch *sq_head, *sq_tail;  /* to send, retries first */
    size_t sq_len, sq_items;
    size_t left;                 /* items not fetched yet (SIZE_MAX: a stream) */
    struct batch *w_head, *w_tail;    /* built and not delivered, by index */
    size_t w_len, w_items;
    struct batch *all, *free_list;
    struct pump *pumps;          /* the pumps driving a worker for this map */
    int npumps;                  /* how many */
    bool stop;                   /* send nothing more: drain, then end */
    int error;                   /* a pool-level error, the first one */
    double cost_ns;              /* per item, smoothed; 0: not known yet */
    size_t k;                    /* items per batch now */
    bool ramp;                   /* k still doubling towards its target */
    size_t fixed;                /* opts->batch */
    bool big_pending;            /* the item before next is over max_frame */
};

static void map_fail(struct map *m, int rc)
{
    if (!m->error)
        m->error = rc;
    m->stop = true;
    wake_pumps(m->p);
    pthread_cond_signal(&m->cv);
}

/* A batch from the free list, or a new one (NULL: no memory). */
static struct batch *batch_get(struct map *m)
{
    struct batch *b = m->free_list;
    if (b) {
        m->free_list = b->next;
    } else {
        b = calloc(1, sizeof *b);
        if (!b)
            return NULL;
        b->all = m->all;
        m->all = b;
    }
    b->next = b->wnext = b->parent = NULL;
    b->n = b->got = 0;
    b->attempts = 0;
    b->retry = b->done = false;
    b->req.len = b->res.len = 0;
    return b;
}

static void batch_put(struct map *m, struct batch *b)
{
    b->next = m->free_list;
    m->free_list = b;
}

static int batch_outs(struct batch *b, size_t n)
{
    if (n <= b->out_cap)
        return 0;
    struct outcome *o = realloc(b->out, n * sizeof *o);
    if (!o)
        return -ENOMEM;
    b->out = o;
    b->out_cap = n;
    return 0;
}

static void sq_push(struct map *m, struct batch *b, bool front)
{
    if (front) {
        b->next = m->sq_head;
        m->sq_head = b;
        if (!m->sq_tail)
            m->sq_tail = b;
    } else {
        b->next = NULL;
        if (m->sq_tail)
            m->sq_tail->next = b;
        else
            m->sq_head = b;
        m->sq_tail = b;
    }
    m->sq_len++;
    m->sq_items += b->n;
    wake_pumps(m->p);
}

/* Whether work is sent ahead by time: items of AHEAD_ITEM_NS or more, whose
 * batch size stopped growing (a batch of few items, whose buffers stay small). */
static bool ahead_by_time(const struct map *m)
{
    return m->cost_ns >= AHEAD_ITEM_NS && !m->ramp;
}

/* How many batches the send queue may hold: one per pump and one more; when
 * ahead_by_time, AHEAD_NS of work per pump, up to AHEAD_BATCHES per pump;
 * AHEAD_BATCHES per worker while the items' cost is not known, or the batch
 * size still ramps (small batches, so that the pumps of the first items'
 * workers have the next ones while the map's thread waits for a CPU). */
static size_t sq_room(const struct map *m)
{
    size_t np = (size_t)m->npumps, base = np + 1, most = AHEAD_BATCHES * np;
    if (m->cost_ns <= 0 || m->ramp)
        return AHEAD_BATCHES * (size_t)m->p->n;
    if (!ahead_by_time(m))
        return base;
    double ahead = AHEAD_NS * (double)np / ((double)m->k * m->cost_ns);
    return ahead <= (double)base ? base : ahead >= (double)most ? most : (size_t)ahead;
}

static struct batch *sq_pop(struct map *m)
{
    struct batch *b = m->sq_head;
    m->sq_head = b->next;
    if (!m->sq_head)
        m->sq_tail = NULL;
    m->sq_len--;
    m->sq_items -= b->n;
    b->next = NULL;
    return b;
}

/* count more results of b are in. Once it has them all, and it is the next
 * batch to deliver (results go out in index order), the map's thread is
 * woken. Lock held. */
static void batch_got(struct map *m, struct batch *b, uint32_t count)
{
    b->got += count;
    if (b->got == b->n) {
        b->done = true;
        if (b == m->w_head)
            pthread_cond_signal(&m->cv);
    }
}

/* Records the outcome of item j of b (a retry: of its item in the parent). */
static void settle(struct map *m, struct batch *b, uint32_t j, int rc, const void *data, uint32_t len)
{
    if (b->retry) {
        struct batch *pb = b->parent;
        struct outcome *o = &pb->out[b->pidx];
        o->rc = rc;
        o->len = 0;
        o->off = pb->res.len;
        if (append(&pb->res, data, len) == 0)
            o->len = len;
        else
            map_fail(m, -ENOMEM);
        b->got = 1;
        b = pb;
    } else {
        b->out[j].rc = rc;
        b->out[j].len = 0;
    }
    batch_got(m, b, 1);
}

/* A batch of item j of b alone, at the front of the send queue. */
static int queue_retry(struct map *m, struct batch *b, uint32_t j)
{
    const unsigned char *f = b->req.data;
    size_t pos = REQ_HEAD;
    for (uint32_t k = 0; k < j; k++)
        pos += ARG_HEAD + get32(f + pos);
    size_t len = get32(f + pos);
    struct batch *r = batch_get(m);
    if (!r || llll_buf_reserve(&r->req, REQ_HEAD + ARG_HEAD + len) < 0) {
        if (r)
            batch_put(m, r);
        return -ENOMEM;
    }
    memcpy((char *)r->req.data + REQ_HEAD, f + pos, ARG_HEAD + len);
    put_request_head(r->req.data, 0, m->p->reply_limit, 1);
    r->req.len = REQ_HEAD + ARG_HEAD + len;
    r->retry = true;
    r->parent = b;
    r->pidx = j;
    r->n = 1;
    r->first = b->first + j;
    sq_push(m, r, true);
    return 0;
}

/* A batch answers within call_timeout_ms plus twice the time its items are
 * expected to take (from the items seen so far): a hung item holds a worker
 * for about call_timeout_ms, whatever the batch size; when the expectation
 * was wrong, the items are retried alone, each within call_timeout_ms. */
static int64_t batch_extra_ms(const struct map *m, const struct batch *b)
{
    return (int64_t)(2.0 * m->cost_ns * b->n / 1e6);
}

/* Whether pump u may send the batch at the head of the send queue now: a
 * retry goes to a worker with nothing in flight and nothing follows it;
 * frames are pipelined only while they are small (so that a worker writing
 * a large reply never waits for us to read while we wait to write), two of
 * them, or when ahead_by_time up to PIPE_FRAMES holding less than PIPE_NS of
 * work; not for items of several milliseconds, and not once what is left of
 * a map of known length would keep the workers busy for less than PIPE_NS. */
static bool can_send(struct map *m, struct pump *u)
{
    struct batch *b = m->sq_head;
    if (m->stop || u->leave || u->slot < 0 || !b)
        return false;
    if (u->nflight == 0)
        return true;
    bool slow = m->k == 1 && m->cost_ns >= SLOW_ITEM_NS;
    if (slow || b->retry || u->head->retry || u->flight_bytes + b->req.len > PIPE_BYTES)
        return false;
    if (m->cost_ns <= 0)
        return u->nflight < 2;
    /* Near the end, a frame waits for the first worker free rather than
     * queue behind one still busy. */
    if (m->left != SIZE_MAX && (double)(m->left + m->sq_items) * m->cost_ns < PIPE_NS * m->npumps)
        return false;
    return u->nflight < 2 || (u->nflight < PIPE_FRAMES && ahead_by_time(m) &&
                              (double)u->flight_items * m->cost_ns < PIPE_NS);
}

/* The worker of pump u failed (fate, rc): every item it had not answered is
 * retried alone, except in a retry, which gets the error. Lock held. */
static void pump_failed(struct pump *u, enum fate fate, int rc)
{
    struct map *m = u->m;
    llll_pool *p = m->p;
    bool expired = disarm(p, u->slot);
    struct batch *list = u->head;
    u->head = u->tail = NULL;
    u->nflight = 0;
    u->flight_bytes = 0;
    u->flight_items = 0;
    if (p->closing) {
        map_fail(m, -ECANCELED);
        return;   /* the worker stays ours until we leave; free reaps it */
    }
    int item_rc;   /* what an item that fails here gets */
    if (expired) {
        item_rc = -ETIMEDOUT;
    } else if (fate == FT_BAD) {
        bump(&p->protocol_errors, 1);
        item_rc = -EPROTO;
    } else if (fate == FT_MIDFRAME) {
        item_rc = rc;
    } else {
        item_rc = -ECONNRESET;
    }
    if (fate == FT_MIDFRAME && rc == -ENOMEM)
        map_fail(m, -ENOMEM);
    if (retire(p, u->slot) != 0)
        u->slot = -1;
    /* Retries go to the front in reverse, so they leave in index order. */
    struct batch *rev = NULL;
    while (list) {
        struct batch *b = list;
        list = b->next;
        b->next = rev;
        rev = b;
    }
    while (rev) {
        struct batch *b = rev;
        rev = b->next;
        if (m->stop) {
            if (b->retry)
                batch_put(m, b);
            continue;
        }
        if (b->retry) {
            if (item_rc == -ECONNRESET && fate == FT_UNSENT && ++b->attempts < SEND_ATTEMPTS) {
                sq_push(m, b, true);
                continue;
            }
            if (item_rc == -ETIMEDOUT)
                bump(&p->timeouts, 1);
            else if (item_rc == -ECONNRESET)
                bump(&p->crashes, 1);
            settle(m, b, 0, item_rc, NULL, 0);
            batch_put(m, b);
        } else if (item_rc == -EPROTO || fate == FT_MIDFRAME) {
            while (b->got < b->n)
                settle(m, b, b->got, item_rc, NULL, 0);
        } else {
            for (uint32_t j = b->n; j-- > b->got;)
                if (queue_retry(m, b, j) < 0)
                    map_fail(m, -ENOMEM);
        }
    }
    pthread_cond_signal(&m->cv);
}

/* Files the reply in u->rx into the oldest batch in flight. Lock held. */
static void take_reply(struct pump *u)
{
    struct map *m = u->m;
    llll_pool *p = m->p;
    struct batch *b = u->head;
    const unsigned char *f = u->rx.data;
    uint32_t id, first, count;
    if (!reply_tail(f, u->rx.len, &id, &first, &count) || id != b->id || first != b->got ||
        count > b->n - b->got) {
        pump_failed(u, FT_BAD, -EPROTO);
        return;
    }
    size_t end = u->rx.len - REPLY_TAIL;
    uint32_t failures = 0;
    if (b->retry) {
        int rc;
        size_t off;
        uint32_t len;
        if (!result_before(p, f, &end, &rc, &off, &len) || end != 0) {
            pump_failed(u, FT_BAD, -EPROTO);
            return;
        }
        failures = rc == -EREMOTEIO;
        settle(m, b, 0, rc, f + off, len);
    } else {
        for (uint32_t j = count; j-- > 0;) {
            struct outcome *o = &b->out[first + j];
            uint32_t len;
            if (!result_before(p, f, &end, &o->rc, &o->off, &len)) {
                pump_failed(u, FT_BAD, -EPROTO);
                return;
            }
            o->len = len;
            failures += o->rc == -EREMOTEIO;
        }
        if (end != 0) {
            pump_failed(u, FT_BAD, -EPROTO);
            return;
        }
        if (b->res.len == 0) {   /* the usual case: the reply becomes the results */
            llll_buf t = b->res;
            b->res = u->rx;
            u->rx = t;
        } else {
            size_t base = b->res.len;
            if (append(&b->res, f, u->rx.len - REPLY_TAIL) < 0) {
                pump_failed(u, FT_MIDFRAME, -ENOMEM);
                return;
            }
            for (uint32_t j = 0; j < count; j++)
                b->out[first + j].off += base;
        }
        batch_got(m, b, count);
    }
    bump(&p->calls, count);
    bump(&p->failures, failures);
    if (b->got < b->n)
        return;
    /* b is complete: the next one in flight is now the oldest. */
    u->head = b->next;
    if (!u->head)
        u->tail = NULL;
    u->nflight--;
    u->flight_bytes -= b->req.len;
    u->flight_items -= b->n;
    int64_t t = now_ns();
    /* Per item: smoothed while items get cheaper, at once when dearer, so
     * that a run of slow items shrinks the batches right away. */
    double c = (double)(t - b->t_head) / b->n;
    m->cost_ns = m->cost_ns > 0 && c < m->cost_ns ? (m->cost_ns + c) / 2 : c;
    if (!m->fixed) {
        double want = BATCH_TARGET_NS / (m->cost_ns > 1 ? m->cost_ns : 1);
        size_t k = want < 1 ? 1 : want > BATCH_MAX ? BATCH_MAX : (size_t)want;
        m->ramp = k > m->k * 2;
        m->k = m->ramp ? m->k * 2 : k;
    }
    if (b->retry)
        batch_put(m, b);
    if (u->head) {
        u->head->t_head = t;
        arm(p, u->slot, batch_extra_ms(m, u->head));
    } else {
        disarm(p, u->slot);
    }
}

/* Drives the worker of pump u for its map until the map ends or lets the
 * worker go, then lets it go. Lock held. */
static void pump_drive(struct pump *u)
{
    struct map *m = u->m;
    llll_pool *p = m->p;
    for (;;) {
        if (can_send(m, u)) {
            struct batch *b = sq_pop(m);
            /* Room for more batches: the map's thread is woken once the
             * queue is half empty, to fill it in one go, not per batch. */
            if (2 * m->sq_len < sq_room(m))
                pthread_cond_signal(&m->cv);
            struct slot *s = &p->slots[u->slot];
            b->id = ++s->next_id;
            put32(b->req.data, b->id);
            b->next = NULL;
            if (u->tail)
                u->tail->next = b;
            else
                u->head = b;
            u->tail = b;
            u->nflight++;
            u->flight_bytes += b->req.len;
            u->flight_items += b->n;
            if (u->nflight == 1) {
                b->t_head = now_ns();
                arm(p, u->slot, batch_extra_ms(m, b));
            }
            llll_sbc *ch = s->ch;
            unlock(p);
            int rc = llll_sbc_send(ch, b->req.data, b->req.len);
            lock(p);
            if (rc)
                pump_failed(u, FT_UNSENT, rc);
            continue;
        }
        if (u->nflight) {
            llll_sbc *ch = p->slots[u->slot].ch;
            unlock(p);
            int rc = llll_sbc_recv(ch, &u->rx, -1);
            lock(p);
            if (rc)
                pump_failed(u, io_fate(rc), rc);
            else
                take_reply(u);
            continue;
        }
        if (m->stop || u->leave || u->slot < 0)
            break;
        /* Idle: a thread waiting for a worker gets this one (it may be
         * a callback of this very map, calling the pool). Once every item
         * was sent, the worker goes too, without waiting for the map's
         * thread to end the map (it starts a pump again for a retry). */
        if (p->q.head || (m->left == 0 && !m->big_pending && !m->sq_head))
            break;
        p->idle_pumps++;
        pthread_cond_wait(&p->pump_cv, &p->mu);
        p->idle_pumps--;
    }
    if (u->slot >= 0) {
        disarm(p, u->slot);
        release(p, u->slot);
    }
}

/* A parked pump keeps a receive buffer up to this size for the next map. */
#define PARKED_RX_KEEP (1 << 20)

/* A pump thread: drives a worker for each map that hands it one, parked in
 * between, until llll_pool_free. */
static void *pump_main(void *arg)
{
    struct pump *u = arg;
    llll_pool *p = u->p;
    lock(p);
    for (;;) {
        while (!u->m && !p->pumps_end)
            pthread_cond_wait(&u->cv, &p->mu);
        if (!u->m)
            break;
        pump_drive(u);
        struct map *m = u->m;
        struct pump **pp = &m->pumps;
        while (*pp != u)
            pp = &(*pp)->next;
        *pp = u->next;
        if (u->rx.cap > PARKED_RX_KEEP)
            llll_buf_free(&u->rx);
        u->m = NULL;
        u->next = p->parked;
        p->parked = u;
        m->npumps--;
        pthread_cond_signal(&m->cv);   /* m may be gone once the lock is let go */
    }
    unlock(p);
    return NULL;
}

/* Hands slot i, owned by the caller, to a parked pump, or to a new one.
 * Lock held. */
static int pump_start(struct map *m, int i)
{
    llll_pool *p = m->p;
    struct pump *u = p->parked;
    if (u) {
        p->parked = u->next;
    } else {
        u = calloc(1, sizeof *u);
        if (!u)
            return -ENOMEM;
        pthread_cond_init(&u->cv, NULL);
        u->p = p;   /* its map is set below, before it can take the lock */
        int rc = thread_start(&u->th, pump_main, u);
        if (rc) {
            pthread_cond_destroy(&u->cv);
            free(u);
            return -rc;
        }
        u->all = p->pumps;
        p->pumps = u;
    }
    u->m = m;
    u->slot = i;
    u->head = u->tail = NULL;
    u->nflight = 0;
    u->flight_bytes = u->flight_items = 0;
    u->leave = false;
    u->next = m->pumps;
    m->pumps = u;
    m->npumps++;
    pthread_cond_signal(&u->cv);
    return 0;
}

/* Ends the parked pumps and frees every pump: no map runs. */
static void pumps_join(llll_pool *p)
{
    lock(p);
    p->pumps_end = true;
    for (struct pump *u = p->parked; u; u = u->next)
        pthread_cond_signal(&u->cv);
    unlock(p);
    while (p->pumps) {
        struct pump *u = p->pumps;
        p->pumps = u->all;
        pthread_join(u->th, NULL);
        pthread_cond_destroy(&u->cv);
        llll_buf_free(&u->rx);
        free(u);
    }
}

/* An idle worker for a map, without waiting: its slot, or -1. Lock held. */
static int take_idle(llll_pool *p)
{
    if (p->q.head || p->closing)
        return -1;
    for (int i = 0; i < p->n; i++)
        if (take(p, i))
            return i;
    return -1;
}

/* Fetches the arguments of the next batch into b, from *next on. 0, or the
 * value that ends the input (LLLL_EOF) or stops the map. An argument over
 * max_frame is never sent: it fails alone with -EMSGSIZE, in a batch of its
 * own (the next one, when others came before it). Lock not held. */
static int fill_batch(struct map *m, struct batch *b, size_t n, size_t *next, size_t k,
                      llll_arg_fn *argfn, void *ctx, llll_buf *arg)
{
    llll_pool *p = m->p;
    if (batch_outs(b, k) < 0 || llll_buf_reserve(&b->req, REQ_HEAD) < 0)
        return -ENOMEM;
    if (m->big_pending) {
        m->big_pending = false;
        b->first = *next - 1;
        b->out[0].rc = -EMSGSIZE;
        b->out[0].len = 0;
        b->n = b->got = 1;
        b->done = true;
        return 0;
    }
    b->first = *next;
    b->req.len = REQ_HEAD;
    int rc = 0;
    while (b->n < k && *next < n && b->req.len < BATCH_BYTES) {
        arg->len = 0;
        rc = argfn(ctx, *next, arg);
        if (rc)
            break;
        ++*next;
        if (arg->len > p->max_frame) {
            m->big_pending = true;
            if (b->n > 0)
                break;
            return fill_batch(m, b, n, next, k, argfn, ctx, arg);
        }
        unsigned char *d = room(&b->req, ARG_HEAD + arg->len);
        if (!d)
            return -ENOMEM;
        put32(d, (uint32_t)arg->len);
        copy_small(d + ARG_HEAD, arg->data, arg->len);
        b->req.len += ARG_HEAD + arg->len;
        b->n++;
    }
    put_request_head(b->req.data, 0, p->reply_limit, b->n);
    return rc;
}

static void map_stop(struct map *m)
{
    m->stop = true;
    wake_pumps(m->p);
}

/* Calls result for every item of b, in index order: 0 or its first non-zero
 * value. Lock not held. */
static int deliver(const struct batch *b, llll_result_fn *resfn, void *ctx)
{
    for (uint32_t j = 0; j < b->n; j++) {
        const struct outcome *o = &b->out[j];
        const char *data = o->len ? (const char *)b->res.data + o->off : "";
        int rc = resfn(ctx, b->first + j, o->rc, data, o->len);
        if (rc)
            return rc;
    }
    return 0;
}

/* Lets one of the map's workers go to a thread waiting for one, as long as
 * the map keeps one. Lock held. */
static void share(struct map *m)
{
    if (!m->p->q.head)
        return;
    struct pump *spare = NULL;
    int active = 0;
    for (struct pump *u = m->pumps; u; u = u->next) {
        if (!u->leave && u->slot >= 0) {
            active++;
            spare = u;
        }
    }
    if (active >= 2) {
        spare->leave = true;
        wake_pumps(m->p);
    }
}

/* The map's thread: fetches, hands out and delivers until the end. Returns
 * the value that stopped it, or 0. Lock held. */
static int map_loop(struct map *m, size_t n, llll_arg_fn *argfn, llll_result_fn *resfn, void *ctx,
                    struct waiter *w, llll_buf *arg)
{
    llll_pool *p = m->p;
    size_t next = 0, nw = (size_t)p->n;
    bool input_done = false;
    int ret = 0;
    for (;;) {
        if (p->closing && !m->stop)
            map_fail(m, -ECANCELED);
        if (m->stop)
            return ret;
        struct batch *b = m->w_head;
        if (b && b->done) {
            m->w_head = b->wnext;
            if (!m->w_head)
                m->w_tail = NULL;
            m->w_len--;
            m->w_items -= b->n;
            unlock(p);
            ret = deliver(b, resfn, ctx);
            lock(p);
            batch_put(m, b);
            if (ret)
                map_stop(m);
            continue;
        }
        bool more = (!input_done && next < n) || m->big_pending;
        if (!more && !b)
            return 0;
        if (m->npumps == 0) {
            int i, rc = acquire(p, w, &i);
            if (rc == 0 && (rc = pump_start(m, i)) != 0)
                release(p, i);
            if (rc)
                map_fail(m, p->closing ? -ECANCELED : rc);
            continue;
        }
        if (more && m->w_len < WINDOW_BATCHES * nw && m->w_items < WINDOW_ITEMS * nw &&
            m->sq_len < sq_room(m)) {
            b = batch_get(m);
            if (!b) {
                map_fail(m, -ENOMEM);
                continue;
            }
            size_t k = m->k;
            if (!m->fixed && n != SIZE_MAX) {
                /* Near the end, batches small enough for every worker. */
                size_t g = (n - next) / (2 * (size_t)p->n);
                k = g < 1 ? 1 : k > g ? g : k;
            }
            unlock(p);
            int rc = fill_batch(m, b, n, &next, k, argfn, ctx, arg);
            lock(p);
            if (rc == LLLL_EOF) {
                input_done = true;
                rc = 0;
            }
            m->left = input_done ? 0 : n == SIZE_MAX ? SIZE_MAX : n - next;
            if (b->n == 0) {
                batch_put(m, b);
            } else {
                if (m->w_tail)
                    m->w_tail->wnext = b;
                else
                    m->w_head = b;
                m->w_tail = b;
                m->w_len++;
                m->w_items += b->n;
                if (!b->done)
                    sq_push(m, b, false);
            }
            if (rc) {
                ret = rc;
                map_stop(m);
            }
            continue;
        }
        if (m->sq_len > 0 && m->npumps < p->n) {
            int i = take_idle(p);
            if (i >= 0) {
                if (pump_start(m, i) == 0)
                    continue;
                release(p, i);   /* no thread for it: do with the pumps we have */
            }
        }
        share(m);
        pthread_cond_wait(&m->cv, &p->mu);
    }
}

int llll_pool_map(llll_pool *p, size_t n, llll_arg_fn *argfn, llll_result_fn *resfn, void *ctx,
                  const llll_pool_map_opts *opts)
{
    if (!p || !argfn || !resfn)
        return -EINVAL;
    if (n == 0)
        return 0;
    struct map m = { .p = p, .k = 1, .left = n, .fixed = opts ? opts->batch : 0 };
    if (m.fixed)
        m.k = m.fixed > BATCH_MAX ? BATCH_MAX : m.fixed;
    struct waiter w = { .is_call = false };
    llll_buf arg = LLLL_BUF_INIT;
    pthread_cond_init(&m.cv, NULL);
    sem_init(&w.wake, 0, 0);
    lock(p);
    int ret = -ECANCELED;
    if (!p->closing) {
        p->inside++;
        ret = map_loop(&m, n, argfn, resfn, ctx, &w, &arg);
        map_stop(&m);
        while (m.npumps > 0)
            pthread_cond_wait(&m.cv, &p->mu);
        leave(p);
        if (!ret)
            ret = m.error;
    }
    unlock(p);
    while (m.all) {
        struct batch *b = m.all;
        m.all = b->all;
        llll_buf_free(&b->req);
        llll_buf_free(&b->res);
        free(b->out);
        free(b);
    }
    llll_buf_free(&arg);
    pthread_cond_destroy(&m.cv);
    sem_destroy(&w.wake);
    return ret;
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
    for (int i = 0; p->slots && i < p->n; i++) {
        llll_buf_free(&p->slots[i].tx);
        llll_buf_free(&p->slots[i].rx);
        pthread_mutex_destroy(&p->slots[i].lm);
    }
    free(p->slots);
    free(p->cpu_lane);
    hosts_free(p);
    pthread_cond_destroy(&p->wd_cv);
    pthread_cond_destroy(&p->lw_cv);
    pthread_cond_destroy(&p->pump_cv);
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

/* Starts the watchdog thread, with every signal blocked. */
static int watchdog_start(llll_pool *p)
{
    int rc = thread_start(&p->wd, watchdog, p);
    p->wd_running = rc == 0;
    return -rc;
}

static int pool_new(llll_pool **out, const char *const argv[], llll_serve_fn *fn, void *ctx,
                    int nproc, const llll_pool_opts *opts)
{
    static const llll_pool_opts defaults;
    if (!opts)
        opts = &defaults;
    if (nproc < 0 || opts->call_timeout_ms < -1 || opts->start_timeout_ms < -1)
        return -EINVAL;
    if (nproc == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nproc = c > 0 ? (int)c : 1;
    }
    llll_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->pump_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* deadlines: the watchdog's, free's looks */
    pthread_cond_init(&p->drain_cv, &ca);
    pthread_cond_init(&p->wd_cv, &ca);
    pthread_cond_init(&p->lw_cv, &ca);
    pthread_condattr_destroy(&ca);
    p->id = atomic_fetch_add(&next_pool_id, 1);
    p->n = nproc;
    p->fn = fn;
    p->ctx = ctx;
    p->call_timeout_ms = opts->call_timeout_ms > 0 ? opts->call_timeout_ms : -1;
    p->start_timeout_ms = opts->start_timeout_ms ? opts->start_timeout_ms : START_TIMEOUT_MS;
    p->no_respawn = opts->no_respawn;
    p->max_frame = opts->max_frame ? opts->max_frame : LLLL_SBC_MAX_FRAME_DEFAULT;
    if (p->max_frame > MAX_FRAME_LIMIT)
        p->max_frame = MAX_FRAME_LIMIT;
    p->reply_limit = p->max_frame + RESULT_TAIL + REPLY_TAIL;
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
        for (int i = 0; !oom && i < nproc; i++)
            pthread_mutex_init(&p->slots[i].lm, NULL);
        if (!oom)
            cpu_lanes_new(p);
    }
    if (oom || rc) {
        destroy(p);
        return oom ? -ENOMEM : rc;
    }
    p->drop_failed_hosts = opts->drop_failed_hosts;
    p->starting = true;

    /* Start them all, then collect the hellos: they initialise in parallel. */
    for (int i = 0; i < nproc && rc == 0; i++) {
        rc = launch_worker(p, i, &p->slots[i].in);
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
        rc = await_hello(p, p->slots[i].in, left);
        if (rc)
            rc = host_start_failed(p, i, rc);
    }
    int live = 0;
    for (int i = 0; i < nproc; i++) {
        live += p->slots[i].in != NULL;
        if (!p->slots[i].in)
            p->slots[i].state = SLOT_DEAD;   /* its host was left out */
    }
    if (rc == 0 && live == 0)
        rc = p->start_error;   /* every host was left out */
    if (rc == 0 && p->call_timeout_ms > 0)
        rc = watchdog_start(p);
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
    out->protocol_errors = atomic_load_explicit(&p->protocol_errors, memory_order_relaxed);
    out->launch_failures = atomic_load_explicit(&p->launch_failures, memory_order_relaxed);
    out->hosts_dropped = atomic_load_explicit(&p->hosts_dropped, memory_order_relaxed);
}

void llll_pool_free(llll_pool *p)
{
    if (!p)
        return;
    lock(p);
    p->closing = true;
    for (struct waiter *w = p->q.head; w; w = w->next)
        sem_post(&w->wake);
    wake_pumps(p);
    pthread_cond_signal(&p->wd_cv);
    pthread_cond_signal(&p->lw_cv);
    /* Wake the threads blocked on a worker; the slot stays theirs until they
     * notice, so its instance is not freed under them. Calls queued in a
     * lane learn -ECANCELED; a call that takes an idle worker after this
     * sees closing, or finds its channel shut down. */
    for (int i = 0; i < p->n; i++) {
        lane_flush(p, i, false);
        if (p->slots[i].state != SLOT_IDLE && p->slots[i].ch)
            llll_sbc_shutdown(p->slots[i].ch);
    }
    while (p->inside > 0 || atomic_load(&p->fast_inside) > 0) {
        struct timespec t = ts_of_ms(now_ms() + DRAIN_LOOK_MS);
        pthread_cond_timedwait(&p->drain_cv, &p->mu, &t);
    }
    unlock(p);
    if (p->wd_running)
        pthread_join(p->wd, NULL);
    if (p->lw_running)
        pthread_join(p->lw, NULL);
    pumps_join(p);
    reap_all(p);
    destroy(p);
}
