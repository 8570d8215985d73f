/*
 * Connections: blocking-looking calls over a non-blocking socket.
 *
 * Theory of operation
 *  - The socket is always non-blocking.  A call that must wait does so in poll() with the
 *    caller's deadline, holding no SSL lock, so a read blocked in one thread never stops a
 *    write in another.  SSL_* calls run under ssl_lock and never block.
 *  - read_lock serialises readers (the framing state is theirs), write_lock serialises
 *    writers (so two frames never interleave).  Lock order: read/write lock, then ssl_lock.
 *  - The transmission mode is set under ssl_lock only; the reader and the writer each copy
 *    it at the start of their next call (take_mode), so a change never waits for a call
 *    blocked on the network, and a call in progress keeps the mode it started with.
 *  - ss_conn_close sets `closing`, sends close_notify and shuts the socket down: poll()
 *    wakes in every blocked call, which sees `closing` and returns SS_E_CLOSED.  Memory and
 *    the descriptor go in ss_conn_free, once no call is in progress (the binding ensures it).
 *  - A fatal error (reset, TLS error, malformed frame) moves the connection to BROKEN and
 *    is kept: every later call fails with the same record.  A time-out is not fatal unless
 *    part of a frame had already been written.
 *  - Framing state lives in the connection, so a read that times out half-way through a
 *    frame loses nothing: the next read continues it.
 */

#include "ss_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A size header is at most 20 digits (2^64 has 20) plus CR LF. */
#define SS_MAX_SIZE_DIGITS 20
/* A stream read (SS_MODE_NO_END_TAG) gathers up to this much of what OpenSSL has read
 * ahead: four records, one call. */
#define SS_TOP_UP (64u << 10)
/* Buffers larger than this are given back once empty (ss_conn_trim). */
#define SS_KEEP_BUFFER (64u << 10)

int ss_set_nodelay(int fd)
{
    int one = 1;
    return setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void ss_addr_to_str(const struct sockaddr *sa, char *host, size_t host_len, int *port)
{
    host[0] = '\0';
    *port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, (socklen_t)host_len);
        *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) /* show 127.0.0.1, not ::ffff:127.0.0.1 */
            inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], host, (socklen_t)host_len);
        else
            inet_ntop(AF_INET6, &in6->sin6_addr, host, (socklen_t)host_len);
        *port = ntohs(in6->sin6_port);
    }
}

ss_conn *ss_conn_wrap(int fd, SSL *ssl, ss_ctx *ctx, const struct sockaddr *peer,
                      socklen_t peer_len)
{
    ss_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    c->ssl = ssl;
    c->ctx = ctx;
    if (ctx)
        ss_ctx_ref(ctx);
    pthread_mutex_init(&c->ssl_lock, NULL);
    pthread_mutex_init(&c->read_lock, NULL);
    pthread_mutex_init(&c->write_lock, NULL);
    atomic_init(&c->closing, 0);
    atomic_init(&c->state, SS_STATE_OPEN);
    c->mode = c->wmode = c->set_mode = SS_MODE_SIZE;
    memcpy(c->tag, "<EOF>", 5);
    memcpy(c->wtag, "<EOF>", 5);
    memcpy(c->set_tag, "<EOF>", 5);
    c->tag_len = c->wtag_len = c->set_tag_len = 5;
    atomic_init(&c->mode_gen, 0);
    c->max_message = SS_DEFAULT_MAX_MESSAGE;
    c->want = -1;
    c->hub_slot = -1;
    c->high_water = SS_DEFAULT_HIGH_WATER;
    if (peer && peer_len <= sizeof c->peer) {
        memcpy(&c->peer, peer, peer_len);
        c->peer_len = peer_len;
    }
    return c;
}

/* ---- buffers --------------------------------------------------------------------- */

int ss_buf_reserve(ss_buf *b, size_t extra)
{
    if (b->off + b->len + extra <= b->cap)
        return 0;
    if (b->off) { /* slide the unread bytes to the front before growing */
        memmove(b->data, b->data + b->off, b->len);
        b->off = 0;
        if (b->len + extra <= b->cap)
            return 0;
    }
    size_t cap = b->cap ? b->cap : SS_RECORD;
    while (cap < b->len + extra)
        cap *= 2; /* doubling keeps large messages linear, not quadratic */
    char *d = realloc(b->data, cap);
    if (!d)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

/* The unread bytes of b.  A connection that has not read yet (or gave its buffer back
 * while idle) has data == NULL, and NULL + 0 is undefined behaviour in C. */
static const char *buf_head(const ss_buf *b)
{
    return b->data ? b->data + b->off : NULL;
}

static void buf_consume(ss_buf *b, size_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0)
        b->off = 0;
}

static void buf_release_if_big(ss_buf *b)
{
    if (b->len == 0 && b->cap > SS_KEEP_BUFFER) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
        b->off = 0;
    }
}

/* The message limit in force: whoever set it (a connection, a channel engine taking a
 * listener's setting), never beyond SS_MAX_MESSAGE_LIMIT, so that a size header's value
 * and the end-tag search stay exact (no wrap to a negative size). */
static inline size_t msg_limit(const ss_conn *c)
{
    return c->max_message > SS_MAX_MESSAGE_LIMIT ? SS_MAX_MESSAGE_LIMIT : c->max_message;
}

/* What kind of byte broke a frame, for the error message: a frame error is the peer's
 * plaintext, so messages (and the logs they reach) describe it and never quote it. */
static const char *byte_kind(unsigned char ch)
{
    if (ch >= 'a' && ch <= 'z')
        return "a letter";
    if (ch >= 'A' && ch <= 'Z')
        return "a letter";
    if (ch == ' ' || ch == '\t')
        return "a space";
    if (ch == '\r')
        return "a CR not followed by LF";
    if (ch < 0x20 || ch == 0x7f)
        return "a control character";
    if (ch >= 0x80)
        return "a byte outside ASCII";
    return "punctuation";
}

/* ---- the socket BIO ------------------------------------------------------------------ */

/* OpenSSL writes each TLS record (16 KiB at most) with its own write(): a 64 KiB message
 * is four TCP pushes, four wake-ups of the peer, four trips through the loopback or the
 * NIC's queue.  sslsock's BIO is OpenSSL's socket BIO but for its write, which passes
 * MSG_MORE while the writing thread says more of the same message follows (io_write_all
 * sets it around each record but the last), so the kernel sends them together. */
