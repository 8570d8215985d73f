/*
 * Listeners and the accept engine.
 *
 * Theory of operation
 *  - A listener owns one listening socket (non-blocking) and N worker threads (the caller
 *    says how many: sslsock passes one per CPU it may use, less one, available_cpus() in
 *    _deploy/workers.py).  Each worker has its own epoll set holding the listening socket
 *    (EPOLLEXCLUSIVE: one worker wakes per new connection), a shared stop eventfd, and the
 *    handshakes it is running.
 *  - A worker accepts, then drives SSL_do_handshake non-blocking, re-arming epoll for
 *    whatever the handshake waits on.  Thousands of handshakes proceed at once; a slow or
 *    silent client only costs a slot in the pending list.
 *  - Each worker's pending list is in deadline order for free (same time-out for all, appended
 *    at accept), so expiring stalled handshakes looks only at the head, and epoll_wait
 *    sleeps until that head's deadline.
 *  - A finished handshake becomes an ss_conn in the ready queue (mutex + condition
 *    variable).  ss_listener_wait / ss_listener_accept wait on it with a time-out.
 *  - Limits: at most max_pending handshakes at once (beyond: accepted and closed at once,
 *    counted), at most max_ready connections waiting for the program (beyond: closed,
 *    counted).  Every refusal and failure is counted in the stats.
 *  - Ownership: a pending handshake belongs to its worker; a ready connection to the queue
 *    until ss_listener_accept hands it to the caller.  ss_listener_shutdown sets `stopping`
 *    and signals the eventfd: workers leave their loops, waiters wake.  ss_listener_free
 *    joins the workers and frees what is left.
 *  - Why each loop ends: the worker loop on `stopping`; the accept burst on EAGAIN or after
 *    ACCEPT_BURST; waits on their deadline or `stopping`.
 */

#include "ss_internal.h"

#include <errno.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

/* 10 s: long enough for a loaded machine and a far client, short enough that a silent
 * connection does not hold a slot for long. */
#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000
/* Handshakes in progress at once; each costs about 20-40 KiB while it runs. */
#define DEFAULT_MAX_PENDING 8192
/* Completed connections the program has not accepted yet. */
#define DEFAULT_MAX_READY 4096
/* The kernel caps the backlog at net.core.somaxconn (4096 on current kernels). */
#define DEFAULT_BACKLOG 4096
/* Connections taken per wake-up before serving the handshakes already running. */
#define ACCEPT_BURST 64
#define MAX_EVENTS 64
/* After this many handshakes in one go, a worker that runs dry returns free memory to the
 * system (malloc_trim costs about a millisecond; a burst this size freed megabytes). */
#define TRIM_AFTER 512
/* A PROXY header: v1 is at most 107 bytes, v2 16 + addresses (up to 216) + TLVs. */
#define DEFAULT_PROXY_MAX_LEN 1024
#define PROXY_MAX_LEN_LIMIT 65551 /* 16 + the largest v2 length */

typedef struct hs {
    int fd;
    SSL *ssl;         /* NULL: a plain TCP listener's connection waiting for its PROXY header */
    ss_ctx *ctx;      /* the context it was accepted with (reference held) */
    unsigned char *pbuf; /* PROXY header bytes read so far (NULL: header done or none) */
    int phave;
    long long deadline;
    uint32_t events; /* what epoll is armed for */
    struct hs *prev, *next;
    struct sockaddr_storage peer;  /* the client: as the PROXY header names it, if any */
    socklen_t peer_len;
    struct sockaddr_storage proxy; /* the proxy that sent the header (proxy_len 0: none) */
    socklen_t proxy_len;
} hs;

typedef struct worker {
    struct ss_listener *l;
    int epfd;
    pthread_t thread;
    int started;
    hs *head, *tail; /* pending handshakes, earliest deadline first */
    int burst;       /* handshakes taken since this worker last had none pending */
} worker;

