/*
 * loadgen.c -- TLS load generator for the benchmark suite.
 *
 * Two client shapes (--shape)
 * ---------------------------
 * events (the default): a few threads, each running an event loop over many
 *   non-blocking connections; many messages arrive per wake-up, as from a
 *   proxy, a load balancer or an asynchronous client.  Described just below.
 * threads: one thread per connection, each blocking on a write then on a
 *   read, as JDBC-style drivers, `requests` or a WINDEV client do: a message
 *   at a time per connection, each side waking up once per message.
 *   Described under "The threads shape" further down.
 * Both count operations the same way, so that a server's CPU per operation
 * can be compared across shapes.
 *
 * Theory of operation (events)
 * ----------------------------
 * --threads T worker threads each own a private epoll instance, a private
 * SSL_CTX (no shared refcounts or locks between threads) and a fixed,
 * contiguous share of the --conns C client connections (C/T each, +1 for the
 * first C%T threads).
 * All sockets are non-blocking and every connection is a state machine:
 *
 *   WAIT (back-off after an error) -> CONNECT -> HS (TLS handshake) -> ...
 *     handshake        TICKETS: read until the server's first TLS 1.3
 *                      session ticket arrives (see below), then close
 *     handshake-reply  SEND 16 bytes -> RECV the 16-byte echo, then close
 *     echo64           SEND 64 -> RECV 64 -> SEND 64 ... (ping-pong)
 *     bulk             STREAM: write 16 KiB chunks while fewer than 256 KiB
 *                      are in flight, read echoes back all the time
 *     idle             HOLD: keep the connection open, only read (tickets);
 *                      connections are opened IDLE_RAMP per thread at a time
 *
 * A finished handshake / handshake-reply connection sends close_notify
 * (one non-blocking SSL_shutdown, no wait for the server's reply) and is
 * closed; the slot immediately opens a fresh connection.  Each connection
 * uses a new SSL object and no session is ever offered back, so every
 * handshake is a full one.  Why close_notify rather than a bare close: it is
 * what a well-behaved client does, it lets every server under test take its
 * orderly-close path (no ECONNRESET / "unexpected EOF" error handling skewing
 * its CPU profile or logs), and it costs one tiny record.
 *
 * Why wait for a ticket in `handshake`: a TLS 1.3 client is done after
 * sending its Finished, one flight before the server is; closing at once
 * could abort the server before it verified Finished.  The server sends its
 * NewSessionTicket(s) only after that, so receiving one proves the server
 * did the whole handshake.  (--tickets 0 disables the wait; TLS 1.2 needs no
 * wait since the server's Finished arrives last.)
 *
 * Every error (refused connect, TLS failure, bad echo) is counted and the
 * slot waits BACKOFF_MS before reconnecting, so a missing server costs no
 * CPU spinning.  The run ends at --duration (hard cap: epoll_wait never
 * sleeps past it); idle is the exception, see usage().
 *
 * The threads shape
 * -----------------
 * --conns C threads (--threads is ignored), each with its own SSL_CTX and
 * one blocking socket whose receive and send time-outs are IO_SLICE_MS: a
 * blocking call returns at least that often, so the thread looks at the
 * clock and the stop flag while it waits, and the run ends at --duration
 * even against a server that stopped answering.  A step (connect, handshake,
 * write, read) that makes no progress for STALL_MS is an error.  Per
 * scenario, each thread loops:
 *   handshake        connect, handshake, [wait for a TLS 1.3 ticket,] close
 *   handshake-reply  connect, handshake, write 16 bytes, read them, close
 *   echo64           write 64 bytes, read the 64-byte echo, again
 *   bulk             write 16 KiB, read the 16 KiB echo, again
 * (idle is the events shape's only: holding connections needs no thread.)
 * The server's echo of a blocking write may come in pieces; a read returns
 * once the whole message is back.  SSL_MODE_AUTO_RETRY is off so that a
 * blocking SSL_read returns after a session ticket instead of waiting for
 * data that a handshake-only server never sends.
 *
 * Latencies are kept in a per-thread log-linear histogram (32 sub-buckets
 * per power of two of nanoseconds, i.e. <= 3% error) so that memory is
 * constant however many operations run:
 *   handshake / handshake-reply: connect() .. done (incl. the echo),
 *   echo64: one round trip, idle: connect() .. handshake done,
 *   bulk (threads shape only): one 16 KiB round trip.
 *
 * Output: one JSON line on stdout at the end:
 *   {"scenario":..,"ops":N,"seconds":S,"ops_per_sec":..,"bytes":..,
 *    "p50_ms":..,"p99_ms":..,"errors":E,"conns":C,"threads":T,"shape":..}
 * bytes = application bytes echoed back to us; for bulk, ops = bytes/16 KiB.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUF_SIZE    16384           /* one max-size TLS record */