static __thread int write_more;
static BIO_METHOD *sock_method;
static pthread_once_t sock_method_once = PTHREAD_ONCE_INIT;

static int sock_write_more(BIO *b, const char *buf, int len)
{
    int fd = -1;
    BIO_get_fd(b, &fd);
    BIO_clear_retry_flags(b);
    ssize_t n = send(fd, buf, (size_t)len, MSG_NOSIGNAL | (write_more ? MSG_MORE : 0));
    if (n < 0 && BIO_sock_should_retry(-1))
        BIO_set_retry_write(b);
    return (int)n;
}

static void make_sock_method(void)
{
    const BIO_METHOD *base = BIO_s_socket();
    BIO_METHOD *m = BIO_meth_new(BIO_TYPE_SOCKET, "sslsock socket");
    if (!m)
        return;
    if (!BIO_meth_set_write(m, sock_write_more) ||
        !BIO_meth_set_read(m, BIO_meth_get_read(base)) ||
        !BIO_meth_set_puts(m, BIO_meth_get_puts(base)) ||
        !BIO_meth_set_ctrl(m, BIO_meth_get_ctrl(base)) ||
        !BIO_meth_set_create(m, BIO_meth_get_create(base)) ||
        !BIO_meth_set_destroy(m, BIO_meth_get_destroy(base))) {
        BIO_meth_free(m);
        return;
    }
    sock_method = m; /* kept for the life of the process */
}

int ss_ssl_set_fd(SSL *ssl, int fd)
{
    pthread_once(&sock_method_once, make_sock_method);
    if (!sock_method)
        return SSL_set_fd(ssl, fd); /* OpenSSL's own: correct, one push per record */
    BIO *b = BIO_new(sock_method);
    if (!b)
        return 0;
    BIO_set_fd(b, fd, BIO_NOCLOSE);
    SSL_set_bio(ssl, b, b);
    return 1;
}

/* ---- state ----------------------------------------------------------------------- */

static int closed_error(ss_err *err)
{
    return ss_fail(err, SS_E_CLOSED, "the socket was closed (SocketClose) while in use");
}

/* Record a fatal error: the connection is BROKEN from now on, with this reason. */
static int breaks(ss_conn *c, int rc, ss_err *err)
{
    if (rc == SS_E_TIMEOUT || rc == SS_E_CLOSED)
        return rc;
    pthread_mutex_lock(&c->ssl_lock);
    int first = atomic_load(&c->state) == SS_STATE_OPEN;
    if (first) {
        /* kept apart: an open connection does not carry a 0.8 KiB record it never uses */
        c->broken = malloc(sizeof *c->broken);
        if (c->broken)
            *c->broken = *err;
        atomic_store(&c->state, SS_STATE_BROKEN);
        /* The peer must learn it too, not wait on a connection we no longer use: after a
         * framing error the TLS layer is sound, so say goodbye properly first. */
        if (c->ssl && (rc == SS_E_FRAME || rc == SS_E_TOO_BIG)) {
            SSL_shutdown(c->ssl); /* one non-blocking attempt */
            ERR_clear_error();
        }
    }
    pthread_mutex_unlock(&c->ssl_lock);
    if (first)
        shutdown(c->fd, SHUT_RDWR); /* also wakes a call blocked in the other direction */
    return rc;
}

static int check_usable(ss_conn *c, ss_err *err)
{
    if (atomic_load(&c->closing))
        return closed_error(err);
    if (atomic_load(&c->state) == SS_STATE_BROKEN) {
        pthread_mutex_lock(&c->ssl_lock);
        if (c->broken)
            *err = *c->broken;
        else
            ss_fail(err, SS_E_NOMEM, "the connection broke (its reason was lost: out of memory)");
        pthread_mutex_unlock(&c->ssl_lock);
        return err->code;
    }
    return SS_OK;
}

/* Copy SocketChangeTransmissionMode's latest setting into one side's copy (the reader's or
 * the writer's, under that side's lock) if it changed since; returns 1 if it did. */
static int take_mode(ss_conn *c, int *mode, char *tag, size_t *tag_len, unsigned *gen)
{
    if (atomic_load(&c->mode_gen) == *gen)
        return 0;
    pthread_mutex_lock(&c->ssl_lock);
    *mode = c->set_mode;
    memcpy(tag, c->set_tag, c->set_tag_len);
    *tag_len = c->set_tag_len;
    *gen = atomic_load(&c->mode_gen);
    pthread_mutex_unlock(&c->ssl_lock);
    return 1;
}

static int wait_fd(ss_conn *c, short events, long long deadline, ss_err *err,
                   const char *doing)
{
    for (;;) {
        if (atomic_load(&c->closing))
            return closed_error(err);
        struct pollfd p = {.fd = c->fd, .events = events};
        int n = poll(&p, 1, ss_remaining(deadline));
        if (atomic_load(&c->closing))
            return closed_error(err);
        if (atomic_load(&c->state) == SS_STATE_BROKEN)
            return check_usable(c, err);
        if (n > 0)
            return SS_OK; /* readable, writable, or an error the next I/O call reports */
        if (n == 0)
            return ss_fail(err, SS_E_TIMEOUT, "time-out %s", doing);
        if (errno != EINTR)
            return ss_fail_errno(err, SS_E_SYSTEM, errno, "poll() failed %s", doing);
    }
}

static int io_error(int errnum, ss_err *err, const char *doing)
{
    if (errnum == ECONNRESET || errnum == EPIPE || errnum == ECONNABORTED ||
        errnum == ETIMEDOUT)
        return ss_fail_errno(err, SS_E_RESET, errnum, "the connection was lost %s", doing);
    return ss_fail_errno(err, SS_E_SYSTEM, errnum, "socket error %s", doing);
}

/* One non-blocking read attempt of at most len bytes (>= 1).  Returns the count,
 * SS_E_AGAIN when the socket has nothing now (*wants: POLLIN or POLLOUT, what to wait
 * for), or a negative SS_E_* code. */