struct ss_listener {
    int fd;
    int port;
    ss_ctx *ctx; /* NULL: plain TCP; replaced by ss_listener_set_ctx under ctx_lock */
    pthread_mutex_t ctx_lock;
    int proxy_protocol;
    int proxy_max_len;
    unsigned char *proxy_allow; /* 17-byte entries (ss_proxy_allowed) */
    int proxy_allow_count;
    int stop_fd; /* eventfd, readable once stopping */
    int ready_fd; /* eventfd, signalled when the ready queue stops being empty, once
                   * `notify` is set */
    atomic_int notify;
    atomic_int stopping;
    int handshake_timeout_ms;
    int max_pending;
    int max_ready;
    int nworkers;
    worker *workers;
    atomic_int pending;
    /* ready queue and counters */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ss_conn **ready; /* ring buffer of max_ready */
    int ready_head, ready_len;
    ss_listener_stats st;
};

/* The two non-connection epoll entries are told apart by these addresses. */
static char LISTEN_TAG, STOP_TAG;

static void count(ss_listener *l, uint64_t *field)
{
    pthread_mutex_lock(&l->lock);
    (*field)++;
    pthread_mutex_unlock(&l->lock);
}

static void count_failure(ss_listener *l, uint64_t *field, const ss_err *e)
{
    pthread_mutex_lock(&l->lock);
    (*field)++;
    snprintf(l->st.last_failure, sizeof l->st.last_failure, "%s%s%s", e->message,
             e->detail[0] ? ": " : "", e->detail);
    pthread_mutex_unlock(&l->lock);
}

/* Hand a connection to the ready queue; closes it when the queue is full. */
static void enqueue(ss_listener *l, int fd, SSL *ssl, ss_ctx *ctx, const struct sockaddr *peer,
                    socklen_t peer_len, const struct sockaddr_storage *proxy,
                    socklen_t proxy_len)
{
    ss_conn *c = ss_conn_wrap(fd, ssl, ctx, peer, peer_len);
    if (c && proxy_len) {
        memcpy(&c->proxy, proxy, proxy_len);
        c->proxy_len = proxy_len;
    }
    int was_empty = 0;
    pthread_mutex_lock(&l->lock);
    if (c && l->ready_len < l->max_ready && !atomic_load(&l->stopping)) {
        was_empty = l->ready_len == 0;
        l->ready[(l->ready_head + l->ready_len) % l->max_ready] = c;
        l->ready_len++;
        l->st.handshakes++;
        pthread_cond_signal(&l->cond);
        c = NULL;
        fd = -1;
        ssl = NULL;
    } else {
        l->st.dropped_ready++;
    }
    pthread_mutex_unlock(&l->lock);
    /* A hub's eventfd is signalled when the queue stops being empty, outside the lock (a
     * system call there would hold up the hub taking connections).  The hub reads the
     * eventfd before it empties the queue, and signals it again itself when it stops with
     * connections left, so a queue with connections never sits behind a quiet eventfd. */
    if (was_empty && atomic_load(&l->notify)) {
        uint64_t one = 1;
        ssize_t wr = write(l->ready_fd, &one, sizeof one);
        (void)wr;
    }
    if (c) {
        ss_conn_free(c);
    } else if (fd >= 0) {
        SSL_free(ssl);
        close(fd);
    }
}

static void unlink_hs(worker *w, hs *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        w->head = h->next;
    if (h->next)
        h->next->prev = h->prev;
    else
        w->tail = h->prev;
    h->prev = h->next = NULL;
}

static void free_hs(hs *h)
{
    ss_ctx_free(h->ctx);
    free(h->pbuf);
    free(h);
}

static void drop_hs(worker *w, hs *h)
{
    unlink_hs(w, h);
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, h->fd, NULL);
    SSL_free(h->ssl);
    close(h->fd);
    atomic_fetch_sub(&w->l->pending, 1);
    free_hs(h);
}

/* As drop_hs, for a handshake that failed with an alert: the alert must reach the client
 * before the connection ends (closing.c). */
static void drop_hs_after_alert(worker *w, hs *h)
{
    unlink_hs(w, h);
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, h->fd, NULL);
    SSL_free(h->ssl);
    ss_close_after_alert(h->fd);
    atomic_fetch_sub(&w->l->pending, 1);
    free_hs(h);
}

