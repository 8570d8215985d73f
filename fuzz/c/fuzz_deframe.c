/*
 * libFuzzer harness (C, clang -fsanitize=fuzzer,address,undefined) for the C core's
 * deframer and read path: deframe(), read_sized() / parse_size_header(), read_tagged(),
 * ss_conn_read(), ss_conn_take(), ss_conn_read_nowait(), ss_conn_end(), and the channel
 * engine's serve() / ss_hub_poll() (hub.c).  Built and run by fuzz/c/run.sh.
 *
 * Invariant: for any byte stream, cut into any deliveries, in every transmission mode, with
 * any end tag, message limit, max_bytes, engine batch size, over plain TCP (a socketpair end
 * adopted with ss_conn_adopt) or TLS (a real TLS 1.3 connection over a socketpair; the
 * session of the one full handshake made at start-up is resumed for each input),
 *   1. no crash, no sanitizer report (ASan, UBSan), no leak;
 *   2. the blocking reader (ss_conn_read, time-out 0, drained after every delivery) and the
 *      engine (ss_hub_add + ss_hub_poll, one long-lived hub, over one or three more
 *      connections fed the same deliveries, channel j lagging j deliveries behind so that
 *      the channels of a batch carry different bytes) deliver the same messages, end the
 *      same way (same code, same ErrorInfo text, same state: BROKEN, or OPEN with
 *      peer_closed) and agree with a reference model of the mode written independently in
 *      this file (model_*); a message handed out by the engine stays intact until the
 *      next poll, whichever channels the hub serves after it in the same batch;
 *   3. no message is over the limit: <= max_message in the framed modes, 1..max_bytes in
 *      SocketNoEndTag;
 *   4. SocketSizeAtBeginning: the frames re-encode (size header, CR LF or LF, payload) to a
 *      prefix of the stream; SocketEndTagBuffer: frames joined by the tag are a prefix of
 *      the stream; SocketNoEndTag: the messages are the stream exactly, however it was cut;
 *   5. an ended connection stays ended: a later ss_conn_read fails with the same code and,
 *      once BROKEN, the same text; the engine reports a channel's end once, nothing after
 *      it, never an event for another id; ss_hub_fd is not readable once a poll finds
 *      nothing (not even while a channel's reads wait for the peer to read: the TLS
 *      writers read what the server sent only when their own socket fills up and at the
 *      end, so a flood of KeyUpdate requests fills the server's socket with answers).
 * Where an exact match is not required by the mode's semantics, it is not checked: when
 * several TLS records arrive in one delivery ("coalesced", below, or after such a wait),
 * SocketEndTag (which drops what follows the tag in the same read) and SocketNoEndTag
 * (whose message bounds are the reads') may cut differently in the two readers, and error
 * texts that quote the buffered bytes may differ; codes, states and the other modes are
 * still compared.
 *
 * Input layout (3 header bytes, then the stream):
 *   byte 0: bits 0-1 mode (SS_MODE_*), bit 2 TLS, bits 3-4 ending (0 orderly: FIN, after
 *           close_notify with TLS; 1 abrupt: FIN without close_notify / plain: same as 0;
 *           2 hostile: TLS: the last chunk goes out raw, not encrypted / plain: the writer
 *           closes with unread data, so the reader gets ECONNRESET; 3 none: the stream
 *           stays open), bit 5 the ending comes with the last chunk (no drain between),
 *           bits 6-7 engine batch size (2, 3, 5, 64 events).
 *   byte 1: bits 0-2 end tag (TAGS), bits 3-5 message limit (LIMITS), bits 6-7 + bit 7 of
 *           byte 2 max_bytes (MAX_BYTES).
 *   byte 2: bits 0-5 how the stream is cut: 0 on the separator "\xff\xff" (with TLS, an
 *           empty chunk sends a KeyUpdate instead), 63 the whole stream at once, 62 (TLS)
 *           one record per separated chunk, all in one delivery ("coalesced"), else chunks
 *           of that many bytes; bit 6: three engine channels instead of one; bit 7: the
 *           high bit of max_bytes.
 *
 * The fuzz build (fuzz/c/run.sh) shrinks the hub's scratch buffer and per-channel share
 * (SS_HUB_SCRATCH, SS_HUB_SHARE) so that three channels of a few KiB reach their limits.
 */
#include "../../src/_native/ss_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_MAX_INPUT 8192 /* run.sh passes -max_len; a chunk must stay within one TLS record */