#define CHUNK       16384           /* bulk: write size asked for by the suite */
#define INFLIGHT    (256 * 1024)    /* bulk: un-echoed bytes per connection;
                                       well above the bandwidth-delay product
                                       of loopback, well below socket buffers
                                       of both sides combined, so neither side
                                       can deadlock on a full pipe */
#define REPLY_SIZE  16              /* handshake-reply message */
#define ECHO_SIZE   64              /* echo64 message */
#define BACKOFF_MS  50              /* pause of a slot after any error */
#define MAX_ITER    64              /* bulk read/write rounds per wake-up */
#define MAX_EVENTS  256
#define NBUCKETS    1200            /* covers ~2^37 ns (> 2 min) */
#define MAX_ERR_LOG 5               /* error reasons printed on stderr */
#define IO_SLICE_MS 100             /* threads: socket time-out of one
                                       blocking call (how often a waiting
                                       thread looks at the clock) */
#define STALL_MS    5000            /* threads: a step without progress for
                                       this long is an error */
#define IDLE_RAMP   32              /* idle: handshakes in flight per thread
                                       while connecting; opening thousands at
                                       once overflows the listen backlog and
                                       inflates the server's RSS with
                                       transient handshake buffers, which is
                                       not what "idle memory" should measure */

enum { SC_HANDSHAKE, SC_HS_REPLY, SC_ECHO64, SC_BULK, SC_IDLE };
static const char *const SC_NAMES[] =
    {"handshake", "handshake-reply", "echo64", "bulk", "idle"};
enum { SHAPE_EVENTS, SHAPE_THREADS };
static const char *const SHAPE_NAMES[] = {"events", "threads"};
enum { ST_WAIT, ST_CONNECT, ST_HS, ST_TICKETS, ST_SEND, ST_RECV, ST_STREAM,
       ST_HOLD };

struct worker;
struct cconn {
    int fd;                 /* -1 when not connected */
    SSL *ssl;
    int st;
    uint32_t ev;            /* registered epoll interest */
    int tickets;            /* session tickets received on this connection */
    int off;                /* bytes of the current echo received so far */
    int wblocked;           /* bulk: an SSL_write is waiting to be retried */
    int64_t inflight;       /* bulk: bytes written and not yet echoed */
    uint64_t t0;            /* start of the current operation (ns) */
    uint64_t retry_at;      /* ST_WAIT: when to reconnect (ns) */
    struct worker *w;
};

struct worker {
    pthread_t tid;
    int ep;
    SSL_CTX *ctx;
    struct cconn *conns;
    int n, nwaiting, started;
    uint64_t deadline, t_end;
    uint64_t ops, bytes, errors;
    uint64_t hist[NBUCKETS];
    unsigned char buf[BUF_SIZE];
};

/* Configuration (read-only once workers run). */
static int g_scenario = -1, g_conns = 1, g_threads = 2, g_tickets = 1;
static int g_shape = SHAPE_EVENTS;
static int g_minv, g_maxv;
static const char *g_cafile;
static const char *g_groups;                 /* --groups: key-exchange groups offered */
static char g_group[64];                     /* the group the first handshake negotiated */
static atomic_int g_group_seen;
static struct sockaddr_storage g_addr;
static const char *g_servername; /* SNI sent by every connection (NULL: none) */
static socklen_t g_addrlen;
static unsigned char g_payload[CHUNK];      /* what we send, and expect back */

static atomic_int g_stop;
static atomic_int g_connected;              /* idle: connections held */
static atomic_int g_errlog;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

/* ---- latency histogram ------------------------------------------------ */
static int bucket_of(uint64_t ns)
{
    if (ns < 32) return (int)ns;
    int e = 63 - __builtin_clzll(ns);                   /* e >= 5 */
    int i = 32 + (e - 5) * 32 + (int)(ns >> (e - 5)) - 32;
    return i < NBUCKETS ? i : NBUCKETS - 1;
}
static double bucket_mid_ns(int i)
{
    if (i < 32) return i;
    int e = (i - 32) / 32 + 5, sub = (i - 32) % 32;
    return (double)((uint64_t)(32 + sub) << (e - 5)) + (double)(1ull << (e - 5)) / 2;
}
static double percentile_ms(const uint64_t *h, double p)
{
    uint64_t total = 0, acc = 0;
    for (int i = 0; i < NBUCKETS; i++) total += h[i];
    if (!total) return -1;
    uint64_t rank = (uint64_t)(p * total + 0.999999);  /* ceil, >= 1 */
    if (rank < 1) rank = 1;
    for (int i = 0; i < NBUCKETS; i++)
        if ((acc += h[i]) >= rank) return bucket_mid_ns(i) / 1e6;
    return -1;
}