/* Watch h's socket for `want` (EPOLLIN / EPOLLOUT); drops h and returns -1 on failure. */
static int arm(worker *w, hs *h, uint32_t want)
{
    if (want == h->events)
        return 0;
    struct epoll_event ev = {.events = want, .data.ptr = h};
    int op = h->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    if (epoll_ctl(w->epfd, op, h->fd, &ev) != 0) {
        ss_err err;
        ss_fail_errno(&err, SS_E_SYSTEM, errno, "epoll_ctl failed");
        count_failure(w->l, &w->l->st.failed_io, &err);
        drop_hs(w, h);
        return -1;
    }
    h->events = want;
    return 0;
}

/* Hand a finished connection (handshake done, or plain TCP) to the ready queue. */
static void finish_hs(worker *w, hs *h)
{
    ss_listener *l = w->l;
    unlink_hs(w, h);
    if (h->events)
        epoll_ctl(w->epfd, EPOLL_CTL_DEL, h->fd, NULL);
    atomic_fetch_sub(&l->pending, 1);
    enqueue(l, h->fd, h->ssl, h->ctx, (struct sockaddr *)&h->peer, h->peer_len, &h->proxy,
            h->proxy_len);
    free_hs(h);
}

static void refuse_proxy(worker *w, hs *h, const char *why)
{
    ss_err err;
    char host[64];
    int port;
    ss_addr_to_str((struct sockaddr *)&h->peer, host, sizeof host, &port);
    ss_fail(&err, SS_E_TLS, "connection from %s port %d refused: %s", host, port, why);
    count_failure(w->l, &w->l->st.proxy_refused, &err);
    drop_hs(w, h);
}

static void step(worker *w, hs *h);

/* Read the PROXY header, exactly: peek at what has arrived, and take from the socket only
 * the header's bytes (what follows is the ClientHello).  Bytes of an unfinished header are
 * taken too (they can only be header), so the socket does not stay readable while the
 * rest is awaited. */
static void proxy_step(worker *w, hs *h)
{
    ss_listener *l = w->l;
    int room = l->proxy_max_len - h->phave;
    ssize_t n = room > 0 ? recv(h->fd, h->pbuf + h->phave, (size_t)room, MSG_PEEK) : 0;
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
            arm(w, h, EPOLLIN);
            return;
        }
        ss_err err;
        ss_fail_errno(&err, SS_E_RESET, errno, "reading the PROXY header: connection lost");
        count_failure(l, &l->st.failed_io, &err);
        drop_hs(w, h);
        return;
    }
    if (n == 0 && room > 0) {
        refuse_proxy(w, h, h->phave ? "the connection ended inside the PROXY header"
                                    : "the connection ended before any PROXY header");
        return;
    }
    struct sockaddr_storage src;
    socklen_t src_len = 0;
    char why[200];
    int hlen = ss_proxy_parse(h->pbuf, (size_t)h->phave + (size_t)n, (size_t)l->proxy_max_len,
                              &src, &src_len, why, sizeof why);
    if (hlen < 0) {
        refuse_proxy(w, h, why);
        return;
    }
    int take = hlen > 0 ? hlen - h->phave : (int)n;
    if (take > 0 && recv(h->fd, h->pbuf + h->phave, (size_t)take, 0) != take) {
        refuse_proxy(w, h, "the PROXY header could not be read whole");
        return;
    }
    h->phave += take;
    if (hlen == 0) {
        if (h->phave >= l->proxy_max_len) {
            snprintf(why, sizeof why, "no complete PROXY header within %d bytes (this "
                                      "listener's limit)", l->proxy_max_len);
            refuse_proxy(w, h, why);
            return;
        }
        arm(w, h, EPOLLIN);
        return;
    }
    /* Header done: the real TCP peer is the proxy; the client is the one it names. */
    memcpy(&h->proxy, &h->peer, h->peer_len);
    h->proxy_len = h->peer_len;
    if (src_len) {
        memcpy(&h->peer, &src, src_len);
        h->peer_len = src_len;
    }
    free(h->pbuf);
    h->pbuf = NULL;
    if (!h->ssl) {
        finish_hs(w, h);
        return;
    }
    step(w, h); /* the ClientHello may be there already */
}

