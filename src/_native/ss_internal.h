/* Internal declarations shared by the core's C files (not part of the API). */
#ifndef SS_INTERNAL_H
#define SS_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, memmem, GNU strerror_r: before any system header */
#endif

#include "sslsock_core.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>

/* The largest TLS record plaintext (RFC 8446 §5.1): reading and framing in units of it
 * means one SSL_read / SSL_write per record. */
#define SS_RECORD 16384

/* A deadline meaning "do no I/O at all": deframe what is buffered (the channel engine). */
#define SS_NO_IO (-2LL)

struct ss_ctx {
    atomic_int refs;
    SSL_CTX *ssl_ctx;
    int is_server;
    unsigned versions;
    int security_level;
    int legacy_security_level;
    char *legacy_cipher_list;  /* server, below TLS 1.2; NULL: the context's list */
    int cert_bits;             /* server: weakest link of its chain, in bits of security */
    pthread_mutex_t sessions_lock;
    struct ss_session_slot *sessions; /* client: sessions to resume; NULL: none kept */
    unsigned long long sessions_clock;
    /* server: shared session-ticket keys (ss_ctx_set_ticket_keys); NULL: OpenSSL's own */
    pthread_mutex_t tickets_lock;
    unsigned char *tickets; /* ntickets records of SS_TICKET_KEY_LEN bytes, current first */
    int ntickets;
    /* tlsext.c: ALPN, key log, SNI table, OCSP response */
    unsigned char *alpn;    /* wire format; NULL: none */
    size_t alpn_len;
    int alpn_required;
    char *keylog_path;
    struct ss_sni_entry *sni; /* sorted by name; NULL: one certificate */
    int nsni;
    unsigned char *ocsp;    /* server: DER response to staple (tlsext.c's lock); NULL: none */
    size_t ocsp_len;
};

typedef struct ss_buf {
    char *data;
    size_t off; /* consumed prefix */
    size_t len; /* bytes after off */
    size_t cap;
} ss_buf;

struct ss_conn {
    int fd;
    SSL *ssl;             /* NULL for plain TCP */
    ss_ctx *ctx;          /* reference held, NULL for plain TCP */
    pthread_mutex_t ssl_lock;   /* held only around SSL_* calls, never while waiting */
    pthread_mutex_t read_lock;  /* one reader at a time (held across waits) */
    pthread_mutex_t write_lock; /* one writer at a time: frames never interleave */
    atomic_int closing;
    atomic_int peer_closed; /* the peer ended the stream between messages */
    atomic_int state;     /* SS_STATE_* */
    ss_err *broken;       /* the error that broke the connection (set once, then kept) */
    int mode;             /* the reader's copy of the mode and tag (under read_lock) */
    char tag[SS_MAX_END_TAG];
    size_t tag_len;
    size_t max_message;
    /* SocketChangeTransmissionMode's latest setting, under ssl_lock (never held while
     * waiting); the reader and the writer each copy it at the start of their next call when
     * mode_gen moved, so changing the mode never waits for a call blocked on the network. */
    int set_mode;
    char set_tag[SS_MAX_END_TAG];
    size_t set_tag_len;
    atomic_uint mode_gen;
    unsigned read_gen;    /* mode_gen the reader's copy is from (under read_lock) */
    unsigned write_gen;   /* mode_gen the writer's copy is from (under write_lock) */
    int wmode;            /* the writer's copy (under write_lock) */
    char wtag[SS_MAX_END_TAG];
    size_t wtag_len;
    /* framing state (under read_lock) */
    ss_buf in;            /* bytes received, not yet consumed */
    ss_buf msg;           /* SIZE mode: the message being assembled */
    ss_buf out;           /* queued frames not sent yet (under write_lock) */
    size_t high_water;    /* a queued write waits while more than this is queued */
    long long want;       /* SIZE mode: payload length once the header is read, else -1 */
    size_t scanned;       /* END_TAG modes: bytes of `in` already searched for the tag */
    struct sockaddr_storage peer; /* the client (as the PROXY header names it, if any) */
    socklen_t peer_len;
    struct sockaddr_storage proxy; /* the proxy that sent a PROXY header (proxy_len 0: none) */
    socklen_t proxy_len;
    atomic_ullong bytes_in, bytes_out;
    /* channel engine membership (hub.c), under the hub's lock */
    struct ss_hub *hub;
    int hub_slot;         /* index in the hub's table, -1 when in none */
    int hub_flags;        /* HUB_* in hub.c */
    struct ss_conn *hub_next; /* the hub's revisit list */
    uint64_t hub_poll;    /* the hub's poll that last served it (one pass per poll) */
    size_t hub_below;     /* HUB_DRAIN: report SS_EV_WRITABLE once at most this is queued */
    ss_err *hub_end;      /* how the stream ended, seen by a pass that stopped before
                           * handing out the messages ahead of it (NULL: not ended) */
};