/* ---- connection life cycle -------------------------------------------- */
/* The negotiated group's name (3.2+ by name; 3.0 by id), reported in the JSON line. */
static void note_group(SSL *ssl)
{
    const char *name = NULL;
#if OPENSSL_VERSION_NUMBER >= 0x30200000L
    name = SSL_get0_group_name(ssl);
#else
    int id = SSL_get_negotiated_group(ssl);
    if (id > 0) name = SSL_group_to_name(ssl, id);
#endif
    snprintf(g_group, sizeof g_group, "%s", name ? name : "");
}

static void log_error(const char *what, int err)
{
    if (atomic_fetch_add(&g_errlog, 1) >= MAX_ERR_LOG) return;
    unsigned long e = ERR_peek_error();
    char b[256] = "";
    if (e) ERR_error_string_n(e, b, sizeof b);
    fprintf(stderr, "loadgen: %s: %s%s%s\n", what, err ? strerror(err) : "",
            err && e ? " / " : "", b);
}

static void set_interest(struct cconn *c, uint32_t ev)
{
    if (ev == c->ev) return;
    struct epoll_event e = { .events = ev, .data.ptr = c };
    epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &e);
    c->ev = ev;
}

static void drop(struct cconn *c, int clean)
{
    if (c->ssl) {
        if (clean) SSL_shutdown(c->ssl);    /* send close_notify, no wait */
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) close(c->fd);   /* also leaves the epoll set */
    c->fd = -1;
    ERR_clear_error();
}

/* An error: count it, close, and let the slot rest before reconnecting. */
static void fail(struct cconn *c, const char *what, int err)
{
    log_error(what, err);
    if (c->st == ST_HOLD) atomic_fetch_sub(&g_connected, 1);
    c->w->errors++;
    drop(c, 0);
    c->st = ST_WAIT;
    c->retry_at = now_ns() + BACKOFF_MS * 1000000ull;
    c->w->nwaiting++;
}

static void start_conn(struct cconn *c)
{
    if (atomic_load(&g_stop)) { c->st = ST_WAIT; c->retry_at = UINT64_MAX; return; }
    c->t0 = now_ns();
    c->tickets = c->off = c->wblocked = 0;
    c->inflight = 0;
    c->fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { c->st = ST_CONNECT; fail(c, "socket", errno); return; }
    int one = 1;    /* our own small writes must not wait for ACKs either */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->ssl = SSL_new(c->w->ctx);
    if (!c->ssl) { c->st = ST_CONNECT; fail(c, "SSL_new", 0); return; }
    SSL_set_fd(c->ssl, c->fd);
    if (g_servername) SSL_set_tlsext_host_name(c->ssl, g_servername);
    SSL_set_connect_state(c->ssl);
    SSL_set_app_data(c->ssl, c);
    c->st = ST_CONNECT;
    c->ev = EPOLLOUT;               /* writable = connect() finished */
    struct epoll_event e = { .events = EPOLLOUT, .data.ptr = c };
    if (epoll_ctl(c->w->ep, EPOLL_CTL_ADD, c->fd, &e) < 0) { fail(c, "epoll_ctl", errno); return; }
    if (connect(c->fd, (struct sockaddr *)&g_addr, g_addrlen) < 0 && errno != EINPROGRESS)
        fail(c, "connect", errno);
}

/* A handshake-type operation completed: count it and start the next one
 * (the new connection is driven by its own epoll events; callers return). */
static void op_done(struct cconn *c)
{
    uint64_t t = now_ns();
    c->w->ops++;
    c->w->hist[bucket_of(t - c->t0)]++;
    drop(c, 1);
    start_conn(c);
}

/* Return the epoll interest OpenSSL asks for after a call returned r <= 0,
 * or 0 if the connection failed (the caller then calls fail()). */
static uint32_t want(struct cconn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:  return EPOLLIN;
    case SSL_ERROR_WANT_WRITE: return EPOLLOUT;
    default:                   return 0;
    }
}

/* TLS session ticket callback: just count (returning 0 drops the session,
 * we never resume). */
static int on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)sess;
    ((struct cconn *)SSL_get_app_data(ssl))->tickets++;
    return 0;
}