/* Advance one handshake as far as it goes without waiting. */
static void step(worker *w, hs *h)
{
    ss_listener *l = w->l;
    ERR_clear_error();
    int r = SSL_do_handshake(h->ssl);
    if (r == 1) {
        finish_hs(w, h);
        return;
    }
    int e = SSL_get_error(h->ssl, r);
    uint32_t want = e == SSL_ERROR_WANT_READ ? EPOLLIN : e == SSL_ERROR_WANT_WRITE ? EPOLLOUT : 0;
    if (!want) {
        ss_err err;
        char host[64];
        int port;
        ss_addr_to_str((struct sockaddr *)&h->peer, host, sizeof host, &port);
        char what[128];
        snprintf(what, sizeof what, "TLS handshake with %s port %d", host, port);
        int rc = ss_handshake_error(h->ssl, r, &err, what);
        count_failure(l, rc == SS_E_RESET ? &l->st.failed_io : &l->st.failed_tls, &err);
        if (rc == SS_E_RESET)
            drop_hs(w, h);
        else
            drop_hs_after_alert(w, h);
        return;
    }
    arm(w, h, want);
}

static void accept_burst(worker *w)
{
    ss_listener *l = w->l;
    for (int i = 0; i < ACCEPT_BURST; i++) {
        struct sockaddr_storage peer;
        socklen_t peer_len = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &peer_len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                ss_err err;
                ss_fail_errno(&err, SS_E_SYSTEM, errno, "accept() failed");
                count_failure(l, &l->st.dropped_pending, &err);
                /* The connection stays in the backlog and the socket stays readable: back
                 * off 10 ms instead of spinning until a descriptor frees up. */
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            return; /* EAGAIN, or an error already counted */
        }
        count(l, &l->st.accepted);
        ss_set_nodelay(fd);
        if (l->proxy_protocol &&
            !ss_proxy_allowed(l->proxy_allow, l->proxy_allow_count, (struct sockaddr *)&peer)) {
            ss_err err;
            char host[64];
            int port;
            ss_addr_to_str((struct sockaddr *)&peer, host, sizeof host, &port);
            ss_fail(&err, SS_E_TLS, "connection from %s port %d refused: that address is not "
                                    "one of the proxies allowed to send the PROXY header",
                    host, port);
            count_failure(l, &l->st.proxy_refused, &err);
            close(fd);
            continue;
        }
        if (!l->ctx && !l->proxy_protocol) {
            enqueue(l, fd, NULL, NULL, (struct sockaddr *)&peer, peer_len, NULL, 0);
            continue;
        }
        if (atomic_load(&l->pending) >= l->max_pending) {
            count(l, &l->st.dropped_pending);
            close(fd);
            continue;
        }
        hs *h = calloc(1, sizeof *h);
        ss_ctx *ctx = NULL;
        if (h && l->ctx) {
            pthread_mutex_lock(&l->ctx_lock);
            ctx = l->ctx;
            ss_ctx_ref(ctx);
            pthread_mutex_unlock(&l->ctx_lock);
        }
        SSL *ssl = h && ctx ? SSL_new(ctx->ssl_ctx) : NULL;
        unsigned char *pbuf = h && l->proxy_protocol ? malloc((size_t)l->proxy_max_len) : NULL;
        if (!h || (ctx && (!ssl || ss_ssl_set_fd(ssl, fd) != 1)) || (l->proxy_protocol && !pbuf)) {
            ERR_clear_error();
            SSL_free(ssl);
            ss_ctx_free(ctx);
            free(pbuf);
            free(h);
            close(fd);
            count(l, &l->st.dropped_pending);
            continue;
        }
        if (ssl)
            SSL_set_accept_state(ssl);
        h->fd = fd;
        h->ssl = ssl;
        h->ctx = ctx;
        h->pbuf = pbuf;
        h->deadline = ss_now_ms() + l->handshake_timeout_ms;
        memcpy(&h->peer, &peer, peer_len);
        h->peer_len = peer_len;
        h->prev = w->tail;
        if (w->tail)
            w->tail->next = h;
        else
            w->head = h;
        w->tail = h;
        atomic_fetch_add(&l->pending, 1);
        w->burst++;
        if (h->pbuf)
            proxy_step(w, h); /* the header is often there already */
        else
            step(w, h); /* the ClientHello is often there already */
    }
}