static const char *const TAGS[8] = {
    "<EOF>", "\r\n", "x", "<END-OF-A-RATHER-LONG-TAG>", "aa", "aba", "\n",
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", /* 64: the most */
};
static const size_t LIMITS[8] = {(size_t)64 << 20, 0, 1, 2, 5, 16, 100, 4096};
static const size_t MAX_BYTES[8] = {1, 2, 3, 7, 100, 4096, 65536, (size_t)1 << 40};
static const int BATCH[4] = {2, 3, 5, 64};
#define MAX_CHANNELS 3 /* the engine serves this many copies of the stream at once */
#define CUT_SEPARATOR 0
#define CUT_RECORDS 62
#define CUT_WHOLE 63

#define die(...) (fprintf(stderr, "fuzz_deframe: " __VA_ARGS__), fputc('\n', stderr), abort())
#define check(cond, ...) do { if (!(cond)) die(__VA_ARGS__); } while (0)

/* ---- messages and outcomes ----------------------------------------------------------- */

typedef struct msgs {
    size_t n, cap;
    unsigned char **data;
    size_t *len;
} msgs;

static void msgs_add(msgs *m, const void *p, size_t len)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? m->cap * 2 : 16;
        m->data = realloc(m->data, m->cap * sizeof *m->data);
        m->len = realloc(m->len, m->cap * sizeof *m->len);
        check(m->data && m->len, "out of memory");
    }
    m->data[m->n] = malloc(len ? len : 1);
    check(m->data[m->n], "out of memory");
    if (len)
        memcpy(m->data[m->n], p, len);
    m->len[m->n++] = len;
}

static void msgs_free(msgs *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->data[i]);
    free(m->data);
    free(m->len);
    memset(m, 0, sizeof *m);
}

/* How a reader ended: code 0 = still open (nothing more now). */
typedef struct outcome {
    int code;
    int state;       /* SS_STATE_* from ss_conn_get_info */
    int peer_closed;
    char message[256];
} outcome;

/* ---- the reference model ------------------------------------------------------------ */

typedef struct model {
    int mode;
    const char *tag;
    size_t tag_len, limit, max_bytes;
    unsigned char buf[FUZZ_MAX_INPUT + 64];
    size_t len;
    long long want; /* SIZE: payload length once its header is read */
    int error;      /* SS_E_FRAME / SS_E_TOO_BIG once the stream is malformed */
    msgs out;
} model;

/* SIZE: returns 1 (header read), 0 (more needed) or an error code. */
static int model_header(model *m)
{
    size_t digits = 0;
    unsigned long long v = 0;
    for (size_t i = 0; i < m->len; i++) {
        unsigned char ch = m->buf[i];
        int lf = ch == '\n', crlf = ch == '\r' && i + 1 < m->len && m->buf[i + 1] == '\n';
        if (lf || crlf) {
            if (!digits)
                return SS_E_FRAME;
            size_t used = i + 1 + (size_t)crlf;
            memmove(m->buf, m->buf + used, m->len - used);
            m->len -= used;
            m->want = (long long)v;
            return 1;
        }
        if (ch == '\r' && i + 1 == m->len)
            return 0;
        if (ch < '0' || ch > '9')
            return SS_E_FRAME;
        if (++digits > 20)
            return SS_E_TOO_BIG;
        v = v > (ULLONG_MAX - 9) / 10 ? ULLONG_MAX : v * 10 + (ch - '0');
        if (v > m->limit)
            return SS_E_TOO_BIG;
    }
    return 0;
}

static void model_take(model *m, size_t n, size_t drop)
{
    msgs_add(&m->out, m->buf, n);
    memmove(m->buf, m->buf + drop, m->len - drop);
    m->len -= drop;
}

/* One delivery: what one read of the connection finds. */
static void model_deliver(model *m, const unsigned char *p, size_t n)
{
    if (m->error)
        return;
    memcpy(m->buf + m->len, p, n);
    m->len += n;
    for (;;) {
        if (m->mode == SS_MODE_SIZE) {
            if (m->want < 0) {
                int r = model_header(m);
                if (r < 0) {
                    m->error = r;
                    return;
                }
                if (r == 0)
                    return;
            }
            if (m->len < (size_t)m->want)
                return;
            model_take(m, (size_t)m->want, (size_t)m->want);
            m->want = -1;
        } else if (m->mode == SS_MODE_NO_END_TAG) {
            if (!m->len)
                return;
            size_t k = m->len < m->max_bytes ? m->len : m->max_bytes;
            model_take(m, k, k);
        } else {
            unsigned char *hit = m->len >= m->tag_len
                                     ? memmem(m->buf, m->len, m->tag, m->tag_len) : NULL;
            size_t pos = hit ? (size_t)(hit - m->buf) : 0;
            if (hit && pos <= m->limit) {
                model_take(m, pos, m->mode == SS_MODE_END_TAG ? m->len : pos + m->tag_len);
                continue;
            }
            if (hit || m->len >= m->limit + m->tag_len)
                m->error = SS_E_TOO_BIG;
            return;
        }
    }
}

