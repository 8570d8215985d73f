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
    ss_err broken;        /* the error that broke the connection */
    int mode;
    char tag[64];
    size_t tag_len;
    size_t max_message;
    /* framing state (under read_lock) */
    ss_buf in;            /* bytes received, not yet consumed */
    ss_buf msg;           /* SIZE mode: the message being assembled */
    long long want;       /* SIZE mode: payload length once the header is read, else -1 */
    size_t scanned;       /* END_TAG modes: bytes of `in` already searched for the tag */
    struct sockaddr_storage peer;
    socklen_t peer_len;
    atomic_ullong bytes_in, bytes_out;
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
ss_conn *ss_conn_wrap(int fd, SSL *ssl, ss_ctx *ctx, const struct sockaddr *peer,
                      socklen_t peer_len);
int ss_set_nodelay(int fd);
void ss_addr_to_str(const struct sockaddr *sa, char *host, size_t host_len, int *port);

/* ctx.c */
void ss_ctx_ref(ss_ctx *ctx);
int ss_check_negotiated(SSL *ssl, ss_ctx *ctx, ss_err *err);
int ss_handshake_error(SSL *ssl, int ret, ss_err *err, const char *what);
/* Client: offer the session kept for this host, port and name; keep the next one. */
void ss_client_session_attach(ss_ctx *ctx, SSL *ssl, const char *host, int port,
                              const char *server_name);

/* closing.c: close a socket after a failed handshake's alert, without a reset. */
void ss_close_after_alert(int fd);

#endif