static long io_read_once(ss_conn *c, char *buf, size_t len, short *wants, ss_err *err)
{
    static const char doing[] = "while reading";
    if (len > INT_MAX)
        len = INT_MAX;
    *wants = POLLIN;
    if (!c->ssl) {
        for (;;) {
            ssize_t r = recv(c->fd, buf, len, 0);
            if (r > 0) {
                atomic_fetch_add(&c->bytes_in, (unsigned long long)r);
                return r;
            }
            if (r == 0)
                return ss_fail(err, SS_E_PEER_CLOSED, "the peer closed the connection");
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return SS_E_AGAIN;
            if (atomic_load(&c->closing))
                return closed_error(err);
            return io_error(errno, err, doing);
        }
    }
    pthread_mutex_lock(&c->ssl_lock);
    ERR_clear_error();
    int n = SSL_read(c->ssl, buf, (int)len);
    int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
    int errnum = errno;
    pthread_mutex_unlock(&c->ssl_lock);
    if (n > 0) {
        atomic_fetch_add(&c->bytes_in, (unsigned long long)n);
        return n;
    }
    switch (e) {
    case SSL_ERROR_WANT_READ:
        return SS_E_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        *wants = POLLOUT;
        return SS_E_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
        return ss_fail(err, SS_E_PEER_CLOSED, "the peer closed the connection");
    case SSL_ERROR_SYSCALL:
        if (atomic_load(&c->closing))
            return closed_error(err);
        if (errnum == 0 || errnum == EAGAIN)
            return ss_fail(err, SS_E_PEER_CLOSED,
                           "the peer closed the connection without close_notify");
        return io_error(errnum, err, doing);
    default:
        if (atomic_load(&c->closing))
            return closed_error(err);
        if (ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
            ERR_clear_error();
            return ss_fail(err, SS_E_PEER_CLOSED,
                           "the peer closed the connection without close_notify");
        }
        return ss_fail_ssl(err, SS_E_TLS, "TLS error while reading");
    }
}

/* Read at most len bytes (>= 1), waiting until the deadline.  Returns the count, or a
 * negative SS_E_* code. */
static long io_read(ss_conn *c, char *buf, size_t len, long long deadline, ss_err *err)
{
    for (;;) {
        short wants;
        long n = io_read_once(c, buf, len, &wants, err);
        if (n != SS_E_AGAIN)
            return n;
        if (deadline == SS_NO_IO)
            return SS_E_AGAIN;
        int rc = wait_fd(c, wants, deadline, err, "while reading");
        if (rc)
            return rc;
    }
}

long ss_conn_read_nowait(ss_conn *c, char *dst, size_t room, int *more, int *end,
                         int *write_first, ss_err *err)
{
    size_t got = 0;
    *more = 0;
    *end = 0;
    *write_first = 0;
    while (got < room) {
        short wants;
        long n = io_read_once(c, dst + got, room - got, &wants, err);
        if (n == SS_E_AGAIN) {
            *write_first = wants == POLLOUT;
            return (long)got;
        }
        if (n < 0) {
            *end = (int)n; /* reported after the bytes before it */
            return (long)got;
        }
        got += (size_t)n;
    }
    *more = 1; /* out of room: OpenSSL (read-ahead) or the socket may hold more */
    return (long)got;
}

/* Write all of buf. *written counts what went out, so callers can tell a clean time-out
 * (nothing sent) from a torn frame. */
static int io_write_all(ss_conn *c, const char *buf, size_t len, long long deadline,
                        size_t *written, ss_err *err)
{
    static const char doing[] = "while writing";
    while (len > 0) {
        int rc = 0;
        size_t chunk = len > INT_MAX ? INT_MAX : len;
        if (!c->ssl) {
            ssize_t r = send(c->fd, buf, chunk, MSG_NOSIGNAL);
            if (r > 0) {
                buf += r;
                len -= (size_t)r;
                *written += (size_t)r;
                atomic_fetch_add(&c->bytes_out, (unsigned long long)r);
                continue;
            }
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                return atomic_load(&c->closing) ? closed_error(err) : io_error(errno, err, doing);
            if (deadline == SS_NO_IO)
                return SS_E_AGAIN;
            rc = wait_fd(c, POLLOUT, deadline, err, doing);
            if (rc)
                return rc;
            continue;
        }
        /* One record at a time, each but the last sent with MSG_MORE (the socket BIO) */
        if (chunk > SS_RECORD)
            chunk = SS_RECORD;
        pthread_mutex_lock(&c->ssl_lock);
        ERR_clear_error();
        write_more = len > chunk;
        int n = SSL_write(c->ssl, buf, (int)chunk);
        write_more = 0;
        int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, n);
        int errnum = errno;
        pthread_mutex_unlock(&c->ssl_lock);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
            *written += (size_t)n;
            atomic_fetch_add(&c->bytes_out, (unsigned long long)n);
            continue;
        }
        if (atomic_load(&c->closing))
            return closed_error(err);
        if ((e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) && deadline == SS_NO_IO)
            return SS_E_AGAIN; /* OpenSSL keeps the record begun: retry with these bytes */
        switch (e) {
        case SSL_ERROR_WANT_WRITE:
            rc = wait_fd(c, POLLOUT, deadline, err, doing);
            break;
        case SSL_ERROR_WANT_READ:
            rc = wait_fd(c, POLLIN, deadline, err, doing);
            break;
        case SSL_ERROR_SYSCALL:
            return io_error(errnum ? errnum : EPIPE, err, doing);
        case SSL_ERROR_ZERO_RETURN:
            return ss_fail(err, SS_E_PEER_CLOSED, "the peer closed the connection");
        default:
            return ss_fail_ssl(err, SS_E_TLS, "TLS error while writing");
        }
        if (rc)
            return rc;
    }
    return SS_OK;
}

