/*
 * ref_server.c -- the "C reference" TLS echo server of the benchmark suite.
 *
 * Theory of operation
 * -------------------
 * One listening socket (non-blocking) is shared by N worker threads.  Each
 * worker owns a private epoll instance to which the listener is added with
 * EPOLLEXCLUSIVE, so an incoming connection wakes one worker, not all of
 * them (no thundering herd); the worker that accepts a connection owns it
 * for its whole life, so no connection state is ever shared or locked.
 * (The alternative, one SO_REUSEPORT listener per thread, hashes connections
 * to threads statically; EPOLLEXCLUSIVE hands them to whichever worker is
 * idle, which suits the short handshake-only connections better.)
 *
 * Every connection is a small state machine driven by level-triggered
 * epoll events:
 *   handshake  -> SSL_do_handshake() until it returns 1;
 *   echo       -> SSL_read() into a per-thread scratch buffer, SSL_write()
 *                 the same bytes back.  If the write cannot complete
 *                 (WANT_WRITE), the unsent bytes are copied into a
 *                 per-connection pending buffer (at most one read's worth,
 *                 16 KiB) and the connection stops *reading* (interest is
 *                 switched to EPOLLOUT only) until that buffer is flushed.
 *                 This bounds memory and gives natural back-pressure.
 *   close      -> on close_notify we answer with our own close_notify (one
 *                 non-blocking SSL_shutdown) and close; on any error we just
 *                 close.
 * The interest set (EPOLLIN / EPOLLOUT) always follows what OpenSSL asked
 * for (SSL_ERROR_WANT_READ / WANT_WRITE), which covers the rare cases where
 * a read needs a write (key update) or vice versa.
 *
 * TLS: TLS_server_method, SSL_MODE_RELEASE_BUFFERS (idle connections keep no
 * record buffers), no server-side session cache (stateless tickets need
 * none), session tickets at OpenSSL defaults (2 tickets per TLS 1.3
 * handshake).  Accepted sockets get TCP_NODELAY so that small echoes are not
 * held back by Nagle + delayed ACK.
 *
 * Shutdown: SIGINT/SIGTERM write to an eventfd present (non-exclusively) in
 * every worker's epoll set; every worker wakes, frees its connections and
 * exits; main joins them and prints a one-line summary on stderr.
 *
 * stdout: "READY <port>" (flushed) once listening; nothing else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

/* One TLS record carries at most 16 KiB of plaintext and SSL_read()
 * returns at most one record, so a 16 KiB buffer always takes a whole
 * record; without read-ahead nothing is then left inside OpenSSL. */
#define BUF_SIZE 16384
/* Records echoed per wake-up before we yield to other connections (level-
 * triggered epoll brings us back if the socket still has data; records
 * already buffered in OpenSSL (read-ahead) are always drained).  Large
 * enough to amortise epoll_wait, small enough to keep things fair. */
#define MAX_READS_PER_EVENT 16
/* Connections accepted per listener wake-up, for the same fairness reason. */
#define MAX_ACCEPTS_PER_EVENT 16
#define MAX_EVENTS 256

struct conn {
    int fd;
    SSL *ssl;
    uint32_t ev;            /* epoll interest currently registered */
    int hs_done;
    unsigned char *pend;    /* pending output (malloc'd only while needed) */
    int pend_len;
    struct conn *prev, *next;   /* per-worker list, for cleanup at exit */
};

struct worker {
    pthread_t tid;
    int ep;
    struct conn *conns;
    unsigned long long accepted, handshakes, hs_failures;
    unsigned char buf[BUF_SIZE];    /* scratch read buffer */
};

static SSL_CTX *g_ctx;
static int g_lfd, g_efd;
/* Distinct addresses used as epoll tags for the two non-connection fds. */
static char TAG_LISTEN, TAG_STOP;

static void on_signal(int sig)
{
    uint64_t one = 1;
    (void)sig;
    if (write(g_efd, &one, sizeof one) < 0) { /* nothing to do */ }
}

static void conn_close(struct worker *w, struct conn *c)
{
    /* close() removes the fd from the epoll set (we never dup it). */
    if (c->prev) c->prev->next = c->next; else w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    SSL_free(c->ssl);
    close(c->fd);
    free(c->pend);
    free(c);
}

static void set_interest(struct worker *w, struct conn *c, uint32_t ev)
{
    if (ev == c->ev) return;
    struct epoll_event e = { .events = ev, .data.ptr = c };
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &e);
    c->ev = ev;
}