/* errors.c */
int ss_fail(ss_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int ss_fail_errno(ss_err *err, int code, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int ss_fail_ssl(ss_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void ss_ssl_reason(char *buf, size_t len, int *reason_code);
const char *ss_version_name(int version);

/* time */
long long ss_now_ms(void);
long long ss_deadline(int timeout_ms);       /* -1 for no limit */
int ss_remaining(long long deadline);        /* ms to wait in poll(): -1 for no limit */

/* conn.c */
/* Room for extra more bytes behind b's unread ones: slide them to the front, then grow
 * (doubling).  0, or -1 out of memory (b unchanged). */
int ss_buf_reserve(ss_buf *b, size_t extra);
ss_conn *ss_conn_wrap(int fd, SSL *ssl, ss_ctx *ctx, const struct sockaddr *peer,
                      socklen_t peer_len);
int ss_set_nodelay(int fd);
/* SSL_set_fd with sslsock's socket BIO: records written while a message has more to come
 * are sent with MSG_MORE, so the kernel sends the message's records together (one TCP push,
 * one wake-up of the peer) instead of one per 16 KiB record.  1 on success, as SSL_set_fd. */
int ss_ssl_set_fd(SSL *ssl, int fd);
void ss_addr_to_str(const struct sockaddr *sa, char *host, size_t host_len, int *port);

/* Non-blocking: read what is there now into dst (at most room bytes).  Returns the bytes
 * read (0: none now); *end is the code that ended the stream or broke it (0: none, the
 * error record is in err), *more is set when room ran out (more may be waiting),
 * *write_first when reading cannot go on before OpenSSL sends something (the answer to a
 * TLS 1.3 KeyUpdate) that the socket does not take now: wait until it is writable. */
long ss_conn_read_nowait(ss_conn *c, char *dst, size_t room, int *more, int *end,
                         int *write_first, ss_err *err);
/* The next whole message from what is buffered, without I/O: SS_OK, SS_E_AGAIN (not a
 * whole message yet) or the error that broke the connection.  Read lock held. */
int ss_conn_take(ss_conn *c, size_t max_bytes, const char **out, size_t *out_len,
                 ss_err *err);
/* The stream ended (rc from ss_conn_read_nowait): a clean end between messages marks the
 * peer closed, anything else breaks the connection.  Returns rc.  Read lock held. */
int ss_conn_end(ss_conn *c, int rc, ss_err *err);
void ss_hub_detach(ss_conn *c); /* hub.c: ss_conn_free leaves its hub first */
void ss_hub_want_write(ss_conn *c); /* hub.c: watch for room to send the queue */
/* Send what is queued without waiting: SS_OK (all sent), SS_E_AGAIN, or an error; *left is
 * what is still queued (SIZE_MAX: a writer holds the queue, not known). */
int ss_conn_flush(ss_conn *c, size_t *left, ss_err *err);

/* listener.c: the eventfd that becomes readable when a connection is ready to accept
 * (turns the notification on). */
int ss_listener_ready_fd(ss_listener *l);

/* ctx.c */
void ss_ctx_ref(ss_ctx *ctx);
int ss_check_negotiated(SSL *ssl, ss_ctx *ctx, ss_err *err);
int ss_handshake_error(SSL *ssl, int ret, ss_err *err, const char *what);
/* Client: offer the session kept for this host, port and name; keep the next one. */
void ss_client_session_attach(ss_ctx *ctx, SSL *ssl, const char *host, int port,
                              const char *server_name);

/* tlsext.c: ALPN, key log, revocation lists, OCSP, SNI (called by ctx_setup and
 * ss_ctx_free); the context whose ticket keys a (maybe SNI-switched) connection uses. */
int ss_tlsext_setup(ss_ctx *ctx, const ss_ctx_config *cfg, ss_err *err);
void ss_tlsext_free(ss_ctx *ctx);
ss_ctx *ss_tlsext_origin(SSL *ssl);
const char *ss_tlsext_failure(SSL *ssl); /* why an extension refused the handshake */
/* Server, from the client-hello callback before anything else: choose the certificate by
 * the name asked for, refuse a client without ALPN when it is required.  0 or an alert. */
int ss_tlsext_client_hello(SSL *s, ss_ctx *ctx);

/* proxy.c: parse a PROXY v1/v2 header at the start of buf.  Returns the header's length
 * (> 0; *src_len 0 when it names no address: keep the connection's), 0 when more bytes
 * are needed, -1 when it is malformed or longer than max_len (why says what). */
int ss_proxy_parse(const unsigned char *buf, size_t len, size_t max_len,
                   struct sockaddr_storage *src, socklen_t *src_len, char *why, size_t why_len);
/* 1 when addr is in the allowed prefixes (SS_PROXY_ALLOW_ENTRY-byte entries; count 0:
 * every address). */
int ss_proxy_allowed(const unsigned char *allow, int count, const struct sockaddr *addr);

/* closing.c: close a socket after a failed handshake's alert, without a reset. */
void ss_close_after_alert(int fd);

/* groups.c: apply SSLSOCK_TLS_GROUPS (OpenSSL's group-list syntax) to a new context;
 * nothing when it is unset or empty, which keeps OpenSSL's defaults. */
int ss_ctx_apply_groups(SSL_CTX *c, ss_err *err);

#endif