/* Receive more bytes into c->in. */
static long fill(ss_conn *c, long long deadline, ss_err *err)
{
    if (deadline == SS_NO_IO)
        return SS_E_AGAIN; /* deframing what is buffered only (the channel engine) */
    if (c->in.len == 0) {
        /* An idle connection holds no input buffer: give it back before waiting (the
         * previous result pointing into it has been consumed by now). */
        free(c->in.data);
        memset(&c->in, 0, sizeof c->in);
        /* Wait first unless OpenSSL holds data already: in request/response traffic the
         * next message is rarely there yet, and a read failing with EAGAIN would cost a
         * system call for nothing. */
        int pending = 0;
        if (c->ssl) {
            pthread_mutex_lock(&c->ssl_lock);
            pending = SSL_has_pending(c->ssl);
            pthread_mutex_unlock(&c->ssl_lock);
        }
        if (!pending) {
            int rc = wait_fd(c, POLLIN, deadline, err, "while reading");
            if (rc)
                return rc;
        }
    }
    if (ss_buf_reserve(&c->in, SS_RECORD) != 0)
        return ss_fail(err, SS_E_NOMEM, "out of memory buffering a message");
    ss_buf *b = &c->in;
    long n = io_read(c, b->data + b->off + b->len, b->cap - b->off - b->len, deadline, err);
    if (n > 0)
        b->len += (size_t)n;
    return n;
}

/* ---- framing: reading -------------------------------------------------------------- */

/* Parse "digits [CR] LF" at the front of c->in.  Returns 1 when parsed (c->want set),
 * 0 when more bytes are needed, or a negative code for a malformed / oversized header. */
static int parse_size_header(ss_conn *c, ss_err *err)
{
    const char *p = buf_head(&c->in);
    size_t n = c->in.len, digits = 0;
    unsigned long long value = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (ch == '\n' || (ch == '\r' && i + 1 < n && p[i + 1] == '\n')) {
            if (digits == 0)
                return ss_fail(err, SS_E_FRAME,
                               "malformed frame: empty size header (a line end where "
                               "SocketSizeAtBeginning expects a decimal byte count, CR LF)");
            buf_consume(&c->in, i + 1 + (ch == '\r'));
            c->want = (long long)value;
            c->msg.len = 0;
            return 1;
        }
        if (ch == '\r' && i + 1 == n)
            return 0; /* CR at the end: LF may follow */
        if (ch < '0' || ch > '9')
            return ss_fail(err, SS_E_FRAME,
                           "malformed frame: the size header is not a decimal number (byte "
                           "%zu of it is %s, after %zu digit%s); is the peer in the same "
                           "transmission mode?",
                           i, byte_kind((unsigned char)ch), digits, digits == 1 ? "" : "s");
        if (++digits > SS_MAX_SIZE_DIGITS)
            return ss_fail(err, SS_E_TOO_BIG,
                           "the size header has more than %d digits: larger than any "
                           "message this socket accepts (%zu bytes)",
                           SS_MAX_SIZE_DIGITS, msg_limit(c));
        /* saturate: 20 digits can exceed 2^64, and any such value is over the limit */
        value = value <= (ULLONG_MAX - 9) / 10 ? value * 10 + (unsigned)(ch - '0') : ULLONG_MAX;
        if (value > msg_limit(c)) /* refuse before the header even ends */
            return ss_fail(err, SS_E_TOO_BIG,
                           "the peer announced a message of %s%llu bytes, more than this "
                           "socket's %zu-byte limit; the connection is closed (raise the "
                           "limit if such messages are expected)",
                           i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '9' ? "over " : "",
                           value, msg_limit(c));
    }
    return 0;
}

static int read_sized(ss_conn *c, long long deadline, const char **out, size_t *out_len,
                      ss_err *err)
{
    while (c->want < 0) {
        int r = parse_size_header(c, err);
        if (r < 0)
            return r;
        if (r == 1)
            break;
        long n = fill(c, deadline, err);
        if (n < 0)
            return (int)n;
    }
    size_t want = (size_t)c->want;
    ss_buf *m = &c->msg;
    if (m->len == 0 && c->in.len >= want) {
        /* the whole payload is here: hand it out where it lies, no copy */
        *out = c->in.data + c->in.off;
        *out_len = want;
        buf_consume(&c->in, want);
        c->want = -1;
        return SS_OK;
    }
    /* The buffer grows as the payload arrives, never ahead of it by more than a few
     * records: a peer announcing a large message and sending nothing pins no memory. */
    while (m->len < want) {
        size_t need = m->len + 4 * SS_RECORD < want ? m->len + 4 * SS_RECORD : want;
        if (m->cap < need) {
            size_t cap = m->cap * 2 > need ? m->cap * 2 : need;
            if (cap > want)
                cap = want;
            char *d = realloc(m->data, cap);
            if (!d)
                return ss_fail(err, SS_E_NOMEM, "out of memory for a %zu-byte message", want);
            m->data = d;
            m->cap = cap;
        }
        size_t room = (m->cap < want ? m->cap : want) - m->len;
        if (c->in.len) { /* bytes already received first */
            size_t take = c->in.len < room ? c->in.len : room;
            memcpy(m->data + m->len, c->in.data + c->in.off, take);
            m->len += take;
            buf_consume(&c->in, take);
            continue;
        }
        if (deadline == SS_NO_IO)
            return SS_E_AGAIN;
        long n = io_read(c, m->data + m->len, room, deadline, err); /* straight in */
        if (n < 0)
            return (int)n;
        m->len += (size_t)n;
    }
    c->want = -1;
    *out = m->data;
    *out_len = want;
    m->len = 0;
    return SS_OK;
}

static int read_tagged(ss_conn *c, long long deadline, const char **out, size_t *out_len,
                       ss_err *err)
{
    for (;;) {
        const char *p = buf_head(&c->in);
        size_t n = c->in.len;
        /* resume the search where the last one stopped (tag_len-1 bytes back) */
        size_t from = c->scanned >= c->tag_len ? c->scanned - (c->tag_len - 1) : 0;
        const char *hit = n >= c->tag_len && from < n
                              ? memmem(p + from, n - from, c->tag, c->tag_len) : NULL;
        if (hit && (size_t)(hit - p) <= msg_limit(c)) {
            size_t pos = (size_t)(hit - p);
            *out = p;
            *out_len = pos;
            /* END_TAG drops what came after the tag; END_TAG_BUFFER keeps it. */
            buf_consume(&c->in, c->mode == SS_MODE_END_TAG ? n : pos + c->tag_len);
            c->scanned = 0;
            return SS_OK;
        }
        c->scanned = n;
        /* Too big: the tag came after the limit, or a tag not seen yet would (it starts at
         * n - tag_len + 1 at the earliest). */
        if (hit || n >= msg_limit(c) + c->tag_len)
            return ss_fail(err, SS_E_TOO_BIG,
                           "no end tag within this socket's %zu-byte message limit; the "
                           "connection is closed (is the peer sending the same end tag?)",
                           msg_limit(c));
        long r = fill(c, deadline, err);
        if (r < 0)
            return (int)r;
    }
}