/* Map the result of an SSL call that returned r <= 0.  Returns 0 if the
 * connection stays open (interest updated), -1 if it has been closed. */
static int handle_ssl_result(struct worker *w, struct conn *c, int r)
{
    switch (SSL_get_error(c->ssl, r)) {
    case SSL_ERROR_WANT_READ:  set_interest(w, c, EPOLLIN);  return 0;
    case SSL_ERROR_WANT_WRITE: set_interest(w, c, EPOLLOUT); return 0;
    case SSL_ERROR_ZERO_RETURN:         /* peer sent close_notify */
        SSL_shutdown(c->ssl);           /* answer once, don't wait */
        break;
    default:
        if (!c->hs_done) w->hs_failures++;
        break;
    }
    ERR_clear_error();      /* error queue is per thread; keep it empty */
    conn_close(w, c);
    return -1;
}

/* Advance one connection as far as it can go without blocking. */
static void conn_run(struct worker *w, struct conn *c)
{
    int r;
    if (!c->hs_done) {
        r = SSL_do_handshake(c->ssl);
        if (r <= 0) { handle_ssl_result(w, c, r); return; }
        c->hs_done = 1;
        w->handshakes++;
    }
    /* 1. Flush output left over from a previous event. */
    if (c->pend) {
        r = SSL_write(c->ssl, c->pend, c->pend_len);
        if (r <= 0) { handle_ssl_result(w, c, r); return; }
        free(c->pend);  /* partial writes are off: r == pend_len, all sent */
        c->pend = NULL;
    }
    /* 2. Echo loop. */
    for (int i = 0; i < MAX_READS_PER_EVENT || SSL_has_pending(c->ssl); i++) {
        r = SSL_read(c->ssl, w->buf, BUF_SIZE);
        if (r <= 0) { handle_ssl_result(w, c, r); return; }
        int n = r;
        r = SSL_write(c->ssl, w->buf, n);
        if (r <= 0) {
            /* OpenSSL wants the retry with the same bytes; keep a copy and
             * stop reading until it has gone out (back-pressure). */
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                c->pend = malloc(n);
                if (!c->pend) { conn_close(w, c); return; }
                memcpy(c->pend, w->buf, n);
                c->pend_len = n;
            }
            handle_ssl_result(w, c, r);
            return;
        }
    }
    set_interest(w, c, EPOLLIN);
}

static void do_accept(struct worker *w)
{
    for (int i = 0; i < MAX_ACCEPTS_PER_EVENT; i++) {
        int fd = accept4(g_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == ECONNABORTED || errno == EINTR) continue;
            /* Out of fds/memory: the listener stays readable, so without a
             * pause level-triggered epoll would spin; 10 ms is long enough
             * to be cheap, short enough not to matter to a benchmark. */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS
                || errno == ENOMEM)
                usleep(10000);
            return;             /* EAGAIN: another worker got it */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        SSL *ssl = c ? SSL_new(g_ctx) : NULL;
        if (!ssl) { free(c); close(fd); continue; }
        c->fd = fd;
        c->ssl = ssl;
        SSL_set_fd(ssl, fd);
        SSL_set_accept_state(ssl);
        c->ev = EPOLLIN;
        struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &e) < 0) {
            SSL_free(ssl); close(fd); free(c); continue;
        }
        c->next = w->conns;
        if (w->conns) w->conns->prev = c;
        w->conns = c;
        w->accepted++;
        /* On loopback the ClientHello is often already queued: try now
         * rather than paying one more epoll round trip. */
        conn_run(w, c);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[MAX_EVENTS];
    for (;;) {
        int n = epoll_wait(w->ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &TAG_STOP) goto out;
            if (p == &TAG_LISTEN) do_accept(w);
            else conn_run(w, p);        /* EPOLLHUP/ERR surface as errors */
        }
    }
