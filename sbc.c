/* sbc.c - framed channels (llll_sbc) and caller-owned buffers (llll_buf).
 *
 * A frame is a 4-byte big-endian length and that many bytes. A send is one
 * writev of header and payload under a send mutex; a receive reads through a
 * per-channel buffer under a receive mutex, so a header and a small body
 * usually arrive with one read, while a large body goes straight into the
 * caller's llll_buf. A frame cut short by a timeout stays in the channel and
 * the next receive completes it.
 */
#define _GNU_SOURCE
#include "llll.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define RBUF_SIZE ((size_t)64 << 10)
/* Socket buffers of a few MiB: 2.4-3x faster on large frames. */
#define PAIR_SOCKBUF (4 << 20)

struct llll_sbc {
    int rfd, wfd;
    bool wsock;                 /* wfd is a socket: sendmsg + MSG_NOSIGNAL */
    bool rsock;                 /* rfd is a socket (for shutdown) */
    _Atomic size_t max;
    pthread_mutex_t smu;        /* one sender at a time */
    pthread_mutex_t rmu;        /* one receiver at a time; guards all below */
    size_t rpos, rend;          /* unread bytes of rbuf */
    unsigned char hdr[4];
    size_t hgot;                /* header bytes of the current frame, 0..4 */
    size_t body_got;            /* body bytes received of the current frame */
    unsigned char *pend;        /* those body bytes, kept across a timeout */
    int lost;                   /* they could not be kept: every recv fails */
    unsigned char rbuf[];       /* RBUF_SIZE */
};