/* The next message by the mode, reading as the deadline allows (SS_NO_IO: only what is
 * buffered, SS_E_AGAIN if that is not a whole message).  Read lock held. */
static int deframe(ss_conn *c, long long deadline, size_t max_bytes, const char **out,
                   size_t *out_len, ss_err *err)
{
    int rc = SS_OK;
    switch (c->mode) {
    case SS_MODE_SIZE:
        rc = read_sized(c, deadline, out, out_len, err);
        break;
    case SS_MODE_END_TAG:
    case SS_MODE_END_TAG_BUFFER:
        rc = read_tagged(c, deadline, out, out_len, err);
        break;
    default: /* SS_MODE_NO_END_TAG */
        if (c->in.len == 0) {
            long n = fill(c, deadline, err);
            rc = n < 0 ? (int)n : SS_OK;
            /* A stream: take what OpenSSL has already read ahead too (up to max_bytes),
             * so a bulk transfer costs one call per max_bytes, not one per TLS record. */
            while (rc == SS_OK && c->ssl && c->in.len < max_bytes && c->in.len < SS_TOP_UP) {
                pthread_mutex_lock(&c->ssl_lock);
                int pending = SSL_has_pending(c->ssl);
                pthread_mutex_unlock(&c->ssl_lock);
                /* grow once, to the whole gathering size: each doubling would copy */
                if (!pending || ss_buf_reserve(&c->in, SS_TOP_UP - c->in.len) != 0)
                    break;
                short wants;
                ss_err ignored;
                ss_buf *b = &c->in;
                long more = io_read_once(c, b->data + b->off + b->len,
                                         b->cap - b->off - b->len, &wants, &ignored);
                if (more <= 0)
                    break; /* nothing more now; an error shows on the next read */
                b->len += (size_t)more;
            }
        }
        if (rc == SS_OK) {
            size_t take = c->in.len < max_bytes ? c->in.len : max_bytes;
            *out = c->in.data + c->in.off;
            *out_len = take;
            buf_consume(&c->in, take);
        }
    }
    if (rc == SS_E_PEER_CLOSED && c->in.len == 0 && c->want < 0) {
        /* a clean end between messages: not an error that breaks anything */
        atomic_store(&c->peer_closed, 1);
    } else if (rc != SS_OK && rc != SS_E_AGAIN) {
        rc = breaks(c, rc, err);
    }
    return rc;
}

int ss_conn_take(ss_conn *c, size_t max_bytes, const char **out, size_t *out_len,
                 ss_err *err)
{
    *out = NULL;
    *out_len = 0;
    if (take_mode(c, &c->mode, c->tag, &c->tag_len, &c->read_gen))
        c->scanned = 0;
    int rc = check_usable(c, err);
    return rc == SS_OK ? deframe(c, SS_NO_IO, max_bytes, out, out_len, err) : rc;
}

int ss_conn_end(ss_conn *c, int rc, ss_err *err)
{
    if (rc == SS_E_PEER_CLOSED && c->in.len == 0 && c->want < 0) {
        atomic_store(&c->peer_closed, 1);
        return rc;
    }
    return breaks(c, rc, err); /* in the middle of a frame, or an error */
}

static void trim_locked(ss_conn *c)
{
    buf_release_if_big(&c->in);
    if (c->want < 0 && c->msg.cap > SS_KEEP_BUFFER) {
        free(c->msg.data);
        c->msg.data = NULL;
        c->msg.cap = 0;
        c->msg.len = 0;
    }
}

void ss_conn_trim(ss_conn *c)
{
    pthread_mutex_lock(&c->read_lock);
    trim_locked(c);
    pthread_mutex_unlock(&c->read_lock);
}

int ss_conn_read_hold(ss_conn *c, int timeout_ms, size_t max_bytes, const char **out,
                      size_t *out_len, ss_err *err)
{
    *out = NULL;
    *out_len = 0;
    long long deadline = ss_deadline(timeout_ms);
    pthread_mutex_lock(&c->read_lock);
    if (__atomic_load_n(&c->hub, __ATOMIC_ACQUIRE)) {
        /* One owner: a channel engine reads this channel; a second reader would take its
         * bytes from under it (and wait on a socket the engine has drained). */
        pthread_mutex_unlock(&c->read_lock);
        return ss_fail(err, SS_E_INVALID, "this channel is served by a channel engine: read "
                       "its messages through the engine (SocketRead on its name, "
                       "Connection.read, or the loop that serves it), not its socket");
    }
    if (take_mode(c, &c->mode, c->tag, &c->tag_len, &c->read_gen))
        c->scanned = 0;
    int rc = check_usable(c, err);
    if (rc == SS_OK)
        rc = deframe(c, deadline, max_bytes, out, out_len, err);
    if (rc != SS_OK)
        pthread_mutex_unlock(&c->read_lock);
    return rc;
}

void ss_conn_read_done(ss_conn *c, size_t len)
{
    if (len > SS_KEEP_BUFFER)
        trim_locked(c);
    pthread_mutex_unlock(&c->read_lock);
}

/* One read with the read lock taken and given back: the message stays valid until the
 * next read of this connection. */
int ss_conn_read(ss_conn *c, int timeout_ms, size_t max_bytes, const char **out,
                 size_t *out_len, ss_err *err)
{
    int rc = ss_conn_read_hold(c, timeout_ms, max_bytes, out, out_len, err);
    if (rc == SS_OK)
        pthread_mutex_unlock(&c->read_lock);
    return rc;
}

/* ---- framing: writing -------------------------------------------------------------- */

/* Send what is queued without waiting (write lock held): SS_OK once the queue is empty,
 * SS_E_AGAIN while some is left, or the error that broke the connection. */
static int flush_queue(ss_conn *c, long long deadline, ss_err *err)
{
    ss_buf *q = &c->out;
    if (q->len == 0)
        return SS_OK;
    size_t written = 0;
    int rc = io_write_all(c, q->data + q->off, q->len, deadline, &written, err);
    buf_consume(q, written);
    if (q->len == 0)
        buf_release_if_big(q);
    if (rc == SS_E_AGAIN || rc == SS_E_TIMEOUT)
        return rc;
    return rc == SS_OK ? SS_OK : breaks(c, rc, err);
}