static void expire(worker *w)
{
    long long now = ss_now_ms();
    while (w->head && w->head->deadline <= now) {
        if (w->head->pbuf) {
            char why[128];
            snprintf(why, sizeof why, "no complete PROXY header within the handshake "
                                      "time-out (%d ms)", w->l->handshake_timeout_ms);
            refuse_proxy(w, w->head, why);
            continue;
        }
        count(w->l, &w->l->st.timed_out);
        drop_hs(w, w->head);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    ss_listener *l = w->l;
    struct epoll_event events[MAX_EVENTS];
    while (!atomic_load(&l->stopping)) {
        int timeout = -1;
        if (w->head) {
            long long left = w->head->deadline - ss_now_ms();
            timeout = left < 0 ? 0 : (int)left;
        }
        int n = epoll_wait(w->epfd, events, MAX_EVENTS, timeout);
        if (n < 0 && errno != EINTR)
            break;
        for (int i = 0; i < n && !atomic_load(&l->stopping); i++) {
            void *p = events[i].data.ptr;
            if (p == &STOP_TAG)
                break;
            if (p == &LISTEN_TAG)
                accept_burst(w);
            else if (((hs *)p)->pbuf)
                proxy_step(w, p);
            else
                step(w, p);
        }
        expire(w);
        if (!w->head && w->burst >= TRIM_AFTER) {
            /* A burst is over (thousands of handshakes, often abandoned ones): give the
             * memory their buffers took back to the system.  glibc keeps freed memory in
             * per-thread arenas otherwise, and the process stays at its peak. */
            w->burst = 0;
#ifdef __GLIBC__
            malloc_trim(0);
#endif
        } else if (!w->head) {
            w->burst = 0;
        }
    }
    while (w->head)
        drop_hs(w, w->head);
    return NULL;
}

/* After EADDRINUSE: who holds the port?  The kernel's socket tables say whether a socket
 * listens on it, and how many connections on it linger in TIME_WAIT.  (Binding again with
 * SO_REUSEADDR cannot tell: TIME_WAIT connections of a socket made without it refuse that
 * bind too.)  Counts stay 0 when the tables cannot be read. */
static void port_holders(int port, int *listening, int *time_wait)
{
    static const char *const tables[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    *listening = *time_wait = 0;
    for (size_t t = 0; t < sizeof tables / sizeof *tables; t++) {
        FILE *f = fopen(tables[t], "re");
        if (!f)
            continue;
        char line[512];
        while (fgets(line, sizeof line, f)) {
            unsigned local_port, state;
            /* "  0: 0100007F:1393 00000000:0000 0A ..." (the header line does not match) */
            if (sscanf(line, " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &local_port,
                       &state) != 2 || (int)local_port != port)
                continue;
            if (state == 0x0A) /* TCP_LISTEN */
                (*listening)++;
            else if (state == 0x06) /* TCP_TIME_WAIT */
                (*time_wait)++;
        }
        fclose(f);
    }
}

/* The EADDRINUSE message; each fits ss_err.message (256 bytes) with a 5-digit port. */
static int in_use_error(const ss_listener_config *cfg, const char *host, ss_err *err)
{
    int listening, time_wait;
    port_holders(cfg->port, &listening, &time_wait);
    const char *s = time_wait == 1 ? "" : "s", *is = time_wait == 1 ? "is" : "are";
    const char *them = time_wait == 1 ? "it" : "them";
    if (!listening && time_wait && !cfg->reuse_addr)
        return ss_fail_errno(err, SS_E_IN_USE, EADDRINUSE,
                             "port %d has no listener, but %d connection%s of an earlier "
                             "socket %s in TIME_WAIT (about 60 s after closing), and with "
                             "SocketNoReuseAddress no socket can bind over %s: wait, or keep "
                             "address reuse (Socket.Option = 0)",
                             cfg->port, time_wait, s, is, them);
    if (!listening && time_wait)
        return ss_fail_errno(err, SS_E_IN_USE, EADDRINUSE,
                             "port %d has no listener, but %d connection%s of an earlier "
                             "socket made with SocketNoReuseAddress %s in TIME_WAIT (about 60 s "
                             "after closing), and address reuse cannot bind over %s: wait",
                             cfg->port, time_wait, s, is, them);
    if (!listening)
        return ss_fail_errno(err, SS_E_IN_USE, EADDRINUSE,
                             "port %d is already in use%s%s, though it has no listener: a "
                             "socket bound without listening, or another program's connections "
                             "(`ss -tanp 'sport = :%d'`); choose another port",
                             cfg->port, host ? " on " : "", host ? host : "", cfg->port);
    return ss_fail_errno(err, SS_E_IN_USE, EADDRINUSE,
                         "port %d is already in use%s%s: another socket listens on it "
                         "(close it, or choose another port)",
                         cfg->port, host ? " on " : "", host ? host : "");
}

static int bind_listen(const ss_listener_config *cfg, int *fd_out, int *port_out, ss_err *err)
{
    const char *host = cfg->host && cfg->host[0] ? cfg->host : NULL;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE,
                             .ai_family = host ? AF_UNSPEC : AF_INET6};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", cfg->port);
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0 && !host) { /* no IPv6 on this machine: all IPv4 interfaces */
        hints.ai_family = AF_INET;
        g = getaddrinfo(NULL, portstr, &hints, &res);
    }
    if (g != 0) {
        ss_fail(err, SS_E_ADDRESS, "cannot resolve the address \"%s\" to listen on", host ? host : "");
        err->sys_code = g; /* EAI_* (negative), as socket.gaierror's errno */
        snprintf(err->detail, sizeof err->detail, "%s", gai_strerror(g));
        return SS_E_ADDRESS;
    }
    int rc = SS_E_ADDRESS, fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            rc = ss_fail_errno(err, SS_E_SYSTEM, errno, "socket() failed");
            continue;
        }
        int one = 1, zero = 0;
        if (cfg->reuse_addr)
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (cfg->reuse_port)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        if (ai->ai_family == AF_INET6 && !host) /* "::" serves IPv4 too */
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, cfg->backlog > 0 ? cfg->backlog : DEFAULT_BACKLOG) == 0) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            char h[64];
            getsockname(fd, (struct sockaddr *)&ss, &sl);
            ss_addr_to_str((struct sockaddr *)&ss, h, sizeof h, port_out);
            *fd_out = fd;
            freeaddrinfo(res);
            return SS_OK;
        }
        int errnum = errno;
        close(fd);
        fd = -1;
        if (errnum == EADDRINUSE)
            rc = in_use_error(cfg, host, err);
        else if (errnum == EACCES)
            rc = ss_fail_errno(err, SS_E_ADDRESS, errnum, "not allowed to listen on port %d",
                               cfg->port);
        else
            rc = ss_fail_errno(err, SS_E_ADDRESS, errnum, "cannot listen on %s port %d",
                               host ? host : "all interfaces", cfg->port);
    }
    freeaddrinfo(res);
    return rc;
}