/* Returns 0 if the connection was recycled (op_done), 1 to keep driving. */
static int after_handshake(struct cconn *c)
{
    switch (g_scenario) {
    case SC_HANDSHAKE:
        if (SSL_version(c->ssl) != TLS1_3_VERSION || g_tickets == 0) {
            op_done(c);
            return 0;
        }
        c->st = ST_TICKETS;
        break;
    case SC_HS_REPLY: c->st = ST_SEND; break;
    case SC_ECHO64:   c->st = ST_SEND; c->t0 = now_ns(); break;
    case SC_BULK:     c->st = ST_STREAM; break;
    case SC_IDLE:
        c->w->hist[bucket_of(now_ns() - c->t0)]++;
        c->st = ST_HOLD;
        atomic_fetch_add(&g_connected, 1);
        if (c->w->started < c->w->n)        /* ramp: open the next one */
            start_conn(&c->w->conns[c->w->started++]);
        break;
    }
    return 1;
}

/* Bulk: interleave reads of the echo and writes of new chunks. */
static void stream(struct cconn *c)
{
    struct worker *w = c->w;
    uint32_t ev = EPOLLIN;
    int r, iter, progress = 1;
    for (iter = 0; progress && iter < MAX_ITER; iter++) {
        progress = 0;
        r = SSL_read(c->ssl, w->buf, BUF_SIZE);
        if (r > 0) {
            w->bytes += r; c->inflight -= r; progress = 1;
        } else {
            uint32_t x = want(c, r);
            if (!x) { fail(c, "bulk read", errno); return; }
            ev |= x;
        }
        if (c->wblocked || c->inflight + CHUNK <= INFLIGHT) {
            r = SSL_write(c->ssl, g_payload, CHUNK);
            if (r > 0) {
                c->inflight += r; c->wblocked = 0; progress = 1;
            } else {
                uint32_t x = want(c, r);
                if (!x) { fail(c, "bulk write", errno); return; }
                c->wblocked = 1;
                ev |= x;
            }
        }
    }
    /* Stopped while still making progress: ask to be woken at once. */
    if (progress) ev |= EPOLLOUT;
    set_interest(c, ev);
}

/* Drive one connection until it has to wait for the network. */
static void drive(struct cconn *c)
{
    struct worker *w = c->w;
    int r, size = g_scenario == SC_ECHO64 ? ECHO_SIZE : REPLY_SIZE;
    uint32_t x;
    for (;;) {
        switch (c->st) {
        case ST_WAIT:
            return;
        case ST_CONNECT: {
            int err = 0;
            socklen_t l = sizeof err;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
            if (err) { fail(c, "connect", err); return; }
            c->st = ST_HS;
            break;
        }
        case ST_HS:
            r = SSL_do_handshake(c->ssl);
            if (r == 1) {
                if (!atomic_exchange(&g_group_seen, 1)) note_group(c->ssl);
                if (after_handshake(c)) break;
                return;
            }
            if (!(x = want(c, r))) { fail(c, "handshake", errno); return; }
            set_interest(c, x);
            return;
        case ST_TICKETS:
        case ST_HOLD:
            /* Drain whatever is readable (tickets; data is not expected). */
            r = SSL_read(c->ssl, w->buf, BUF_SIZE);
            if (r > 0) break;
            if (!(x = want(c, r))) { fail(c, "read", errno); return; }
            if (c->st == ST_TICKETS && c->tickets >= g_tickets) { op_done(c); return; }
            set_interest(c, x);
            return;
        case ST_SEND:
            r = SSL_write(c->ssl, g_payload, size);
            if (r > 0) { c->st = ST_RECV; c->off = 0; break; }
            if (!(x = want(c, r))) { fail(c, "write", errno); return; }
            set_interest(c, x);
            return;
        case ST_RECV:
            r = SSL_read(c->ssl, w->buf, BUF_SIZE);
            if (r > 0) {
                if (r > size - c->off || memcmp(w->buf, g_payload + c->off, r)) {
                    fail(c, "echo mismatch", 0);
                    return;
                }
                w->bytes += r;
                if ((c->off += r) < size) break;
                if (g_scenario == SC_HS_REPLY) { op_done(c); return; }
                uint64_t t = now_ns();          /* echo64: next round trip */
                w->ops++;
                w->hist[bucket_of(t - c->t0)]++;
                c->t0 = t;
                c->st = ST_SEND;
                break;
            }
            if (!(x = want(c, r))) { fail(c, "read", errno); return; }
            set_interest(c, x);
            return;
        case ST_STREAM:
            stream(c);
            return;
        }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[MAX_EVENTS];
    w->started = g_scenario == SC_IDLE && w->n > IDLE_RAMP ? IDLE_RAMP : w->n;
    for (int i = 0; i < w->started; i++) start_conn(&w->conns[i]);
    while (!atomic_load(&g_stop)) {
        uint64_t now = now_ns();
        if (now >= w->deadline) break;
        uint64_t left_ms = (w->deadline - now) / 1000000 + 1;
        /* Short sleeps while slots are backing off or a stop may come. */
        int tmo = w->nwaiting ? 10 : 100;
        if (left_ms < (uint64_t)tmo) tmo = (int)left_ms;
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, tmo);
        for (int i = 0; i < n; i++) drive(evs[i].data.ptr);
        if (w->nwaiting) {
            now = now_ns();
            for (int i = 0; i < w->n; i++) {
                struct cconn *c = &w->conns[i];
                if (c->st == ST_WAIT && c->retry_at <= now) {
                    w->nwaiting--;
                    start_conn(c);
                }
            }
        }
    }
    w->t_end = now_ns();
    for (int i = 0; i < w->n; i++) drop(&w->conns[i], 0);
    return NULL;
}