int ss_conn_flush(ss_conn *c, size_t *left, ss_err *err)
{
    if (pthread_mutex_trylock(&c->write_lock) != 0) {
        *left = SIZE_MAX; /* a writer is at it: not known */
        return SS_E_AGAIN;
    }
    int rc = flush_queue(c, SS_NO_IO, err);
    *left = c->out.len;
    pthread_mutex_unlock(&c->write_lock);
    return rc;
}

size_t ss_conn_queued(ss_conn *c)
{
    pthread_mutex_lock(&c->write_lock);
    size_t n = c->out.len;
    pthread_mutex_unlock(&c->write_lock);
    return n;
}

int ss_conn_queue_write(ss_conn *c, const char *data, size_t len, int timeout_ms, ss_err *err)
{
    long long deadline = ss_deadline(timeout_ms);
    pthread_mutex_lock(&c->write_lock);
    int rc = check_usable(c, err);
    /* Backpressure: over the high-water mark, wait (sending) until the queue is below it;
     * a time-out then leaves this message unsent and the connection usable. */
    while (rc == SS_OK && c->out.len > c->high_water) {
        rc = flush_queue(c, SS_NO_IO, err);
        if (rc == SS_E_AGAIN)
            rc = wait_fd(c, POLLOUT, deadline, err, "while writing (the peer does not read)");
        else if (rc == SS_OK)
            break;
    }
    if (rc == SS_OK) {
        take_mode(c, &c->wmode, c->wtag, &c->wtag_len, &c->write_gen);
        if (c->out.len == 0 && c->wmode == SS_MODE_NO_END_TAG && len) {
            /* Nothing queued and nothing to frame: straight from the caller's buffer,
             * without copying it into the queue first; only what the socket does not take
             * is queued (the contexts accept a moving write buffer, so a record OpenSSL
             * began is retried from the queue's copy of the same bytes). */
            size_t written = 0;
            rc = io_write_all(c, data, len, SS_NO_IO, &written, err);
            if (rc != SS_E_AGAIN) {
                if (rc != SS_OK)
                    rc = breaks(c, rc, err);
                pthread_mutex_unlock(&c->write_lock);
                return rc;
            }
            data += written;
            len -= written;
            rc = SS_OK;
        }
    }
    if (rc == SS_OK) {
        /* the frame, appended whole: header or tag and payload */
        char head[32];
        size_t h = 0, t = 0;
        if (c->wmode == SS_MODE_SIZE)
            h = (size_t)snprintf(head, sizeof head, "%zu\r\n", len);
        else if (c->wmode == SS_MODE_END_TAG || c->wmode == SS_MODE_END_TAG_BUFFER)
            t = c->wtag_len;
        if (len > SIZE_MAX - 64 || ss_buf_reserve(&c->out, h + len + t) != 0) {
            rc = ss_fail(err, SS_E_NOMEM, "out of memory queueing a %zu-byte message", len);
        } else {
            ss_buf *q = &c->out;
            char *end = q->data + q->off + q->len;
            memcpy(end, head, h);
            memcpy(end + h, data, len);
            memcpy(end + h + len, c->wtag, t);
            q->len += h + len + t;
            rc = flush_queue(c, SS_NO_IO, err);
            if (rc == SS_E_AGAIN) {
                ss_hub_want_write(c); /* the engine sends the rest when the socket takes it */
                rc = SS_OK;
            }
        }
    }
    pthread_mutex_unlock(&c->write_lock);
    return rc;
}

int ss_conn_write(ss_conn *c, const char *data, size_t len, int timeout_ms, ss_err *err)
{
    /* One record's worth of staging: a small message and its header or tag leave in one
     * TLS record (and one TCP segment) instead of two. */
    char stage[SS_RECORD + 32];
    long long deadline = ss_deadline(timeout_ms);
    size_t written = 0;
    pthread_mutex_lock(&c->write_lock);
    take_mode(c, &c->wmode, c->wtag, &c->wtag_len, &c->write_gen);
    int rc = check_usable(c, err);
    if (rc == SS_OK && c->out.len) /* what was queued goes first */
        rc = flush_queue(c, deadline, err);
    if (rc == SS_OK) {
        switch (c->wmode) {
        case SS_MODE_SIZE: {
            int h = snprintf(stage, 32, "%zu\r\n", len);
            size_t first = len < SS_RECORD - (size_t)h ? len : SS_RECORD - (size_t)h;
            memcpy(stage + h, data, first);
            rc = io_write_all(c, stage, (size_t)h + first, deadline, &written, err);
            if (rc == SS_OK && len > first)
                rc = io_write_all(c, data + first, len - first, deadline, &written, err);
            break;
        }
        case SS_MODE_END_TAG:
        case SS_MODE_END_TAG_BUFFER: {
            /* payload, with its last part and the tag staged together */
            size_t tail = len < SS_RECORD - c->wtag_len ? len : SS_RECORD - c->wtag_len;
            size_t head = len - tail;
            if (head)
                rc = io_write_all(c, data, head, deadline, &written, err);
            if (rc == SS_OK) {
                memcpy(stage, data + head, tail);
                memcpy(stage + tail, c->wtag, c->wtag_len);
                rc = io_write_all(c, stage, tail + c->wtag_len, deadline, &written, err);
            }
            break;
        }
        default:
            rc = io_write_all(c, data, len, deadline, &written, err);
        }
        if (rc == SS_E_TIMEOUT && written > 0) {
            /* a torn frame: the peer can no longer parse the stream */
            rc = breaks(c, ss_fail(err, SS_E_FRAME,
                                   "time-out while writing, after %zu bytes of the frame: "
                                   "the connection is no longer usable", written), err);
        } else if (rc != SS_OK) {
            rc = breaks(c, rc, err);
        }
    }
    pthread_mutex_unlock(&c->write_lock);
    return rc;
}