out:
    while (w->conns) conn_close(w, w->conns);
    return NULL;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
        "usage: %s --port P --cert CERT.pem --key KEY.pem [--threads N]\n"
        "          [--host 127.0.0.1] [--tls12-only | --tls13-only] [--read-ahead]\n"
        "  --threads N    worker threads (default: one per online CPU)\n"
        "  --read-ahead   let OpenSSL read() whole socket buffers instead of\n"
        "                 header then body of each record (fewer syscalls)\n",
        argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = NULL, *cert = NULL, *key = NULL;
    int nthreads = (int)sysconf(_SC_NPROCESSORS_ONLN), only = 0, read_ahead = 0;
    static const struct option opts[] = {
        {"port", 1, 0, 'p'}, {"cert", 1, 0, 'c'}, {"key", 1, 0, 'k'},
        {"threads", 1, 0, 't'}, {"host", 1, 0, 'H'},
        {"tls12-only", 0, 0, '2'}, {"tls13-only", 0, 0, '3'},
        {"read-ahead", 0, 0, 'r'}, {0, 0, 0, 0}};
    for (int o; (o = getopt_long(argc, argv, "", opts, NULL)) != -1;) {
        switch (o) {
        case 'p': port = optarg; break;
        case 'c': cert = optarg; break;
        case 'k': key = optarg; break;
        case 't': nthreads = atoi(optarg); break;
        case 'H': host = optarg; break;
        case '2': only = TLS1_2_VERSION; break;
        case '3': only = TLS1_3_VERSION; break;
        case 'r': read_ahead = 1; break;
        default: usage(argv[0]);
        }
    }
    if (!port || !cert || !key || nthreads < 1) usage(argv[0]);

    /* Many idle connections are part of the benchmark: lift the fd limit. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);   /* a peer may vanish while we write */

    g_ctx = SSL_CTX_new(TLS_server_method());
    if (!g_ctx
        || SSL_CTX_use_certificate_chain_file(g_ctx, cert) != 1
        || SSL_CTX_use_PrivateKey_file(g_ctx, key, SSL_FILETYPE_PEM) != 1
        || SSL_CTX_check_private_key(g_ctx) != 1) {
        ERR_print_errors_fp(stderr);
        return 1;
    }
    if (only) {
        SSL_CTX_set_min_proto_version(g_ctx, only);
        SSL_CTX_set_max_proto_version(g_ctx, only);
    }
    /* MOVING_WRITE_BUFFER: a blocked SSL_write is retried from c->pend, not
     * from the scratch buffer it was first given. */
    SSL_CTX_set_mode(g_ctx, SSL_MODE_RELEASE_BUFFERS
                                | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
    /* Off by default (OpenSSL's default: two read()s per record).  When on,
     * decrypted-but-unread records can sit inside OpenSSL where epoll cannot
     * see them: the echo loop therefore keeps going while SSL_has_pending(). */
    if (read_ahead) SSL_CTX_set_read_ahead(g_ctx, 1);

    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE }, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) { fprintf(stderr, "%s: %s\n", host, gai_strerror(gai)); return 1; }
    g_lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(g_lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (g_lfd < 0 || bind(g_lfd, ai->ai_addr, ai->ai_addrlen) < 0
        || listen(g_lfd, SOMAXCONN) < 0) {
        perror("listen");
        return 1;
    }
    freeaddrinfo(ai);

    g_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    struct worker *ws = calloc(nthreads, sizeof *ws);
    for (int i = 0; i < nthreads; i++) {
        ws[i].ep = epoll_create1(EPOLL_CLOEXEC);
        struct epoll_event el = { .events = EPOLLIN | EPOLLEXCLUSIVE,
                                  .data.ptr = &TAG_LISTEN };
        struct epoll_event es = { .events = EPOLLIN, .data.ptr = &TAG_STOP };
        if (ws[i].ep < 0 || epoll_ctl(ws[i].ep, EPOLL_CTL_ADD, g_lfd, &el) < 0
            || epoll_ctl(ws[i].ep, EPOLL_CTL_ADD, g_efd, &es) < 0
            || pthread_create(&ws[i].tid, NULL, worker_main, &ws[i]) != 0) {
            perror("worker setup");
            return 1;
        }
    }

    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(g_lfd, (struct sockaddr *)&ss, &sl);
    int real_port = ntohs(ss.ss_family == AF_INET6
                              ? ((struct sockaddr_in6 *)&ss)->sin6_port
                              : ((struct sockaddr_in *)&ss)->sin_port);
    printf("READY %d\n", real_port);
    fflush(stdout);

    unsigned long long acc = 0, hs = 0, fail = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(ws[i].tid, NULL);
        close(ws[i].ep);
        acc += ws[i].accepted; hs += ws[i].handshakes; fail += ws[i].hs_failures;
    }
    fprintf(stderr, "ref_server: accepted=%llu handshakes=%llu hs_failures=%llu\n",
            acc, hs, fail);
    free(ws);
    close(g_lfd);
    close(g_efd);
    SSL_CTX_free(g_ctx);
    return 0;
}