/* The stream ended cleanly (FIN / close_notify): between messages, or inside a frame? */
static int model_clean(const model *m) { return m->len == 0 && m->want < 0; }

/* ---- TLS: one full handshake at start-up, resumed per connection --------------------- */

static ss_ctx *server_ctx;
static SSL_CTX *client_ctx;
static SSL_SESSION *session;

static void make_identity(char **cert, size_t *cert_len, char **key, size_t *key_len)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    check(pk && x, "cannot make a key");
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pk);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost",
                               -1, -1, 0);
    X509_set_issuer_name(x, name);
    check(X509_sign(x, pk, EVP_sha256()) > 0, "cannot sign");
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    *cert = malloc((size_t)n);
    memcpy(*cert, p, (size_t)n);
    *cert_len = (size_t)n;
    BIO_free(b);
    b = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(b, pk, NULL, NULL, 0, NULL, NULL);
    n = BIO_get_mem_data(b, &p);
    *key = malloc((size_t)n);
    memcpy(*key, p, (size_t)n);
    *key_len = (size_t)n;
    BIO_free(b);
    X509_free(x);
    EVP_PKEY_free(pk);
}

/* A TLS connection over a fresh socketpair: *server wraps one end (as the listener would
 * hand it over), *client is the writer's SSL on the other end (fd *cfd). */
static void tls_pair(ss_conn **server, SSL **client, int *cfd)
{
    int sv[2];
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
          "socketpair: %s", strerror(errno));
    SSL *s = SSL_new(server_ctx->ssl_ctx), *c = SSL_new(client_ctx);
    check(s && c, "SSL_new");
    SSL_set_fd(s, sv[0]);
    SSL_set_fd(c, sv[1]);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    if (session)
        SSL_set_session(c, session);
    int sd = 0, cd = 0;
    for (int i = 0; i < 100 && !(sd && cd); i++) {
        if (!cd) {
            int r = SSL_do_handshake(c);
            cd = r == 1;
            check(cd || SSL_get_error(c, r) == SSL_ERROR_WANT_READ, "client handshake");
        }
        if (!sd) {
            int r = SSL_do_handshake(s);
            sd = r == 1;
            check(sd || SSL_get_error(s, r) == SSL_ERROR_WANT_READ, "server handshake");
        }
    }
    check(sd && cd, "the handshake did not finish");
    ERR_clear_error();
    *server = ss_conn_wrap(sv[0], s, server_ctx, NULL, 0);
    check(*server, "ss_conn_wrap");
    *client = c;
    *cfd = sv[1];
}

/* Free a client without spoiling the shared session: OpenSSL marks the session of a
 * connection freed before its shutdown as not resumable. */
static void client_free(SSL *c)
{
    if (c)
        SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c);
}

static void tls_init(void)
{
    char *cert, *key;
    size_t cert_len, key_len;
    make_identity(&cert, &cert_len, &key, &key_len);
    ss_ctx_config cfg = {
        .is_server = 1, .versions = SS_V_TLS1_3, .security_level = -1,
        .cert_pem = cert, .cert_pem_len = cert_len, .key_pem = key, .key_pem_len = key_len,
    };
    ss_err err;
    check(ss_ctx_new(&cfg, &server_ctx, &err) == SS_OK, "ss_ctx_new: %s", err.message);
    free(cert);
    free(key);
    client_ctx = SSL_CTX_new(TLS_client_method());
    check(client_ctx, "SSL_CTX_new");
    SSL_CTX_set_min_proto_version(client_ctx, TLS1_3_VERSION);
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    /* The full handshake, once; the client reads its session tickets to resume later. */
    ss_conn *s;
    SSL *c;
    int cfd;
    tls_pair(&s, &c, &cfd);
    char b[16];
    check(SSL_read(c, b, sizeof b) <= 0 && SSL_get_error(c, -1) == SSL_ERROR_WANT_READ,
          "reading the tickets");
    session = SSL_get1_session(c);
    check(session && SSL_SESSION_is_resumable(session), "no resumable session");
    client_free(c);
    close(cfd);
    ss_conn_free(s);
    ERR_clear_error();
}

/* ---- one input ----------------------------------------------------------------------- */

typedef struct side {
    ss_conn *conn;   /* the reader's connection */
    SSL *ssl;        /* TLS: the writer */
    int wfd;         /* the writer's socket */
    int wdone;       /* the writer can no longer write */
} side;

typedef struct run {
    int mode, tls, ending, together, coalesced;
    int grouped; /* records may arrive several at a time: coalesced, or after a wait */
    size_t limit, max_bytes;
    const char *tag;
    size_t tag_len;
    int batch;
    ss_hub *hub;
    side blk, eng[MAX_CHANNELS];
    int neng;
    uint64_t id[MAX_CHANNELS];
    msgs bmsgs, emsgs[MAX_CHANNELS];
    outcome bout, eout[MAX_CHANNELS];
    int eng_ended[MAX_CHANNELS];
} run;