/* ---- the threads shape: one blocking connection per thread -------------- */

/* Why a blocking step stopped. */
enum { BLK_OK, BLK_OVER, BLK_FAILED };

static int run_over(const struct worker *w)
{
    return atomic_load(&g_stop) || now_ns() >= w->deadline;
}

/* After an SSL call returned r <= 0: BLK_OK to call it again (the socket's
 * time-out expired, or a record other than data was processed), BLK_OVER if
 * the run is over, BLK_FAILED (logged) if the connection failed or stalled
 * since `since`. */
static int blk_retry(struct cconn *c, int r, uint64_t since, const char *what)
{
    int e = SSL_get_error(c->ssl, r), err = errno;
    if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        log_error(what, e == SSL_ERROR_SYSCALL ? err : 0);
        return BLK_FAILED;
    }
    if (run_over(c->w)) return BLK_OVER;
    if (now_ns() - since > STALL_MS * 1000000ull) {
        log_error(what, ETIMEDOUT);
        return BLK_FAILED;
    }
    return BLK_OK;
}

/* Connect (non-blocking, polled in slices so that the deadline holds), then
 * make the socket blocking with IO_SLICE_MS time-outs and start TLS. */
static int blk_connect(struct cconn *c)
{
    uint64_t since = now_ns();
    c->tickets = 0;
    c->fd = socket(g_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) { log_error("socket", errno); return BLK_FAILED; }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&g_addr, g_addrlen) < 0) {
        if (errno != EINPROGRESS) { log_error("connect", errno); return BLK_FAILED; }
        for (;;) {
            struct pollfd p = { .fd = c->fd, .events = POLLOUT };
            int n = poll(&p, 1, IO_SLICE_MS);
            if (n > 0) break;
            if (n < 0 && errno != EINTR) { log_error("poll", errno); return BLK_FAILED; }
            if (run_over(c->w)) return BLK_OVER;
            if (now_ns() - since > STALL_MS * 1000000ull) {
                log_error("connect", ETIMEDOUT);
                return BLK_FAILED;
            }
        }
        int err = 0;
        socklen_t l = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) { log_error("connect", err); return BLK_FAILED; }
    }
    int fl = fcntl(c->fd, F_GETFL);
    fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
    struct timeval tv = { .tv_sec = IO_SLICE_MS / 1000, .tv_usec = IO_SLICE_MS % 1000 * 1000 };
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    c->ssl = SSL_new(c->w->ctx);
    if (!c->ssl) { log_error("SSL_new", 0); return BLK_FAILED; }
    SSL_set_fd(c->ssl, c->fd);
    if (g_servername) SSL_set_tlsext_host_name(c->ssl, g_servername);
    SSL_set_connect_state(c->ssl);
    SSL_set_app_data(c->ssl, c);
    return BLK_OK;
}

static int blk_handshake(struct cconn *c)
{
    uint64_t since = now_ns();
    int r, k;
    while ((r = SSL_do_handshake(c->ssl)) != 1)
        if ((k = blk_retry(c, r, since, "handshake")) != BLK_OK) return k;
    return BLK_OK;
}

/* Write `size` bytes of the payload (a blocking SSL_write writes them all,
 * unless the time-out interrupts it: then it is retried as is). */
static int blk_write(struct cconn *c, int size)
{
    uint64_t since = now_ns();
    int r, k;
    while ((r = SSL_write(c->ssl, g_payload, size)) <= 0)
        if ((k = blk_retry(c, r, since, "write")) != BLK_OK) return k;
    return BLK_OK;
}