int ss_listener_new(ss_ctx *ctx, const ss_listener_config *cfg, ss_listener **out, ss_err *err)
{
    *out = NULL;
    ERR_clear_error();
    ss_listener *l = calloc(1, sizeof *l);
    if (!l)
        return ss_fail(err, SS_E_NOMEM, "out of memory creating a listener");
    l->fd = l->stop_fd = l->ready_fd = -1;
    pthread_mutex_init(&l->lock, NULL);
    pthread_mutex_init(&l->ctx_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&l->stopping, 0);
    atomic_init(&l->pending, 0);
    l->handshake_timeout_ms = cfg->handshake_timeout_ms > 0 ? cfg->handshake_timeout_ms
                                                            : DEFAULT_HANDSHAKE_TIMEOUT_MS;
    l->max_pending = cfg->max_pending > 0 ? cfg->max_pending : DEFAULT_MAX_PENDING;
    l->max_ready = cfg->max_ready > 0 ? cfg->max_ready : DEFAULT_MAX_READY;
    l->nworkers = cfg->threads > 0 ? (cfg->threads > 64 ? 64 : cfg->threads) : 1;
    l->ready = calloc((size_t)l->max_ready, sizeof *l->ready);
    l->workers = calloc((size_t)l->nworkers, sizeof *l->workers);
    l->proxy_protocol = cfg->proxy_protocol != 0;
    l->proxy_max_len = cfg->proxy_max_len > 0 ? cfg->proxy_max_len : DEFAULT_PROXY_MAX_LEN;
    if (l->proxy_max_len < 108)
        l->proxy_max_len = 108; /* a v1 header always fits */
    if (l->proxy_max_len > PROXY_MAX_LEN_LIMIT)
        l->proxy_max_len = PROXY_MAX_LEN_LIMIT;
    if (cfg->proxy_allow_count > 0 && cfg->proxy_allow) {
        l->proxy_allow = malloc((size_t)cfg->proxy_allow_count * 17);
        if (l->proxy_allow) {
            memcpy(l->proxy_allow, cfg->proxy_allow, (size_t)cfg->proxy_allow_count * 17);
            l->proxy_allow_count = cfg->proxy_allow_count;
        }
    }
    if (!l->ready || !l->workers || (cfg->proxy_allow_count > 0 && !l->proxy_allow)) {
        ss_listener_free(l);
        return ss_fail(err, SS_E_NOMEM, "out of memory creating a listener");
    }
    int rc = bind_listen(cfg, &l->fd, &l->port, err);
    if (rc != SS_OK) {
        ss_listener_free(l);
        return rc;
    }
    l->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->ready_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->stop_fd < 0 || l->ready_fd < 0) {
        rc = ss_fail_errno(err, SS_E_SYSTEM, errno, "eventfd() failed");
        ss_listener_free(l);
        return rc;
    }
    if (ctx) {
        ss_ctx_ref(ctx);
        l->ctx = ctx;
    }
    for (int i = 0; i < l->nworkers; i++) {
        worker *w = &l->workers[i];
        w->l = l;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event lev = {.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &LISTEN_TAG};
        struct epoll_event sev = {.events = EPOLLIN, .data.ptr = &STOP_TAG};
        if (w->epfd < 0 || epoll_ctl(w->epfd, EPOLL_CTL_ADD, l->fd, &lev) != 0 ||
            epoll_ctl(w->epfd, EPOLL_CTL_ADD, l->stop_fd, &sev) != 0) {
            rc = ss_fail_errno(err, SS_E_SYSTEM, errno, "epoll setup failed");
            ss_listener_shutdown(l);
            ss_listener_free(l);
            return rc;
        }
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            rc = ss_fail_errno(err, SS_E_SYSTEM, errno, "cannot start a handshake thread");
            ss_listener_shutdown(l);
            ss_listener_free(l);
            return rc;
        }
        w->started = 1;
    }
    *out = l;
    return SS_OK;
}