void llll_buf_free(llll_buf *b)
{
    if (!b)
        return;
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

/* Copies n bytes from s to d, which may overlap: a few bytes (an item of a
 * bulk map, say) without a call to memmove. */
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

int llll_buf_reserve(llll_buf *b, size_t need)
{
    if (!b)
        return -EINVAL;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap < 64 ? 64 : b->cap;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    void *p = realloc(b->data, cap);
    if (!p)
        return -ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int llll_buf_set(llll_buf *b, const void *data, size_t len)
{
    if (!b || (!data && len > 0))
        return -EINVAL;
    if (len > b->cap) {
        int rc = llll_buf_reserve(b, len);
        if (rc < 0)
            return rc;
    }
    copy_small(b->data, data, len);
    b->len = len;
    return 0;
}

/* -------------------------------------------------------------- open/close */

static void close_fds(int rfd, int wfd)
{
    if (rfd >= 0)
        close(rfd);
    if (wfd >= 0 && wfd != rfd)
        close(wfd);
}

static bool is_socket(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

int llll_sbc_open(llll_sbc **out, int rfd, int wfd)
{
    if (!out) {
        close_fds(rfd, wfd);
        return -EINVAL;
    }
    *out = NULL;
    if (rfd < 0 || wfd < 0 || fcntl(rfd, F_GETFD) < 0 || fcntl(wfd, F_GETFD) < 0) {
        /* Close the one that is open (a bad fd is not ours to close). */
        close_fds(rfd >= 0 && fcntl(rfd, F_GETFD) >= 0 ? rfd : -1,
                  wfd >= 0 && fcntl(wfd, F_GETFD) >= 0 ? wfd : -1);
        return -EBADF;
    }
    llll_sbc *ch = calloc(1, sizeof *ch + RBUF_SIZE);
    if (!ch) {
        close_fds(rfd, wfd);
        return -ENOMEM;
    }
    ch->rfd = rfd;
    ch->wfd = wfd;
    ch->rsock = is_socket(rfd);
    ch->wsock = wfd == rfd ? ch->rsock : is_socket(wfd);
    atomic_init(&ch->max, LLLL_SBC_MAX_FRAME_DEFAULT);
    int rc = pthread_mutex_init(&ch->smu, NULL);
    if (rc == 0) {
        rc = pthread_mutex_init(&ch->rmu, NULL);
        if (rc != 0)
            pthread_mutex_destroy(&ch->smu);
    }
    if (rc != 0) {
        free(ch);
        close_fds(rfd, wfd);
        return -rc;
    }
    *out = ch;
    return 0;
}

/* Moves fd off 0-2 (a process may run with stdio closed, and printf would
 * then write into the channel), keeping it close-on-exec. */
static int fd_off_stdio(int fd)
{
    if (fd > 2)
        return fd;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int e = errno;
    close(fd);
    errno = e;
    return nfd;
}

int llll_sbc_pair(llll_sbc **a, llll_sbc **b)
{
    if (!a || !b)
        return -EINVAL;
    *a = *b = NULL;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    sv[0] = fd_off_stdio(sv[0]);
    sv[1] = fd_off_stdio(sv[1]);
    if (sv[0] < 0 || sv[1] < 0) {
        int e = errno;
        close_fds(sv[0], sv[1]);
        return -e;
    }
    int size = PAIR_SOCKBUF;
    for (int i = 0; i < 2; i++) {
        /* Best effort: the kernel caps these at net.core.[wr]mem_max. */
        (void)setsockopt(sv[i], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
        (void)setsockopt(sv[i], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    int rc = llll_sbc_open(a, sv[0], sv[0]);
    if (rc < 0) {
        close(sv[1]);
        return rc;
    }
    rc = llll_sbc_open(b, sv[1], sv[1]);
    if (rc < 0) {
        llll_sbc_close(*a);
        *a = NULL;
        return rc;
    }
    return 0;
}

/* Parses a decimal fd: digits only, no sign or spaces, at most INT_MAX.
 * Checked before each step, so nothing overflows (a long may be 32 bits). */
static const char *parse_fd(const char *s, int *fd)
{
    int v = 0;
    if (*s < '0' || *s > '9')
        return NULL;
    while (*s >= '0' && *s <= '9') {
        int d = *s++ - '0';
        if (v > (INT_MAX - d) / 10)
            return NULL;
        v = v * 10 + d;
    }
    *fd = v;
    return s;
}

/* A channel on stdio ("0,1": a worker launched through ssh, say) moves to
 * fds above 2, close-on-exec, and stdio is pointed elsewhere: stdin at
 * /dev/null, stdout at stderr, so that a stray printf, or a library writing
 * to stdout, cannot corrupt a frame. */
static int move_off_stdio(int *rfd, int *wfd)
{
    int r = *rfd, w = *wfd;
    if (r <= 2 && (r = fcntl(*rfd, F_DUPFD_CLOEXEC, 3)) < 0)
        return -errno;
    if (*wfd == *rfd)
        w = r;
    else if (w <= 2 && (w = fcntl(*wfd, F_DUPFD_CLOEXEC, 3)) < 0) {
        int e = errno;
        if (r != *rfd)
            close(r);
        return -e;
    }
    /* stdout goes to stderr if that is open and not the channel too */
    bool to_err = *rfd != 2 && *wfd != 2 && fcntl(2, F_GETFD) >= 0;
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);   /* on 2 if 2 was closed */
    int old[2] = { *rfd, *wfd };
    for (int i = 0; i < 2; i++) {
        int fd = old[i], to = fd == 1 && to_err ? 2 : null;
        if (fd > 2 || fd == to)
            continue;
        if (to < 0 || dup2(to, fd) < 0)
            close(fd);   /* never left on the channel */
    }
    if (null > 2)
        close(null);
    *rfd = r;
    *wfd = w;
    return 0;
}

int llll_sbc_child(llll_sbc **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    const char *env = getenv("LLLL_SBC_FD");
    if (!env)
        return -ENOENT;
    int rfd, wfd;
    const char *p = parse_fd(env, &rfd);
    if (!p)
        return -EINVAL;
    if (*p == ',') {
        p = parse_fd(p + 1, &wfd);
        if (!p)
            return -EINVAL;
    } else {
        wfd = rfd;
    }
    if (*p != '\0')
        return -EINVAL;
    if (fcntl(rfd, F_GETFD) < 0 || fcntl(wfd, F_GETFD) < 0)
        return -EBADF;
    if (rfd <= 2 || wfd <= 2) {
        int rc = move_off_stdio(&rfd, &wfd);
        if (rc < 0)
            return rc;
    }
    /* Our grandchildren must not inherit the channel (FD_CLOEXEC is the
     * only fd flag). */
    (void)fcntl(rfd, F_SETFD, FD_CLOEXEC);
    if (wfd != rfd)
        (void)fcntl(wfd, F_SETFD, FD_CLOEXEC);
    unsetenv("LLLL_SBC_FD");
    return llll_sbc_open(out, rfd, wfd);
}

void llll_sbc_set_max_frame(llll_sbc *ch, size_t max)
{
    if (!ch)
        return;
    if (max == 0)
        max = LLLL_SBC_MAX_FRAME_DEFAULT;
    if (max > UINT32_MAX)
        max = UINT32_MAX;
    atomic_store(&ch->max, max);
}

int llll_sbc_shutdown(llll_sbc *ch)
{
    if (!ch)
        return -EINVAL;
    if (!ch->rsock && !ch->wsock)
        return -ENOTSOCK;
    int rc = 0;
    if (ch->rsock && shutdown(ch->rfd, SHUT_RDWR) < 0 && errno != ENOTCONN)
        rc = -errno;
    if (ch->wsock && ch->wfd != ch->rfd && shutdown(ch->wfd, SHUT_RDWR) < 0 && errno != ENOTCONN)
        rc = -errno;
    return rc;
}

size_t llll_sbc_peek(llll_sbc *ch, void *dst, size_t n)
{
    if (!ch || !dst)
        return 0;
    pthread_mutex_lock(&ch->rmu);
    size_t k = 0;
    const unsigned char *part[3] = { ch->hdr, ch->pend, ch->rbuf + ch->rpos };
    size_t plen[3] = { ch->hgot, ch->pend ? ch->body_got : 0, ch->rend - ch->rpos };
    for (int i = 0; i < 3 && k < n; i++) {
        size_t m = plen[i] < n - k ? plen[i] : n - k;
        if (m)
            memcpy((unsigned char *)dst + k, part[i], m);
        k += m;
    }
    pthread_mutex_unlock(&ch->rmu);
    return k;
}

void llll_sbc_close(llll_sbc *ch)
{
    if (!ch)
        return;
    close_fds(ch->rfd, ch->wfd);
    pthread_mutex_destroy(&ch->smu);
    pthread_mutex_destroy(&ch->rmu);
    free(ch->pend);
    free(ch);
}

/* -------------------------------------------------------------------- send */

/* Writes all of iov (advancing it) to the channel's wfd. Caller holds smu. */
static int write_all(llll_sbc *ch, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        ssize_t n;
        if (ch->wsock) {
            struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
            n = sendmsg(ch->wfd, &mh, MSG_NOSIGNAL);
        } else {
            n = writev(ch->wfd, iov, iovcnt);
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                /* A non-blocking fd handed to us: wait until it drains. */
                struct pollfd pfd = { .fd = ch->wfd, .events = POLLOUT };
                if (poll(&pfd, 1, -1) < 0 && errno != EINTR)
                    return -errno;
                continue;
            }
            return -errno;
        }
        size_t done = (size_t)n;
        while (iovcnt > 0 && done >= iov->iov_len) {
            done -= iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (char *)iov->iov_base + done;
            iov->iov_len -= done;
        }
    }
    return 0;
}

/* A pipe whose reader is gone raises SIGPIPE, which must not reach the
 * process and needs no handler: block it in this thread for the write, and
 * if the write raised it (it was not pending before), take it back with
 * sigtimedwait before restoring the mask. */
static int write_all_nosigpipe(llll_sbc *ch, struct iovec *iov, int iovcnt)
{
    sigset_t pipeset, old, pending;
    sigemptyset(&pipeset);
    sigaddset(&pipeset, SIGPIPE);
    sigemptyset(&pending);
    int e = pthread_sigmask(SIG_BLOCK, &pipeset, &old);
    if (e != 0)
        return -e;
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE) == 1;
    int rc = write_all(ch, iov, iovcnt);
    if (rc == -EPIPE && !was_pending) {
        struct timespec zero = { 0, 0 };
        while (sigtimedwait(&pipeset, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int llll_sbc_send(llll_sbc *ch, const void *data, size_t len)
{
    if (!ch || (!data && len > 0))
        return -EINVAL;
    if (len > atomic_load(&ch->max))
        return -EMSGSIZE;
    unsigned char hdr[4] = {
        (unsigned char)(len >> 24), (unsigned char)(len >> 16),
        (unsigned char)(len >> 8), (unsigned char)len,
    };
    struct iovec iov[2] = {
        { .iov_base = hdr, .iov_len = 4 },
        { .iov_base = (void *)data, .iov_len = len },
    };
    pthread_mutex_lock(&ch->smu);
    int rc = ch->wsock ? write_all(ch, iov, len ? 2 : 1)
                       : write_all_nosigpipe(ch, iov, len ? 2 : 1);
    pthread_mutex_unlock(&ch->smu);
    return rc;
}

int llll_sbc_send_obj(llll_sbc *ch, const llll_codec *c, const void *obj)
{
    if (!ch || !c || !c->encode)
        return -EINVAL;
    /* A buffer per call: the codec is user code and runs without our locks. */
    llll_buf b = LLLL_BUF_INIT;
    int rc = c->encode(c->ctx, obj, &b);
    if (rc == 0)
        rc = b.len > b.cap ? -EINVAL : llll_sbc_send(ch, b.data, b.len);
    llll_buf_free(&b);
    return rc;
}

/* ----------------------------------------------------------------- receive */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Locks rmu, waiting at most timeout_ms (-1: forever). */
static int lock_recv(llll_sbc *ch, int timeout_ms)
{
    int rc;
    if (timeout_ms < 0) {
        rc = pthread_mutex_lock(&ch->rmu);
    } else if (timeout_ms == 0) {
        rc = pthread_mutex_trylock(&ch->rmu);
    } else {
        /* timedlock takes a CLOCK_REALTIME deadline: a clock step while we
         * wait for another receiver only stretches or shortens this wait. */
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += timeout_ms / 1000;
        dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        while ((rc = pthread_mutex_timedlock(&ch->rmu, &dl)) == EINTR)
            ;
    }
    if (rc == EBUSY || rc == ETIMEDOUT)
        return -ETIMEDOUT;
    return -rc;
}

/* Reads up to n bytes into dst, waiting until the deadline (-1: none).
 * Returns the count, 0 at end of stream, or a negative errno. */
static ssize_t read_some(llll_sbc *ch, void *dst, size_t n, int64_t deadline)
{
    bool need_poll = deadline >= 0;
    for (;;) {
        if (need_poll) {
            int wait = -1;
            if (deadline >= 0) {
                int64_t left = deadline - now_ms();
                wait = left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
            }
            struct pollfd pfd = { .fd = ch->rfd, .events = POLLIN };
            int pr = poll(&pfd, 1, wait);
            if (pr < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (pr == 0)
                return -ETIMEDOUT;
        }
        ssize_t r = read(ch->rfd, dst, n);
        if (r >= 0)
            return r;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            need_poll = true;
            continue;
        }
        return -errno;
    }
}

/* Keeps the body bytes already received in the caller's buffer, so that the
 * next receive (maybe into another buffer) can complete the frame. */
static int save_partial(llll_sbc *ch, const llll_buf *frame)
{
    if (ch->body_got == 0 || ch->pend)
        return 0;
    ch->pend = malloc(ch->body_got);
    if (!ch->pend)
        return ch->lost = -ENOMEM;
    memcpy(ch->pend, frame->data, ch->body_got);
    return 0;
}

static int recv_locked(llll_sbc *ch, llll_buf *frame, int64_t deadline)
{
    ssize_t r;

    if (ch->lost)
        return ch->lost;

    while (ch->hgot < 4) {
        if (ch->rpos == ch->rend) {
            r = read_some(ch, ch->rbuf, RBUF_SIZE, deadline);
            if (r < 0)
                return (int)r;
            if (r == 0)
                return ch->hgot == 0 ? LLLL_EOF : -EPROTO;
            ch->rpos = 0;
            ch->rend = (size_t)r;
        }
        size_t k = ch->rend - ch->rpos;
        if (k > 4 - ch->hgot)
            k = 4 - ch->hgot;
        memcpy(ch->hdr + ch->hgot, ch->rbuf + ch->rpos, k);
        ch->hgot += k;
        ch->rpos += k;
    }
    size_t len = (size_t)ch->hdr[0] << 24 | (size_t)ch->hdr[1] << 16 |
                 (size_t)ch->hdr[2] << 8 | (size_t)ch->hdr[3];
    /* The header stays parsed: every later receive refuses it again (unless
     * the maximum was raised), and nothing was allocated for it. */
    if (len > atomic_load(&ch->max))
        return -EMSGSIZE;
    if (llll_buf_reserve(frame, len) < 0)
        return -ENOMEM;
    unsigned char *dst = frame->data;
    if (ch->pend) {
        memcpy(dst, ch->pend, ch->body_got);
        free(ch->pend);
        ch->pend = NULL;
    }

    while (ch->body_got < len) {
        size_t want = len - ch->body_got;
        size_t k = ch->rend - ch->rpos;
        if (k > 0) {
            if (k > want)
                k = want;
            memcpy(dst + ch->body_got, ch->rbuf + ch->rpos, k);
            ch->rpos += k;
            ch->body_got += k;
            continue;
        }
        if (want >= RBUF_SIZE) {
            /* Large rest: straight into the caller's buffer, no copy. */
            r = read_some(ch, dst + ch->body_got, want, deadline);
            if (r > 0)
                ch->body_got += (size_t)r;
        } else {
            /* Small rest: through rbuf, which may catch the next header. */
            r = read_some(ch, ch->rbuf, RBUF_SIZE, deadline);
            if (r > 0) {
                ch->rpos = 0;
                ch->rend = (size_t)r;
            }
        }
        if (r == 0)
            r = -EPROTO;
        if (r < 0) {
            int rc = save_partial(ch, frame);
            return rc < 0 ? rc : (int)r;
        }
    }
    frame->len = len;
    ch->hgot = 0;
    ch->body_got = 0;
    return 0;
}

int llll_sbc_recv(llll_sbc *ch, llll_buf *frame, int timeout_ms)
{
    if (!ch || !frame)
        return -EINVAL;
    /* One deadline for the whole call: time spent waiting for another
     * receiver counts against timeout_ms too. */
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    int rc = lock_recv(ch, timeout_ms);
    if (rc < 0)
        return rc;
    rc = recv_locked(ch, frame, deadline);
    pthread_mutex_unlock(&ch->rmu);
    return rc;
}

int llll_sbc_recv_obj(llll_sbc *ch, const llll_codec *c, void **obj, int timeout_ms)
{
    if (!obj)
        return -EINVAL;
    *obj = NULL;
    if (!ch || !c || !c->decode)
        return -EINVAL;
    llll_buf b = LLLL_BUF_INIT;
    int rc = llll_sbc_recv(ch, &b, timeout_ms);
    if (rc == 0)
        rc = c->decode(c->ctx, b.data, b.len, obj);
    llll_buf_free(&b);
    return rc;
}