/* Read until the `size`-byte echo of the payload is back. */
static int blk_read_echo(struct cconn *c, int size)
{
    struct worker *w = c->w;
    uint64_t since = now_ns();
    int off = 0, r, k;
    while (off < size) {
        r = SSL_read(c->ssl, w->buf, size - off);
        if (r > 0) {
            if (memcmp(w->buf, g_payload + off, r)) {
                log_error("echo mismatch", 0);
                return BLK_FAILED;
            }
            off += r;
            w->bytes += r;
            since = now_ns();
            continue;
        }
        if ((k = blk_retry(c, r, since, "read")) != BLK_OK) return k;
    }
    return BLK_OK;
}

/* handshake: wait for the server's first TLS 1.3 session ticket(s), the
 * proof that it verified our Finished (see the top of this file). */
static int blk_tickets(struct cconn *c)
{
    uint64_t since = now_ns();
    int r, k;
    if (SSL_version(c->ssl) != TLS1_3_VERSION) return BLK_OK;
    while (c->tickets < g_tickets) {
        r = SSL_read(c->ssl, c->w->buf, BUF_SIZE);
        if (r > 0) continue;                /* data is not expected: ignored */
        if (c->tickets >= g_tickets) break;
        if ((k = blk_retry(c, r, since, "read")) != BLK_OK) return k;
    }
    return BLK_OK;
}

/* One connection, from connect to close: a handshake-type operation, or
 * echo round trips until the run is over. */
static int blk_session(struct cconn *c)
{
    struct worker *w = c->w;
    int k, size = g_scenario == SC_ECHO64 ? ECHO_SIZE
                  : g_scenario == SC_BULK ? CHUNK : REPLY_SIZE;
    c->t0 = now_ns();
    if ((k = blk_connect(c)) != BLK_OK || (k = blk_handshake(c)) != BLK_OK) return k;
    switch (g_scenario) {
    case SC_HANDSHAKE:
    case SC_HS_REPLY:
        if (g_scenario == SC_HANDSHAKE) k = blk_tickets(c);
        else if ((k = blk_write(c, size)) == BLK_OK) k = blk_read_echo(c, size);
        if (k != BLK_OK) return k;
        w->ops++;
        w->hist[bucket_of(now_ns() - c->t0)]++;
        drop(c, 1);
        return BLK_OK;
    default:                                /* echo64, bulk */
        for (;;) {
            uint64_t t = now_ns();
            if ((k = blk_write(c, size)) != BLK_OK || (k = blk_read_echo(c, size)) != BLK_OK)
                return k;
            w->ops++;
            w->hist[bucket_of(now_ns() - t)]++;
            if (run_over(w)) return BLK_OVER;
        }
    }
}

static void *blocking_main(void *arg)
{
    struct worker *w = arg;
    struct cconn *c = &w->conns[0];
    while (!run_over(w)) {
        int k = blk_session(c);
        if (k == BLK_FAILED) {
            w->errors++;
            drop(c, 0);
            /* rest before reconnecting, in slices: the deadline holds */
            uint64_t until = now_ns() + BACKOFF_MS * 1000000ull;
            while (!run_over(w) && now_ns() < until) usleep(10000);
        } else if (k == BLK_OVER) {
            break;
        }
    }
    w->t_end = now_ns();
    drop(c, 0);
    return NULL;
}

static void on_signal(int sig) { (void)sig; atomic_store(&g_stop, 1); }