int ss_conn_set_mode(ss_conn *c, int mode, const char *tag, size_t tag_len, ss_err *err)
{
    if (mode < SS_MODE_END_TAG || mode > SS_MODE_NO_END_TAG)
        return ss_fail(err, SS_E_INVALID, "unknown transmission mode %d", mode);
    if ((mode == SS_MODE_END_TAG || mode == SS_MODE_END_TAG_BUFFER) &&
        (tag_len == 0 || tag_len > sizeof c->tag))
        return ss_fail(err, SS_E_INVALID, "the end tag must be 1 to %zu bytes long",
                       sizeof c->tag);
    /* Not the read and write locks: a read blocked on the network holds its lock until a
     * message comes, and a mode change must not wait for that. */
    pthread_mutex_lock(&c->ssl_lock);
    c->set_mode = mode;
    if (tag_len) {
        memcpy(c->set_tag, tag, tag_len);
        c->set_tag_len = tag_len;
    }
    atomic_fetch_add(&c->mode_gen, 1);
    pthread_mutex_unlock(&c->ssl_lock);
    return SS_OK;
}

void ss_conn_set_max_message(ss_conn *c, size_t max_message)
{
    if (max_message > SS_MAX_MESSAGE_LIMIT) /* beyond it the size arithmetic would wrap */
        max_message = SS_MAX_MESSAGE_LIMIT;
    pthread_mutex_lock(&c->read_lock);
    c->max_message = max_message;
    pthread_mutex_unlock(&c->read_lock);
}

/* ---- connect, close, info -------------------------------------------------------- */

static int tcp_connect(const char *host, int port, long long deadline, int *fd_out,
                       struct sockaddr_storage *peer, socklen_t *peer_len, ss_err *err)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_family = AF_UNSPEC};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int g = getaddrinfo(host, portstr, &hints, &res);
    if (g != 0) {
        ss_fail(err, SS_E_ADDRESS, "cannot resolve \"%s\"", host);
        err->sys_code = g; /* EAI_* (negative), as socket.gaierror's errno */
        snprintf(err->detail, sizeof err->detail, "%s", gai_strerror(g));
        return SS_E_ADDRESS;
    }
    int last_errno = 0;
    int rc = SS_E_ADDRESS;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0) {
            last_errno = errno;
            continue;
        }
        int ok = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0;
        if (!ok && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int n;
            do
                n = poll(&p, 1, ss_remaining(deadline));
            while (n < 0 && errno == EINTR);
            if (n == 0) {
                close(fd);
                rc = ss_fail(err, SS_E_TIMEOUT, "time-out connecting to %s port %d", host, port);
                last_errno = -1;
                break;
            }
            if (n < 0) { /* the wait itself failed: the connection's state is unknown */
                rc = ss_fail_errno(err, SS_E_SYSTEM, errno,
                                   "poll() failed while connecting to %s port %d", host, port);
                close(fd);
                last_errno = -1;
                break;
            }
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            ok = soerr == 0;
            errno = soerr;
        }
        if (ok) {
            ss_set_nodelay(fd);
            memcpy(peer, ai->ai_addr, ai->ai_addrlen);
            *peer_len = ai->ai_addrlen;
            *fd_out = fd;
            freeaddrinfo(res);
            return SS_OK;
        }
        last_errno = errno;
        close(fd);
    }
    freeaddrinfo(res);
    if (last_errno == -1)
        return rc;
    if (last_errno == ECONNREFUSED)
        return ss_fail_errno(err, SS_E_ADDRESS, last_errno,
                             "no server is listening on %s port %d", host, port);
    return ss_fail_errno(err, SS_E_ADDRESS, last_errno ? last_errno : EHOSTUNREACH,
                         "cannot connect to %s port %d", host, port);
}

int ss_conn_adopt(int fd, ss_conn **out, ss_err *err)
{
    *out = NULL;
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return ss_fail_errno(err, SS_E_INVALID, errno, "descriptor %d is not usable", fd);
    struct sockaddr_storage peer;
    socklen_t peer_len = sizeof peer;
    if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) != 0)
        peer_len = 0;
    ss_conn *c = ss_conn_wrap(fd, NULL, NULL, peer_len ? (struct sockaddr *)&peer : NULL, peer_len);
    if (!c)
        return ss_fail(err, SS_E_NOMEM, "out of memory");
    *out = c;
    return SS_OK;
}

static int is_ip_literal(const char *s)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1;
}

int ss_connect(ss_ctx *ctx, const char *host, int port, const char *server_name,
               int timeout_ms, ss_conn **out, ss_err *err)
{
    *out = NULL;
    ERR_clear_error();
    long long deadline = ss_deadline(timeout_ms);
    struct sockaddr_storage peer;
    socklen_t peer_len = 0;
    int fd = -1;
    int rc = tcp_connect(host, port, deadline, &fd, &peer, &peer_len, err);
    if (rc != SS_OK)
        return rc;
    SSL *ssl = NULL;
    if (ctx) {
        ssl = SSL_new(ctx->ssl_ctx);
        if (!ssl || ss_ssl_set_fd(ssl, fd) != 1) {
            rc = ss_fail_ssl(err, SS_E_NOMEM, "cannot create a TLS connection");
            goto fail;
        }
        if (server_name && server_name[0]) {
            if (is_ip_literal(server_name)) {
                X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), server_name);
            } else {
                SSL_set_tlsext_host_name(ssl, server_name);
                SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                SSL_set1_host(ssl, server_name);
            }
        }
        ss_client_session_attach(ctx, ssl, host, port, server_name);
        SSL_set_connect_state(ssl);
        char what[160];
        snprintf(what, sizeof what, "TLS handshake with %s port %d", host, port);
        for (;;) {
            ERR_clear_error();
            int r = SSL_do_handshake(ssl);
            if (r == 1)
                break;
            int e = SSL_get_error(ssl, r);
            short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
            if (!ev) {
                /* Without verification OpenSSL still records the chain's verify result
                 * (self-signed, ...); it is not why the handshake failed. */
                if (SSL_get_verify_mode(ssl) == SSL_VERIFY_NONE)
                    SSL_set_verify_result(ssl, X509_V_OK);
                rc = ss_handshake_error(ssl, r, err, what);
                goto fail;
            }
            struct pollfd p = {.fd = fd, .events = ev};
            int n = poll(&p, 1, ss_remaining(deadline));
            if (n == 0) {
                rc = ss_fail(err, SS_E_TIMEOUT, "time-out during the %s", what);
                goto fail;
            }
            if (n < 0 && errno != EINTR) {
                rc = ss_fail_errno(err, SS_E_SYSTEM, errno, "poll() failed during the %s", what);
                goto fail;
            }
        }
        rc = ss_check_negotiated(ssl, ctx, err);
        if (rc != SS_OK) {
            SSL_shutdown(ssl); /* say goodbye before any data flows */
            goto fail;
        }
    }
    ss_conn *c = ss_conn_wrap(fd, ssl, ctx, (struct sockaddr *)&peer, peer_len);
    if (!c) {
        rc = ss_fail(err, SS_E_NOMEM, "out of memory");
        goto fail;
    }
    *out = c;
    return SS_OK;