int ss_listener_port(ss_listener *l) { return l->port; }

int ss_listener_ready_fd(ss_listener *l)
{
    if (!atomic_exchange(&l->notify, 1)) {
        /* connections queued before anyone listened for them count too */
        pthread_mutex_lock(&l->lock);
        if (l->ready_len) {
            uint64_t one = 1;
            ssize_t wr = write(l->ready_fd, &one, sizeof one);
            (void)wr;
        }
        pthread_mutex_unlock(&l->lock);
    }
    return l->ready_fd;
}

/* Wait (lock held) until a connection is ready, the deadline passes, or shutdown. */
static int wait_ready(ss_listener *l, int timeout_ms, ss_err *err)
{
    struct timespec until;
    if (timeout_ms > 0) {
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += timeout_ms / 1000;
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
    }
    while (l->ready_len == 0 && !atomic_load(&l->stopping)) {
        if (timeout_ms == 0)
            break;
        if (timeout_ms < 0)
            pthread_cond_wait(&l->cond, &l->lock);
        else if (pthread_cond_timedwait(&l->cond, &l->lock, &until) == ETIMEDOUT)
            break;
    }
    if (atomic_load(&l->stopping))
        return ss_fail(err, SS_E_CLOSED, "the listener was closed (SocketClose) while waiting");
    if (l->ready_len == 0)
        return ss_fail(err, SS_E_TIMEOUT, "no client connected within the time-out");
    return SS_OK;
}