static void usage(const char *argv0)
{
    fprintf(stderr,
        "usage: %s --port P --scenario S [--host 127.0.0.1] [--conns C]\n"
        "          [--duration SECONDS] [--threads T] [--tls12|--tls13]\n"
        "          [--cafile F] [--tickets N] [--servername NAME] [--groups LIST]\n"
        "          [--shape events|threads]\n"
        "  S: handshake | handshake-reply | echo64 | bulk | idle\n"
        "  --shape        events (default): T threads, each an event loop over\n"
        "                 its share of the C non-blocking connections;\n"
        "                 threads: C threads, each blocking on its own\n"
        "                 connection, write then read (no idle scenario)\n"
        "  --conns C      concurrent connections (default 1)\n"
        "  --duration S   run time, hard cap (default 3)\n"
        "  --threads T    client threads of the events shape (default 2)\n"
        "  --cafile F     verify the server's chain with F (default: no check)\n"
        "  --tickets N    handshake: TLS 1.3 tickets to await before closing\n"
        "                 (default 1; 0 = close right after the handshake)\n"
        "  --servername N the server name (SNI) every connection asks for\n"
        "  --groups LIST  key-exchange groups to offer, OpenSSL's syntax (default:\n"
        "                 the library's, X25519MLKEM768 first from OpenSSL 3.5)\n"
        "  idle: prints \"IDLE-READY <n>\" once all C connections are up (at\n"
        "  most max(30, SECONDS) s of connecting), then holds them SECONDS s\n"
        "  or until stdin (if a pipe/socket/tty) reaches EOF.\n", argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = NULL;
    double duration = 3;
    static const struct option opts[] = {
        {"host", 1, 0, 'H'}, {"port", 1, 0, 'p'}, {"scenario", 1, 0, 's'},
        {"conns", 1, 0, 'c'}, {"duration", 1, 0, 'd'}, {"threads", 1, 0, 't'},
        {"tls12", 0, 0, '2'}, {"tls13", 0, 0, '3'}, {"cafile", 1, 0, 'a'},
        {"tickets", 1, 0, 'k'}, {"servername", 1, 0, 'n'}, {"groups", 1, 0, 'g'},
        {"shape", 1, 0, 'S'},
        {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'H': host = optarg; break;
        case 'p': port = optarg; break;
        case 's':
            for (int i = 0; i < 5; i++)
                if (!strcmp(optarg, SC_NAMES[i])) g_scenario = i;
            break;
        case 'c': g_conns = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 't': g_threads = atoi(optarg); break;
        case '2': g_minv = g_maxv = TLS1_2_VERSION; break;
        case '3': g_minv = g_maxv = TLS1_3_VERSION; break;
        case 'a': g_cafile = optarg; break;
        case 'k': g_tickets = atoi(optarg); break;
        case 'n': g_servername = optarg; break;
        case 'g': g_groups = optarg; break;
        case 'S':
            if (!strcmp(optarg, SHAPE_NAMES[SHAPE_EVENTS])) g_shape = SHAPE_EVENTS;
            else if (!strcmp(optarg, SHAPE_NAMES[SHAPE_THREADS])) g_shape = SHAPE_THREADS;
            else usage(argv[0]);
            break;
        default: usage(argv[0]);
        }
    }
    if (!port || g_scenario < 0 || g_conns < 1 || g_threads < 1 || duration <= 0
        || g_tickets < 0 || (g_shape == SHAPE_THREADS && g_scenario == SC_IDLE))
        usage(argv[0]);
    if (g_threads > g_conns || g_shape == SHAPE_THREADS) g_threads = g_conns;

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) { fprintf(stderr, "%s: %s\n", host, gai_strerror(gai)); return 2; }
    memcpy(&g_addr, ai->ai_addr, ai->ai_addrlen);
    g_addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);

    struct rlimit rl;       /* idle may hold thousands of sockets */
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    for (int i = 0; i < CHUNK; i++) g_payload[i] = (unsigned char)('a' + i % 26);

    uint64_t t_start = now_ns();
    uint64_t deadline = g_scenario == SC_IDLE ? UINT64_MAX
                                              : t_start + (uint64_t)(duration * 1e9);
    struct worker *ws = calloc(g_threads, sizeof *ws);
    struct cconn *all = calloc(g_conns, sizeof *all);
    if (!ws || !all) return 1;
    for (int t = 0, k = 0; t < g_threads; t++) {
        struct worker *w = &ws[t];
        w->n = g_conns / g_threads + (t < g_conns % g_threads);
        w->conns = all + k;
        k += w->n;
        w->deadline = deadline;
        for (int i = 0; i < w->n; i++) { w->conns[i].fd = -1; w->conns[i].w = w; }
        w->ctx = SSL_CTX_new(TLS_client_method());
        w->ep = g_shape == SHAPE_EVENTS ? epoll_create1(EPOLL_CLOEXEC) : -1;
        if (!w->ctx || (g_shape == SHAPE_EVENTS && w->ep < 0)) {
            ERR_print_errors_fp(stderr);
            return 1;
        }
        if (g_minv) {
            SSL_CTX_set_min_proto_version(w->ctx, g_minv);
            SSL_CTX_set_max_proto_version(w->ctx, g_maxv);
        }
        if (g_groups && SSL_CTX_set1_groups_list(w->ctx, g_groups) != 1) {
            fprintf(stderr, "--groups %s: not groups this OpenSSL knows\n", g_groups);
            ERR_print_errors_fp(stderr);
            return 2;
        }
        if (g_cafile) {
            if (SSL_CTX_load_verify_locations(w->ctx, g_cafile, NULL) != 1) {
                ERR_print_errors_fp(stderr);
                return 2;
            }
            SSL_CTX_set_verify(w->ctx, SSL_VERIFY_PEER, NULL);
        }
        /* Counting tickets needs the client-side "new session" callback;
         * NO_INTERNAL_STORE: we keep nothing, every handshake is full. */
        SSL_CTX_set_session_cache_mode(w->ctx, SSL_SESS_CACHE_CLIENT
                                                   | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(w->ctx, on_new_session);
        SSL_CTX_set_mode(w->ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* Read-ahead: one read() fetches many records instead of two read()s
         * per record -- the client must be cheaper than the servers.  Every
         * reading state drains SSL_read() until WANT_READ (bulk: re-arms
         * itself), so records buffered in OpenSSL are never stranded. */
        SSL_CTX_set_read_ahead(w->ctx, 1);
        /* threads: a blocking SSL_read returns after a ticket (see the top) */
        if (g_shape == SHAPE_THREADS) SSL_CTX_clear_mode(w->ctx, SSL_MODE_AUTO_RETRY);
        if (pthread_create(&w->tid, NULL,
                           g_shape == SHAPE_THREADS ? blocking_main : worker_main, w)) {
            perror("pthread");
            return 1;
        }
    }

    double seconds;
    int idle_held = 0;
    if (g_scenario == SC_IDLE) {
        /* Wait for all connections, announce, hold, then stop the workers. */
        struct stat st;
        int watch = fstat(0, &st) == 0
                    && (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) || isatty(0));
        double cap = duration > 30 ? duration : 30;
        uint64_t until = t_start + (uint64_t)(cap * 1e9);
        while (!atomic_load(&g_stop) && atomic_load(&g_connected) < g_conns
               && now_ns() < until)
            usleep(10000);
        uint64_t held = now_ns();
        if (!atomic_load(&g_stop) && atomic_load(&g_connected) >= g_conns) {
            printf("IDLE-READY %d\n", atomic_load(&g_connected));
            fflush(stdout);
            until = held + (uint64_t)(duration * 1e9);
            uint64_t now;
            while (!atomic_load(&g_stop) && (now = now_ns()) < until) {
                uint64_t left = (until - now) / 1000000 + 1;
                int tmo = left < 100 ? (int)left : 100;
                if (watch) {
                    struct pollfd p = { .fd = 0, .events = POLLIN };
                    char b[256];
                    if (poll(&p, 1, tmo) > 0 && read(0, b, sizeof b) <= 0) break;
                } else {
                    usleep(tmo * 1000);
                }
            }
        }
        seconds = (now_ns() - held) / 1e9;
        idle_held = atomic_load(&g_connected);
        atomic_store(&g_stop, 1);
        for (int t = 0; t < g_threads; t++) pthread_join(ws[t].tid, NULL);
    } else {
        uint64_t t_end = t_start;
        for (int t = 0; t < g_threads; t++) {
            pthread_join(ws[t].tid, NULL);
            if (ws[t].t_end > t_end) t_end = ws[t].t_end;
        }
        seconds = (t_end - t_start) / 1e9;
    }

    uint64_t ops = 0, bytes = 0, errors = 0;
    static uint64_t hist[NBUCKETS];
    for (int t = 0; t < g_threads; t++) {
        ops += ws[t].ops; bytes += ws[t].bytes; errors += ws[t].errors;
        for (int i = 0; i < NBUCKETS; i++) hist[i] += ws[t].hist[i];
        if (ws[t].ep >= 0) close(ws[t].ep);
        SSL_CTX_free(ws[t].ctx);
    }
    if (g_scenario == SC_BULK) ops = bytes / CHUNK;
    if (g_scenario == SC_IDLE) ops = idle_held;     /* connections held */
    double p50 = percentile_ms(hist, 0.50), p99 = percentile_ms(hist, 0.99);
    char s50[32] = "null", s99[32] = "null";
    if (p50 >= 0) snprintf(s50, sizeof s50, "%.4f", p50);
    if (p99 >= 0) snprintf(s99, sizeof s99, "%.4f", p99);
    printf("{\"scenario\":\"%s\",\"ops\":%llu,\"seconds\":%.4f,\"ops_per_sec\":%.2f,"
           "\"bytes\":%llu,\"p50_ms\":%s,\"p99_ms\":%s,\"errors\":%llu,"
           "\"conns\":%d,\"threads\":%d,\"group\":\"%s\",\"openssl\":\"%s\",\"shape\":\"%s\"}\n",
           SC_NAMES[g_scenario], (unsigned long long)ops, seconds,
           seconds > 0 ? ops / seconds : 0.0, (unsigned long long)bytes, s50, s99,
           (unsigned long long)errors, g_conns, g_threads, g_group,
           OpenSSL_version(OPENSSL_VERSION), SHAPE_NAMES[g_shape]);
    fflush(stdout);
    free(all);
    free(ws);
    return 0;
}