fail:
    SSL_free(ssl);
    close(fd);
    return rc;
}

int ss_conn_close_notify(ss_conn *c)
{
    if (!c->ssl || atomic_load(&c->closing) || atomic_load(&c->state) != SS_STATE_OPEN)
        return 0;
    pthread_mutex_lock(&c->ssl_lock);
    ERR_clear_error();
    SSL_shutdown(c->ssl); /* one non-blocking attempt; ss_conn_close tries again */
    ERR_clear_error();
    pthread_mutex_unlock(&c->ssl_lock);
    return 1;
}

void ss_conn_close(ss_conn *c, int timeout_ms)
{
    if (atomic_exchange(&c->closing, 1))
        return;
    if (atomic_load(&c->state) == SS_STATE_OPEN && c->out.len &&
        pthread_mutex_trylock(&c->write_lock) == 0) {
        /* queued replies first, within the same bounded wait as close_notify */
        ss_err ignored;
        flush_queue(c, ss_deadline(timeout_ms), &ignored);
        pthread_mutex_unlock(&c->write_lock);
    }
    if (c->ssl && atomic_load(&c->state) == SS_STATE_OPEN) {
        long long deadline = ss_deadline(timeout_ms);
        for (int tries = 0; tries < 4; tries++) { /* close_notify, bounded in time */
            pthread_mutex_lock(&c->ssl_lock);
            ERR_clear_error();
            int r = SSL_shutdown(c->ssl);
            int e = r < 0 ? SSL_get_error(c->ssl, r) : SSL_ERROR_NONE;
            pthread_mutex_unlock(&c->ssl_lock);
            if (r >= 0 || e != SSL_ERROR_WANT_WRITE)
                break;
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            if (poll(&p, 1, ss_remaining(deadline)) <= 0)
                break;
        }
        ERR_clear_error();
    }
    atomic_store(&c->state, SS_STATE_CLOSED);
    shutdown(c->fd, SHUT_RDWR); /* wakes every poll() blocked on this socket */
}

void ss_conn_free(ss_conn *c)
{
    if (!c)
        return;
    ss_hub_detach(c);
    if (!atomic_load(&c->closing))
        ss_conn_close(c, 0);
    SSL_free(c->ssl);
    close(c->fd);
    free(c->in.data);
    free(c->msg.data);
    free(c->out.data);
    free(c->broken);
    ss_ctx_free(c->ctx);
    pthread_mutex_destroy(&c->ssl_lock);
    pthread_mutex_destroy(&c->read_lock);
    pthread_mutex_destroy(&c->write_lock);
    free(c);
}

void ss_conn_get_info(ss_conn *c, ss_conn_info *info)
{
    memset(info, 0, sizeof *info);
    if (c->peer_len)
        ss_addr_to_str((struct sockaddr *)&c->peer, info->peer_addr, sizeof info->peer_addr,
                       &info->peer_port);
    struct sockaddr_storage local;
    socklen_t ll = sizeof local;
    if (getsockname(c->fd, (struct sockaddr *)&local, &ll) == 0)
        ss_addr_to_str((struct sockaddr *)&local, info->local_addr, sizeof info->local_addr,
                       &info->local_port);
    if (c->ssl) {
        pthread_mutex_lock(&c->ssl_lock);
        snprintf(info->protocol, sizeof info->protocol, "%s", SSL_get_version(c->ssl));
        const char *cipher = SSL_get_cipher_name(c->ssl);
        snprintf(info->cipher, sizeof info->cipher, "%s", cipher ? cipher : "");
        const unsigned char *alpn = NULL;
        unsigned alpn_len = 0;
        SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
        snprintf(info->alpn, sizeof info->alpn, "%.*s", (int)alpn_len, alpn ? (const char *)alpn : "");
        const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
        snprintf(info->server_name, sizeof info->server_name, "%s", sni ? sni : "");
        pthread_mutex_unlock(&c->ssl_lock);
    }
    info->state = atomic_load(&c->closing) ? SS_STATE_CLOSED : atomic_load(&c->state);
    pthread_mutex_lock(&c->ssl_lock);
    info->mode = c->set_mode; /* the latest setting, even before a read or write takes it */
    pthread_mutex_unlock(&c->ssl_lock);
    info->peer_closed = atomic_load(&c->peer_closed);
    info->bytes_in = atomic_load(&c->bytes_in);
    info->bytes_out = atomic_load(&c->bytes_out);
    if (c->proxy_len)
        ss_addr_to_str((struct sockaddr *)&c->proxy, info->proxy_addr, sizeof info->proxy_addr,
                       &info->proxy_port);
}

int ss_conn_peer_cert(ss_conn *c, unsigned char *buf, int buf_len)
{
    if (!c->ssl)
        return 0;
    pthread_mutex_lock(&c->ssl_lock);
    X509 *x = SSL_get1_peer_certificate(c->ssl);
    pthread_mutex_unlock(&c->ssl_lock);
    if (!x)
        return 0;
    int n = i2d_X509(x, NULL);
    if (n > 0 && n <= buf_len) {
        unsigned char *p = buf;
        i2d_X509(x, &p);
    }
    X509_free(x);
    return n < 0 ? 0 : n;
}

int ss_conn_alive(ss_conn *c)
{
    if (atomic_load(&c->closing) || atomic_load(&c->state) != SS_STATE_OPEN ||
        atomic_load(&c->peer_closed))
        return 0;
    /* POLLRDHUP: the peer shut its side down (FIN); POLLHUP / POLLERR: reset or gone. */
    struct pollfd p = {.fd = c->fd, .events = POLLRDHUP};
    if (poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
        return 0;
    return 1;
}