static void open_side(run *r, side *s)
{
    ss_err err;
    memset(s, 0, sizeof *s);
    if (r->tls) {
        tls_pair(&s->conn, &s->ssl, &s->wfd);
    } else {
        int sv[2];
        check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
        check(ss_conn_adopt(sv[0], &s->conn, &err) == SS_OK, "adopt: %s", err.message);
        s->wfd = sv[1];
    }
    check(ss_conn_set_mode(s->conn, r->mode, r->tag, r->tag_len, &err) == SS_OK,
          "set_mode: %s", err.message);
    ss_conn_set_max_message(s->conn, r->limit);
}

static void drain_blocking(run *r);
static void drain_engine(run *r);
static uint64_t client_drain(side *s);

/* The writer's socket is full: the server stopped reading, waiting to send KeyUpdate
 * answers that nobody reads.  Let every TLS writer read, and the readers run. */
static int unstall(run *r, int *tries)
{
    if (++*tries > 1000)
        return 0;
    client_drain(&r->blk);
    for (int j = 0; j < r->neng; j++)
        client_drain(&r->eng[j]);
    drain_blocking(r);
    drain_engine(r);
    return 1;
}

static void write_chunk(run *r, side *s, const unsigned char *p, size_t n, int raw)
{
    int tries = 0;
    if (s->wdone)
        return;
    if (s->ssl && !raw) {
        int w;
        if (n == 0) { /* an empty TLS chunk: a KeyUpdate record, no application data */
            /* A KeyUpdate that cannot go out blocks the writer's reads too (OpenSSL
             * finishes the handshake message first): a deadlock once both sockets are
             * full.  So the writer reads first while its socket is filling up. */
            struct pollfd pf = {.fd = s->wfd, .events = POLLOUT};
            while (poll(&pf, 1, 0) == 0 && unstall(r, &tries))
                ;
            if (SSL_key_update(s->ssl, SSL_KEY_UPDATE_REQUESTED) != 1) {
                ERR_clear_error();
                return;
            }
            while ((w = SSL_do_handshake(s->ssl)) != 1 &&
                   SSL_get_error(s->ssl, w) == SSL_ERROR_WANT_WRITE && unstall(r, &tries))
                ;
        } else {
            while ((w = SSL_write(s->ssl, p, (int)n)) <= 0 &&
                   SSL_get_error(s->ssl, w) == SSL_ERROR_WANT_WRITE && unstall(r, &tries))
                ;
            if (w != (int)n)
                s->wdone = 1; /* the reader broke the connection: nothing more goes out */
        }
        ERR_clear_error();
        return;
    }
    while (n) {
        ssize_t w = send(s->wfd, p, n, MSG_NOSIGNAL);
        if (w < 0 && (errno == EINTR || (errno == EAGAIN && unstall(r, &tries))))
            continue;
        if (w <= 0) {
            s->wdone = 1;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static void end_stream(run *r, side *s)
{
    switch (r->ending) {
    case 0:
        if (s->ssl && !s->wdone) { /* close_notify */
            int w, tries = 0;
            while ((w = SSL_shutdown(s->ssl)) < 0 &&
                   SSL_get_error(s->ssl, w) == SSL_ERROR_WANT_WRITE && unstall(r, &tries))
                ;
        }
        ERR_clear_error();
        shutdown(s->wfd, SHUT_WR);
        break;
    case 1:
        shutdown(s->wfd, SHUT_WR);
        break;
    case 2:
        if (!s->ssl) {
            /* unread data in the writer's socket: closing it resets the reader's */
            send(s->conn->fd, "!", 1, MSG_NOSIGNAL);
            close(s->wfd);
            s->wfd = -1;
        } else {
            shutdown(s->wfd, SHUT_WR);
        }
        break;
    default:
        break;
    }
}

/* The TLS writer reads (and drops) what the server sent; returns the bytes it took. */
static uint64_t client_drain(side *s)
{
    if (!s->ssl)
        return 0;
    uint64_t before = BIO_number_read(SSL_get_rbio(s->ssl));
    char buf[4096];
    while (SSL_read(s->ssl, buf, sizeof buf) > 0)
        ;
    ERR_clear_error();
    return BIO_number_read(SSL_get_rbio(s->ssl)) - before;
}

static void final_state(ss_conn *c, outcome *o)
{
    ss_conn_info info;
    ss_conn_get_info(c, &info);
    o->state = info.state;
    o->peer_closed = info.peer_closed;
}

static void check_message(run *r, size_t len, const char *who)
{
    if (r->mode == SS_MODE_NO_END_TAG)
        check(len >= 1 && len <= r->max_bytes, "%s: a %zu-byte message, max_bytes %zu", who,
              len, r->max_bytes);
    else
        check(len <= r->limit, "%s: a %zu-byte message over the %zu-byte limit", who, len,
              r->limit);
}

/* The blocking reader: read until it would wait (time-out 0) or the stream ends. */
static void drain_blocking(run *r)
{
    if (r->bout.code)
        return;
    for (int guard = 0;; guard++) {
        check(guard < 100000, "blocking: no end to the messages");
        const char *p;
        size_t len;
        ss_err err;
        int rc = ss_conn_read(r->blk.conn, 0, r->max_bytes, &p, &len, &err);
        if (rc == SS_OK) {
            check(p || !len, "blocking: NULL message");
            check_message(r, len, "blocking");
            msgs_add(&r->bmsgs, p, len);
            continue;
        }
        check(err.code == rc && err.message[0], "blocking: error %d without its record", rc);
        if (rc == SS_E_TIMEOUT)
            return;
        r->bout.code = rc;
        snprintf(r->bout.message, sizeof r->bout.message, "%s", err.message);
        return;
    }
}

/* The engine: poll (time-out 0) until it finds nothing. */
static void drain_engine(run *r)
{
    ss_event ev[64];
    for (int idle = 0, guard = 0; idle < 2; guard++) {
        check(guard < 100000, "engine: no end to the events");
        ss_err err;
        int n = ss_hub_poll(r->hub, 0, ev, r->batch, &err);
        if (n == SS_E_TIMEOUT) { /* nothing within the time-out */
            check(err.code == SS_E_TIMEOUT && err.message[0], "engine: a time-out without "
                  "its record");
            n = 0;
        }
        check(n >= 0, "engine: ss_hub_poll failed: %d %s", n, err.message);
        check(n <= r->batch, "engine: %d events in a batch of %d", n, r->batch);
        /* copied only after the whole batch: every message must stay valid until the
         * next poll, whichever channel the bytes after it came from */
        for (int i = 0; i < n; i++) {
            int j = 0;
            while (j < r->neng && r->id[j] != ev[i].id)
                j++;
            check(j < r->neng, "engine: an event for id %llx, not one of this input's",
                  (unsigned long long)ev[i].id);
            check(!r->eng_ended[j], "engine: an event after channel %d ended", j);
            if (ev[i].kind == SS_EV_MESSAGE) {
                check(ev[i].data || !ev[i].len, "engine: NULL message");
                check_message(r, ev[i].len, "engine");
                msgs_add(&r->emsgs[j], ev[i].data, ev[i].len);
            } else {
                check(ev[i].kind == SS_EV_ENDED, "engine: event kind %d", ev[i].kind);
                check(ev[i].code < 0, "engine: ended with code %d", ev[i].code);
                r->eng_ended[j] = 1;
                r->eout[j].code = ev[i].code;
            }
        }
        if (n) {
            idle = 0;
            continue;
        }
        /* nothing found: the hub's descriptor must not claim otherwise (twice in a row,
         * since a poll may drain its own wake-up signal) */
        struct pollfd pf = {.fd = ss_hub_fd(r->hub), .events = POLLIN};
        int ready = poll(&pf, 1, 0);
        if (!ready)
            return;
        idle++;
    }
    die("engine: ss_hub_fd stays readable while ss_hub_poll finds nothing");
}

static int same_msgs(const msgs *a, const msgs *b, size_t upto)
{
    if (a->n < upto || b->n < upto)
        return 0;
    for (size_t i = 0; i < upto; i++)
        if (a->len[i] != b->len[i] || memcmp(a->data[i], b->data[i], a->len[i]))
            return 0;
    return 1;
}

static void concat(const msgs *m, const char *sep, size_t sep_len, unsigned char *out,
                   size_t *n, size_t cap)
{
    *n = 0;
    for (size_t i = 0; i < m->n; i++) {
        check(*n + m->len[i] + sep_len <= cap, "messages longer than the stream");
        memcpy(out + *n, m->data[i], m->len[i]);
        *n += m->len[i];
        if (sep_len) {
            memcpy(out + *n, sep, sep_len);
            *n += sep_len;
        }
    }
}

/* Invariant 4 over the stream as sent (the raw last chunk excluded). */
static void check_reencode(run *r, const msgs *m, const unsigned char *s, size_t n)
{
    static unsigned char joined[2 * FUZZ_MAX_INPUT + 256];
    size_t k = 0;
    if (r->mode == SS_MODE_SIZE) {
        for (size_t i = 0; i < m->n; i++) {
            unsigned long long v = 0;
            size_t d = 0;
            while (k < n && s[k] >= '0' && s[k] <= '9' && d < 21) {
                v = v * 10 + (s[k++] - '0');
                d++;
            }
            check(d >= 1 && v == m->len[i], "SIZE: frame %zu (%zu bytes) not re-encoded at "
                  "offset %zu", i, m->len[i], k);
            if (k < n && s[k] == '\r')
                k++;
            check(k < n && s[k] == '\n', "SIZE: frame %zu: no LF after its header", i);
            k++;
            check(n - k >= m->len[i] && !memcmp(s + k, m->data[i], m->len[i]),
                  "SIZE: frame %zu: the payload differs from the stream", i);
            k += m->len[i];
        }
    } else if (r->mode == SS_MODE_END_TAG_BUFFER) {
        concat(m, r->tag, r->tag_len, joined, &k, sizeof joined);
        check(k <= n && !memcmp(joined, s, k), "END_TAG_BUFFER: frames + tags are not a "
              "prefix of the stream");
    } else if (r->mode == SS_MODE_NO_END_TAG) {
        concat(m, NULL, 0, joined, &k, sizeof joined);
        check(k <= n && !memcmp(joined, s, k), "NO_END_TAG: messages are not the stream");
    }
}

/* The blocking reader against the model, and invariants 3-5 for it. */
static void check_blocking(run *r, const model *m, int exact, const unsigned char *stream,
                           size_t stream_len)
{
    int ended = r->ending != 3 || m->error;
    if (ended)
        check(r->bout.code, "blocking: the stream ended, the reads did not");
    else
        check(!r->bout.code, "blocking: ended (%d: %s) on an open, well-formed stream",
              r->bout.code, r->bout.message);
    if (m->error) {
        check(r->bout.code == m->error, "malformed stream: expected %d, got %d (%s)",
              m->error, r->bout.code, r->bout.message);
    } else if (ended && r->ending != 2) {
        check(r->bout.code == SS_E_PEER_CLOSED, "the stream ended: expected PEER_CLOSED, "
              "got %d (%s)", r->bout.code, r->bout.message);
        if (exact) {
            int clean = model_clean(m);
            check(clean ? r->bout.state == SS_STATE_OPEN && r->bout.peer_closed
                        : r->bout.state == SS_STATE_BROKEN,
                  "the stream ended %s a frame, state %d peer_closed %d",
                  clean ? "between" : "inside", r->bout.state, r->bout.peer_closed);
        }
    } else if (ended) { /* hostile ending: a reset (plain), raw bytes in the TLS stream */
        check(r->tls ? r->bout.code == SS_E_TLS || r->bout.code == SS_E_PEER_CLOSED ||
                           r->bout.code == SS_E_RESET
                     : r->bout.code == SS_E_RESET,
              "hostile ending: code %d (%s)", r->bout.code, r->bout.message);
    }
    if (r->bout.code)
        check(r->bout.state == SS_STATE_BROKEN || r->bout.peer_closed,
              "ended with %d yet neither broken nor peer-closed", r->bout.code);
    if (exact)
        check(same_msgs(&r->bmsgs, &m->out, m->out.n) && r->bmsgs.n == m->out.n,
              "blocking messages differ from the model's (%zu vs %zu)", r->bmsgs.n,
              m->out.n);
    if (r->mode != SS_MODE_END_TAG)
        check_reencode(r, &r->bmsgs, stream, stream_len);
    if (r->bout.code) { /* an ended connection stays ended */
        const char *p;
        size_t len;
        ss_err e;
        int again = ss_conn_read(r->blk.conn, 0, r->max_bytes, &p, &len, &e);
        check(again == r->bout.code, "blocking: ended with %d (%s), the next read gave %d "
              "(%s)", r->bout.code, r->bout.message, again, e.message);
        if (r->bout.state == SS_STATE_BROKEN)
            check(!strcmp(e.message, r->bout.message), "blocking: the error changed:\n"
                  "  %s\n  %s", r->bout.message, e.message);
    }
}

/* Engine channel j against the blocking reader (checked already). */
static void check_engine(run *r, int j, int exact, const unsigned char *stream,
                         size_t stream_len)
{
    outcome *o = &r->eout[j];
    final_state(r->eng[j].conn, o);
    check(!r->bout.code == !r->eng_ended[j], "channel %d: blocking ended with %d (%s), the "
          "engine %s", j, r->bout.code, r->bout.message,
          r->eng_ended[j] ? "reported an end" : "did not");
    check(r->bout.code == o->code, "channel %d: blocking ended with %d (%s), the engine "
          "with %d", j, r->bout.code, r->bout.message, o->code);
    check(r->bout.state == o->state && r->bout.peer_closed == o->peer_closed,
          "channel %d: states differ: blocking %d/%d, engine %d/%d", j, r->bout.state,
          r->bout.peer_closed, o->state, o->peer_closed);
    const msgs *em = &r->emsgs[j];
    if (exact) {
        check(same_msgs(&r->bmsgs, em, r->bmsgs.n) && r->bmsgs.n == em->n,
              "channel %d: blocking and engine messages differ (%zu vs %zu)", j,
              r->bmsgs.n, em->n);
    } else if (r->mode == SS_MODE_NO_END_TAG) {
        static unsigned char a[2 * FUZZ_MAX_INPUT + 256], b[2 * FUZZ_MAX_INPUT + 256];
        size_t an, bn;
        concat(&r->bmsgs, NULL, 0, a, &an, sizeof a);
        concat(em, NULL, 0, b, &bn, sizeof b);
        check(an == bn && !memcmp(a, b, an), "channel %d: NO_END_TAG: the bytes differ", j);
    }
    if (r->mode != SS_MODE_END_TAG)
        check_reencode(r, em, stream, stream_len);
    if (o->code) { /* out of the hub, read directly: same end, same text */
        ss_hub_remove(r->hub, r->eng[j].conn);
        const char *p;
        size_t len;
        ss_err e;
        int again = ss_conn_read(r->eng[j].conn, 0, r->max_bytes, &p, &len, &e);
        check(again == o->code, "channel %d: ended with %d, the next read gave %d (%s)", j,
              o->code, again, e.message);
        int texts = exact && !r->grouped;
        if (texts && o->state == SS_STATE_BROKEN)
            check(!strcmp(e.message, r->bout.message), "channel %d: error texts differ:\n"
                  "  blocking: %s\n  engine:   %s", j, r->bout.message, e.message);
    }
}

static void run_input(const uint8_t *data, size_t size)
{
    static ss_hub *hubs[8];
    if (size < 3 || size > FUZZ_MAX_INPUT)
        return;
    run *r = calloc(1, sizeof *r);
    model *m = calloc(1, sizeof *m);
    check(r && m, "out of memory");
    r->mode = data[0] & 3;
    r->tls = (data[0] >> 2) & 1;
    r->ending = (data[0] >> 3) & 3;
    r->together = (data[0] >> 5) & 1;
    r->batch = BATCH[data[0] >> 6];
    r->tag = TAGS[data[1] & 7];
    r->tag_len = strlen(r->tag);
    r->limit = LIMITS[(data[1] >> 3) & 7];
    int mb = ((data[1] >> 6) & 3) | ((data[2] >> 5) & 4);
    r->max_bytes = MAX_BYTES[mb];
    int cut = data[2] & 0x3f;
    r->coalesced = r->tls && cut == CUT_RECORDS;
    r->neng = data[2] & 0x40 ? MAX_CHANNELS : 1;
    const unsigned char *s = data + 3;
    size_t n = size - 3;

    *m = (model){.mode = r->mode, .tag = r->tag, .tag_len = r->tag_len, .limit = r->limit,
                 .max_bytes = r->max_bytes, .want = -1};
    ss_err err;
    if (!hubs[mb]) /* long-lived hubs, as a server keeps one: ids, slots, generations */
        check(ss_hub_new(NULL, SS_MODE_SIZE, "", 0, 0, r->max_bytes, &hubs[mb], &err) == SS_OK,
              "ss_hub_new: %s", err.message);
    r->hub = hubs[mb];
    open_side(r, &r->blk);
    for (int j = 0; j < r->neng; j++) {
        open_side(r, &r->eng[j]);
        check(ss_hub_add(r->hub, r->eng[j].conn, &r->id[j], &err) == SS_OK,
              "ss_hub_add: %s", err.message);
    }
    drain_engine(r); /* nothing yet */
    for (int j = 0; j < r->neng; j++)
        check(r->emsgs[j].n == 0 && !r->eng_ended[j], "engine: events before any data");

    /* The chunks: [start, end) pieces of s; the raw (hostile TLS) ending sends the last
     * one unencrypted. */
    size_t starts[FUZZ_MAX_INPUT + 1], ends[FUZZ_MAX_INPUT + 1], nchunks = 0;
    if (cut == CUT_SEPARATOR || cut == CUT_RECORDS) {
        size_t a = 0;
        for (size_t i = 0; i + 1 < n; i++)
            if (s[i] == 0xff && s[i + 1] == 0xff) {
                starts[nchunks] = a;
                ends[nchunks++] = i;
                a = i + 2;
                i++;
            }
        starts[nchunks] = a;
        ends[nchunks++] = n;
    } else {
        size_t step = cut == CUT_WHOLE ? (n ? n : 1) : (size_t)cut;
        for (size_t a = 0; a < n; a += step) {
            starts[nchunks] = a;
            ends[nchunks++] = a + step < n ? a + step : n;
        }
    }
    int raw_last = r->tls && r->ending == 2 && nchunks > 0;
    size_t key_updates = 0;
    for (size_t i = 0; r->tls && i < nchunks; i++)
        key_updates += starts[i] == ends[i];
    /* ~270 unanswered KeyUpdates fill a socketpair: the server's reads then wait, and the
     * records sent meanwhile arrive together */
    r->grouped = r->coalesced || key_updates >= 64;
    /* the stream as the model sees it, for invariant 4 (separators and raw bytes out) */
    static unsigned char stream[FUZZ_MAX_INPUT];
    size_t stream_len = 0;
    for (size_t i = 0; i < nchunks; i++) {
        if (raw_last && i + 1 == nchunks)
            break;
        size_t len = ends[i] - starts[i];
        memcpy(stream + stream_len, s + starts[i], len);
        stream_len += len;
        model_deliver(m, s + starts[i], len);
    }
    /* Step t: every reader gets its next chunk, then all are drained.  Engine channel j
     * lags j chunks behind the blocking reader and channel 0, so the channels a poll
     * serves bring different bytes (a message overwritten by another channel's bytes
     * shows).  A reader's stream ends after its last chunk has been drained, or with it
     * ("together").  Coalesced records are all written before the one drain. */
    for (size_t t = 0; t < nchunks + (size_t)r->neng; t++) {
        for (int x = -1; x < r->neng; x++) {
            side *sd = x < 0 ? &r->blk : &r->eng[x];
            size_t lag = x < 1 ? 0 : (size_t)x;
            if (t < lag)
                continue;
            size_t k = t - lag;
            if (k < nchunks) {
                size_t len = ends[k] - starts[k];
                if (r->tls || len)
                    write_chunk(r, sd, s + starts[k], len, raw_last && k + 1 == nchunks);
                if (k + 1 == nchunks && r->together)
                    end_stream(r, sd);
            } else if (k == nchunks && (!r->together || nchunks == 0)) {
                end_stream(r, sd);
            }
        }
        if (!r->coalesced) {
            drain_blocking(r);
            drain_engine(r);
        }
    }
    drain_blocking(r);
    drain_engine(r);
    /* The TLS writers now read what the server sent (KeyUpdate answers, tickets): reads
     * that waited on the server's writes go on.  Until nothing moves. */
    for (int round = 0; r->tls; round++) {
        check(round < 1000, "the readers never caught up");
        uint64_t moved = client_drain(&r->blk);
        for (int j = 0; j < r->neng; j++)
            moved += client_drain(&r->eng[j]);
        if (!moved)
            break;
        drain_blocking(r);
        drain_engine(r);
    }

    if (getenv("FUZZ_VERBOSE"))
        fprintf(stderr, "mode %d tls %d ending %d together %d coalesced %d batch %d limit %zu "
                "max_bytes %zu tag \"%s\" channels %d: messages blocking %zu engine %zu "
                "model %zu; ended blocking %d (%s) engine %d, model error %d clean %d\n",
                r->mode, r->tls, r->ending, r->together, r->coalesced, r->batch, r->limit,
                r->max_bytes, r->tag, r->neng, r->bmsgs.n, r->emsgs[0].n, m->out.n,
                r->bout.code, r->bout.message, r->eout[0].code, m->error, model_clean(m));
    /* Outcomes.  Coalesced TLS records: SocketEndTag drops a different amount in each
     * reader (the blocking one reads a record at a time, the engine all of them), so only
     * invariants 1 and 3 hold; SocketNoEndTag cuts differently but ends the same way. */
    final_state(r->blk.conn, &r->bout);
    int exact = !(r->grouped && (r->mode == SS_MODE_END_TAG || r->mode == SS_MODE_NO_END_TAG));
    if (!(r->grouped && r->mode == SS_MODE_END_TAG)) {
        check_blocking(r, m, exact, stream, stream_len);
        for (int j = 0; j < r->neng; j++)
            check_engine(r, j, exact, stream, stream_len);
    }

    for (int j = 0; j < r->neng; j++)
        ss_hub_remove(r->hub, r->eng[j].conn);
    for (int j = -1; j < r->neng; j++) {
        side *sd = j < 0 ? &r->blk : &r->eng[j];
        ss_conn_free(sd->conn);
        client_free(sd->ssl);
        if (sd->wfd >= 0)
            close(sd->wfd);
        if (j >= 0)
            msgs_free(&r->emsgs[j]);
    }
    ERR_clear_error();
    msgs_free(&r->bmsgs);
    msgs_free(&m->out);
    free(m);
    free(r);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN); /* as in Python: writes to a closed peer fail with EPIPE */
    tls_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    run_input(data, size);
    return 0;
}