int ss_listener_wait(ss_listener *l, int timeout_ms, ss_err *err)
{
    pthread_mutex_lock(&l->lock);
    int rc = wait_ready(l, timeout_ms, err);
    pthread_mutex_unlock(&l->lock);
    return rc;
}

int ss_listener_accept(ss_listener *l, int timeout_ms, ss_conn **out, ss_err *err)
{
    *out = NULL;
    pthread_mutex_lock(&l->lock);
    int rc = wait_ready(l, timeout_ms, err);
    if (rc == SS_OK) {
        *out = l->ready[l->ready_head];
        l->ready_head = (l->ready_head + 1) % l->max_ready;
        l->ready_len--;
        l->st.taken++;
    }
    pthread_mutex_unlock(&l->lock);
    return rc;
}

void ss_listener_get_stats(ss_listener *l, ss_listener_stats *st)
{
    pthread_mutex_lock(&l->lock);
    *st = l->st;
    st->ready = (uint64_t)l->ready_len;
    pthread_mutex_unlock(&l->lock);
    st->pending = (uint64_t)atomic_load(&l->pending);
}

void ss_listener_set_ctx(ss_listener *l, ss_ctx *ctx)
{
    if (!ctx || !l->ctx) /* a plain TCP listener stays one */
        return;
    ss_ctx_ref(ctx);
    pthread_mutex_lock(&l->ctx_lock);
    ss_ctx *old = l->ctx;
    l->ctx = ctx;
    pthread_mutex_unlock(&l->ctx_lock);
    ss_ctx_free(old);
}

void ss_listener_shutdown(ss_listener *l)
{
    if (atomic_exchange(&l->stopping, 1))
        return;
    if (l->stop_fd >= 0) {
        uint64_t one = 1;
        ssize_t w = write(l->stop_fd, &one, sizeof one);
        (void)w;
    }
    if (l->ready_fd >= 0 && atomic_load(&l->notify)) { /* a hub learns it on its next poll */
        uint64_t one = 1;
        ssize_t w = write(l->ready_fd, &one, sizeof one);
        (void)w;
    }
    pthread_mutex_lock(&l->lock);
    pthread_cond_broadcast(&l->cond);
    pthread_mutex_unlock(&l->lock);
}

void ss_listener_free(ss_listener *l)
{
    if (!l)
        return;
    ss_listener_shutdown(l);
    for (int i = 0; l->workers && i < l->nworkers; i++) {
        if (l->workers[i].started)
            pthread_join(l->workers[i].thread, NULL);
        if (l->workers[i].epfd > 0)
            close(l->workers[i].epfd);
    }
    for (int i = 0; i < l->ready_len; i++)
        ss_conn_free(l->ready[(l->ready_head + i) % l->max_ready]);
    if (l->fd >= 0)
        close(l->fd);
    if (l->stop_fd >= 0)
        close(l->stop_fd);
    if (l->ready_fd >= 0)
        close(l->ready_fd);
    ss_ctx_free(l->ctx);
    free(l->proxy_allow);
    free(l->ready);
    free(l->workers);
    pthread_mutex_destroy(&l->ctx_lock);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->cond);
    free(l);
}
