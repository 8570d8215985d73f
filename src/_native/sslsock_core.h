/*
 * sslsock core: TLS listeners, connections and framing over OpenSSL's libssl.
 *
 * Plain C, no Python.h: the cffi binding is one user of this header, not a requirement.
 *
 * Conventions
 *  - Every function that can fail returns SS_OK (0) or a negative SS_E_* code and fills
 *    the caller's ss_err record right after the failing call (OpenSSL's error queue drained
 *    into it, errno, or the verify result).
 *  - Durations are milliseconds; a negative time-out means "no limit".
 *  - Objects have one owner and one free function.  The *_shutdown / ss_conn_close
 *    functions are safe to call from another thread while a call is blocked on the same
 *    object: they wake it (it returns SS_E_CLOSED).  The *_free functions must only be
 *    called once no other call on the object is in progress.
 */
#ifndef SSLSOCK_CORE_H
#define SSLSOCK_CORE_H

#include <stddef.h>
#include <stdint.h>

/* The version of this interface: a part built against another one (the CPython bridge,
 * sslsock._fastio, compiled separately from the cffi module) refuses to load.  Raise it
 * when a declaration below changes. */
#define SS_ABI_VERSION 8

#define SS_OK 0
#define SS_E_TIMEOUT (-1)     /* nothing within the time-out; the object stays usable */
#define SS_E_PEER_CLOSED (-2) /* the peer closed (with or without close_notify) */
#define SS_E_RESET (-3)       /* the peer reset the connection */
#define SS_E_TLS (-4)         /* TLS handshake / protocol failure */
#define SS_E_VERIFY (-5)      /* certificate verification failed */
#define SS_E_SYSTEM (-6)      /* another OS error */
#define SS_E_FRAME (-7)       /* malformed frame for the transmission mode */
#define SS_E_TOO_BIG (-8)     /* frame larger than the connection's message limit */
#define SS_E_ADDRESS (-9)     /* resolving or binding an address failed */
#define SS_E_IN_USE (-10)     /* the port is in use */
#define SS_E_CLOSED (-11)     /* closed locally */
#define SS_E_NOMEM (-12)
#define SS_E_INVALID (-13)    /* bad argument */
#define SS_E_CONFIG (-14)     /* certificate, key or context configuration refused */
#define SS_E_AGAIN (-15)      /* internal: nothing more without waiting (never returned by
                                 the public calls above except as documented) */

typedef struct ss_err {
    int code;          /* SS_E_* */
    int sys_code;      /* errno, OpenSSL reason code, or X509 verify result */
    char message[256]; /* what failed, in the caller's terms */
    char detail[512];  /* the OS / OpenSSL reason */
} ss_err;

/* Protocol versions, as a bitmask. */
#define SS_V_SSL3 0x01
#define SS_V_TLS1 0x02
#define SS_V_TLS1_1 0x04
#define SS_V_TLS1_2 0x08
#define SS_V_TLS1_3 0x10

/* Which of SS_V_* this libssl can negotiate (compiled in, method available). */
unsigned ss_versions_supported(void);
const char *ss_openssl_version_linked(void);
const char *ss_openssl_version_compiled(void);
long ss_openssl_security_level_default(void);

/* ---- TLS contexts ------------------------------------------------------------------- */

typedef struct ss_ctx_config {
    int is_server;
    unsigned versions;          /* SS_V_* the socket may negotiate, exactly */
    int security_level;         /* for TLS >= 1.2; -1 keeps the library default */
    int legacy_security_level;  /* for SSL 3 / TLS 1.0 / 1.1 connections (usually 0) */
    const char *cipher_list;    /* TLS <= 1.2 cipher string, NULL for OpenSSL's default */
    const char *ciphersuites;   /* TLS 1.3 suites, NULL for OpenSSL's default */
    const char *cert_pem;       /* certificate chain, leaf first (server; client for mTLS) */
    size_t cert_pem_len;
    const char *key_pem;        /* unencrypted private key */
    size_t key_pem_len;
    int verify_peer;            /* client: verify the server; server: require a client cert */
    int use_system_ca;          /* add the system's default trust store */
    const char *ca_pem;         /* extra trust anchors (PEM bundle), may be NULL */
    size_t ca_pem_len;
    const char *legacy_cipher_list; /* server: cipher string for connections negotiated
                                     * below TLS 1.2; NULL keeps cipher_list */
    int no_resumption;          /* client: do not keep sessions to resume */
    /* ALPN (RFC 7301): the protocols offered (client) or accepted (server), in the wire
     * format (each a length byte then the name), most preferred first; NULL: none. */
    const unsigned char *alpn;
    size_t alpn_len;
    int alpn_required;          /* server: refuse (no_application_protocol alert) a client
                                 * that offers none of them, or no ALPN at all */
    const char *keylog_path;    /* append the TLS secrets (NSS key log format) to this file,
                                 * created 0600; NULL or "": no key log */
    const char *crl_pem;        /* revocation lists (PEM), checked for the peer's certificate
                                 * (its issuer must have one); NULL: no revocation check */
    size_t crl_pem_len;
    int ocsp_required;          /* client: require a stapled OCSP response that verifies and
                                 * says the server's certificate is good */
    int partial_chain;          /* trust a ca_pem certificate as it is, even when it is not
                                 * self-signed (X509_V_FLAG_PARTIAL_CHAIN); 0: a chain must
                                 * reach a self-signed anchor */
} ss_ctx_config;

typedef struct ss_ctx ss_ctx;

int ss_ctx_new(const ss_ctx_config *cfg, ss_ctx **out, ss_err *err);
void ss_ctx_free(ss_ctx *ctx); /* reference counted: listeners and connections keep theirs */
/* The SS_V_* versions the context negotiates: those asked for that this build has and, for
 * a server, that its certificate is strong enough to serve. */
unsigned ss_ctx_versions(const ss_ctx *ctx);
/* Server: bits of security of the certificate chain's weakest key or signature (-1: none). */
int ss_ctx_cert_security_bits(const ss_ctx *ctx);
/* Server: encrypt session tickets with shared keys, so that every process holding the same
 * keys resumes the sessions of the others.  keys: count records of SS_TICKET_KEY_LEN bytes
 * (16 name, 32 AES-256 key, 32 HMAC-SHA256 key); the first encrypts new tickets, all
 * decrypt.  May be called again at any time (rotation): handshakes in progress keep what
 * they started with.  The bytes are copied (and wiped when replaced). */
#define SS_TICKET_KEY_LEN 80
#define SS_TICKET_KEYS_MAX 16
int ss_ctx_set_ticket_keys(ss_ctx *ctx, const unsigned char *keys, int count, ss_err *err);
/* Server: serve other certificates by the name the client asks for (SNI).  names[i] is a
 * lower-case host name or a wildcard "*.example.com" (one label), served by ctxs[i] (built
 * with the same options and trust as ctx, which serves every other name and clients that
 * send none).  Once per context, before it serves; ctx keeps a reference to each. */
int ss_ctx_set_sni(ss_ctx *ctx, const char *const *names, ss_ctx *const *ctxs, int count,
                   ss_err *err);
/* Server: the OCSP response (DER) stapled when a client asks for one; len 0 removes it.
 * May be called again at any time (a refreshed response); the bytes are copied. */
int ss_ctx_set_ocsp_response(ss_ctx *ctx, const unsigned char *der, size_t len, ss_err *err);

/* ---- connections ------------------------------------------------------------------- */

/* An end tag is 1 to SS_MAX_END_TAG bytes: long enough for any delimiter in use (HTTP's
 * "\r\n\r\n", a MIME boundary), short enough to keep in each connection's state. */
#define SS_MAX_END_TAG 64
#define SS_MODE_END_TAG 0        /* payload + tag; read up to the tag, rest dropped */
#define SS_MODE_SIZE 1           /* "N\r\n" + payload */
#define SS_MODE_END_TAG_BUFFER 2 /* as END_TAG, bytes after the tag kept */
#define SS_MODE_NO_END_TAG 3     /* raw bytes */

#define SS_STATE_OPEN 0
#define SS_STATE_BROKEN 1
#define SS_STATE_CLOSED 2

typedef struct ss_conn ss_conn;

typedef struct ss_conn_info {
    char peer_addr[64];
    int peer_port;
    char local_addr[64];
    int local_port;
    char protocol[24]; /* "TLSv1.3", "" for plain TCP */
    char cipher[64];
    int state;         /* SS_STATE_* */
    int mode;
    int peer_closed;   /* the peer ended the stream (reads return SS_E_PEER_CLOSED) */
    uint64_t bytes_in;
    uint64_t bytes_out;
    char proxy_addr[64]; /* the proxy that sent a PROXY header ("": none) */
    int proxy_port;
    char alpn[256];        /* the application protocol negotiated ("": none) */
    char server_name[256]; /* the name the client asked for (SNI; "": none) */
} ss_conn_info;

/* Connect to host:port (name or literal), with a TLS handshake when ctx is not NULL.
 * server_name: SNI and the name (or IP literal) the certificate must match when the
 * context verifies; NULL or "" for none. */
int ss_connect(ss_ctx *ctx, const char *host, int port, const char *server_name,
               int timeout_ms, ss_conn **out, ss_err *err);

/* Adopt an already connected stream socket (plain TCP or a socketpair end) as a plain
 * connection; the connection owns fd from now on (it is made non-blocking). */
int ss_conn_adopt(int fd, ss_conn **out, ss_err *err);

/* Set the transmission mode without waiting for calls in progress: a read or a write
 * already running finishes in the mode it started with, the next one uses the new mode. */
int ss_conn_set_mode(ss_conn *c, int mode, const char *tag, size_t tag_len, ss_err *err);
/* The largest max_message: the size header's value is kept in a long long, and the end-tag
 * search adds the tag length (at most 64) to it; both stay exact below this bound. */
/* 64 MiB: the default largest message; a size header above it breaks the connection
 * before anything of that size is allocated. */
#define SS_DEFAULT_MAX_MESSAGE 67108864
/* 1 MiB: what a channel served by the engine may have queued before a writer waits. */
#define SS_DEFAULT_HIGH_WATER 1048576
#define SS_MAX_MESSAGE_LIMIT (SIZE_MAX / 2 - 64)
/* Larger values are taken as SS_MAX_MESSAGE_LIMIT. */
void ss_conn_set_max_message(ss_conn *c, size_t max_message);
/* 1 if the connection is open and the peer has neither closed nor reset it (checked now,
 * without reading or waiting); 0 otherwise. */
int ss_conn_alive(ss_conn *c);

/* Read the next message.  *out points into the connection's buffers and stays valid until
 * the next ss_conn_read or ss_conn_trim on this connection (callers serialise reads).
 * max_bytes only applies to SS_MODE_NO_END_TAG. */
int ss_conn_read(ss_conn *c, int timeout_ms, size_t max_bytes, const char **out,
                 size_t *out_len, ss_err *err);
/* Give back buffer memory beyond what an idle connection needs (after a large message). */
void ss_conn_trim(ss_conn *c);
/* ss_conn_read for a caller that copies the message out itself (sslsock._fastio): on SS_OK
 * it returns with the connection's read lock still held, so *out stays valid whatever
 * other threads do, and the caller must then call ss_conn_read_done with the length it
 * got (which gives back a large buffer, as ss_conn_trim, and releases the lock).  On an
 * error the lock is already released. */
int ss_conn_read_hold(ss_conn *c, int timeout_ms, size_t max_bytes, const char **out,
                      size_t *out_len, ss_err *err);
void ss_conn_read_done(ss_conn *c, size_t len);

/* Write one message, framed by the connection's mode. */
int ss_conn_write(ss_conn *c, const char *data, size_t len, int timeout_ms, ss_err *err);

/* Queue one message, framed, and send what the socket takes now; a channel served by a
 * hub (ss_hub_*) has the rest sent by the hub's polls.  Waits only while more than the
 * hub's high-water mark (ss_hub_set_high_water; 1 MiB by default) is queued, then at most
 * timeout_ms: SS_E_TIMEOUT, nothing of this message queued. */
int ss_conn_queue_write(ss_conn *c, const char *data, size_t len, int timeout_ms,
                        ss_err *err);

/* Send close_notify (waiting at most timeout_ms), shut the socket down, and wake any call
 * blocked on it.  Idempotent. */
void ss_conn_close(ss_conn *c, int timeout_ms);
void ss_conn_free(ss_conn *c);

void ss_conn_get_info(ss_conn *c, ss_conn_info *info);
/* DER of the peer certificate into buf; returns its length (0: none), even when larger
 * than buf_len (then nothing is copied). */
int ss_conn_peer_cert(ss_conn *c, unsigned char *buf, int buf_len);
/* 1 when the TLS handshake resumed an earlier session (ticket or session id), else 0. */
int ss_conn_tls_resumed(ss_conn *c);
/* The key-exchange group the handshake negotiated ("X25519MLKEM768", "x25519", ...; "" for
 * plain TCP or when the library does not say), into buf (groups.c). */
void ss_conn_group(ss_conn *c, char *buf, size_t len);
/* 1 when the linked OpenSSL knows the TLS group of that name (e.g. "X25519MLKEM768"). */
int ss_openssl_group_available(const char *name);

/* ---- listeners and the accept engine ------------------------------------------------ */

/* A PROXY allow-list entry: an IPv6 address (IPv4 as ::ffff:a.b.c.d), then a prefix
 * length in bits. */
#define SS_PROXY_ALLOW_ENTRY 17

typedef struct ss_listener_config {
    const char *host;          /* NULL or "": all interfaces (IPv6 dual stack when possible) */
    int port;                  /* 0: the system picks */
    int reuse_addr;            /* SO_REUSEADDR */
    int reuse_port;            /* SO_REUSEPORT: share the port among processes on purpose */
    int backlog;               /* <= 0: default */
    int threads;               /* handshake threads (at most 64); <= 0: one */
    int handshake_timeout_ms;  /* <= 0: default */
    int max_pending;           /* handshakes in progress at once; <= 0: default */
    int max_ready;             /* finished connections waiting for accept; <= 0: default */
    /* [extension] the PROXY protocol: 1: every connection must start with a v1 or v2 header
     * (read before the handshake, within the handshake time-out, at most proxy_max_len
     * bytes); the client it names becomes the connection's peer.  0: no header expected. */
    int proxy_protocol;
    int proxy_max_len;         /* <= 0: default (1024) */
    /* addresses allowed to send the header: proxy_allow_count entries of
     * SS_PROXY_ALLOW_ENTRY bytes, an IPv6
     * address (IPv4 as ::ffff:a.b.c.d) and a prefix length in bits; 0 entries: any */
    const unsigned char *proxy_allow;
    int proxy_allow_count;
} ss_listener_config;

typedef struct ss_listener_stats {
    uint64_t accepted;          /* TCP connections taken from the kernel */
    uint64_t handshakes;        /* completed handshakes (or plain connections) queued */
    uint64_t failed_tls;        /* handshake failed: protocol, alert, verification */
    uint64_t failed_io;         /* peer reset or closed during the handshake */
    uint64_t timed_out;         /* handshake not done within the time-out */
    uint64_t dropped_pending;   /* refused: too many handshakes in progress */
    uint64_t dropped_ready;     /* refused: too many connections waiting for accept */
    uint64_t taken;             /* handed to the program by ss_listener_accept */
    uint64_t pending;           /* handshakes in progress now */
    uint64_t ready;             /* waiting for accept now */
    char last_failure[256];     /* reason of the latest failed handshake */
    uint64_t proxy_refused;     /* refused: missing, malformed, oversized or late PROXY
                                 * header, or a sender not allowed to send one */
} ss_listener_stats;

typedef struct ss_listener ss_listener;

int ss_listener_new(ss_ctx *ctx, const ss_listener_config *cfg, ss_listener **out,
                    ss_err *err);
int ss_listener_port(ss_listener *l);
/* SS_OK once a connection is ready (without taking it). */
int ss_listener_wait(ss_listener *l, int timeout_ms, ss_err *err);
/* Take the next ready connection, waiting at most timeout_ms (0: do not wait). */
int ss_listener_accept(ss_listener *l, int timeout_ms, ss_conn **out, ss_err *err);
void ss_listener_get_stats(ss_listener *l, ss_listener_stats *st);
/* Serve new handshakes with ctx from now on (certificate renewal); handshakes in progress
 * and connections already open keep the context they started with. */
void ss_listener_set_ctx(ss_listener *l, ss_ctx *ctx);
void ss_listener_shutdown(ss_listener *l);
void ss_listener_free(ss_listener *l);

/* ---- the channel engine: one thread serves many channels ------------------------------
 *
 * A hub holds established connections (accepted from its listener, or added) in one epoll
 * set.  ss_hub_poll waits until some have data, then, for each, reads what is there,
 * decrypts and deframes it in C, and returns a batch of events: whole messages, new
 * channels, ended channels.  One call per batch, however many channels and messages.
 * Message bytes are the hub's own memory, valid until its next ss_hub_poll (whatever
 * happens to their connection meanwhile).  A connection in a hub is the hub's to read:
 * ss_conn_read and ss_conn_read_hold refuse it (SS_E_INVALID) until it leaves.
 * ss_hub_fd is readable whenever a poll would find something: an event loop can wait on
 * it and poll with a zero time-out. */

#define SS_EV_MESSAGE 0  /* data, len: a whole message of channel id */
#define SS_EV_ACCEPTED 1 /* conn: a new channel from the listener (the caller owns it) */
#define SS_EV_ENDED 2    /* channel id ended: code is SS_E_PEER_CLOSED or what broke it */
#define SS_EV_WRITABLE 3 /* channel id's queue drained to what ss_hub_want_drain asked */

typedef struct ss_event {
    int kind;
    int code;
    uint64_t id;      /* the channel's id in the hub */
    ss_conn *conn;
    const char *data;
    size_t len;
} ss_event;

typedef struct ss_hub ss_hub;

/* listener may be NULL (connections are then only added).  Channels accepted from it get
 * the transmission mode, end tag and message limit given here; max_bytes caps a message
 * of SS_MODE_NO_END_TAG. */
int ss_hub_new(ss_listener *listener, int mode, const char *tag, size_t tag_len,
               size_t max_message, size_t max_bytes, ss_hub **out, ss_err *err);
/* Serve c (it keeps its own mode); *id names it in events. */
int ss_hub_add(ss_hub *h, ss_conn *c, uint64_t *id, ss_err *err);
/* Take c out of the hub (idempotent); after it returns, the hub no longer touches c. */
void ss_hub_remove(ss_hub *h, ss_conn *c);
/* Wait at most timeout_ms for events; returns how many (> 0), or a negative code:
 * SS_E_TIMEOUT, or SS_E_CLOSED once ss_hub_shutdown was called or the listener closed. */
int ss_hub_poll(ss_hub *h, int timeout_ms, ss_event *events, int max_events, ss_err *err);
int ss_hub_fd(ss_hub *h);
/* What each channel may have queued (ss_conn_queue_write) before its writer waits. */
void ss_hub_set_high_water(ss_hub *h, size_t bytes);
/* Stop reading channel c (paused != 0: its consumer has enough unread messages) or read
 * it again.  A paused channel is still reported when its peer resets or hangs up. */
void ss_hub_pause(ss_hub *h, ss_conn *c, int paused);
/* Ask to be told (one SS_EV_WRITABLE event for c, in a later batch) once at most `below`
 * bytes are queued on c (0: once its queue is empty).  Only channels that asked are
 * reported, once per request.  Returns 1 when that holds already (no event will come),
 * 0 when the event will come, SS_E_CLOSED when c is not served by h (it left, or its end
 * was reported: nothing sends its queue any more). */
int ss_hub_want_drain(ss_hub *h, ss_conn *c, size_t below);
/* Stop taking clients from the listener (which may then be closed); the channels the hub
 * holds are served on. */
void ss_hub_stop_accepting(ss_hub *h);
void ss_hub_shutdown(ss_hub *h);
void ss_hub_free(ss_hub *h);

/* A pump: a thread of the engine's own that polls hub h (max_events per batch) and hands
 * each batch over through ss_pump_fd, an eventfd readable once a batch is ready (one
 * reader for an event loop).  The hub must only be polled by its pump from then on.
 * ss_pump_take returns the ready batch's size (> 0, *events set), 0 when none is ready, or
 * the negative code of the poll that ended the pump (SS_E_CLOSED once the hub was shut
 * down).  The batch and its bytes stay valid until ss_pump_release, which lets the thread
 * poll again.  ss_pump_free stops and joins the thread (the hub stays open; new channels
 * of a batch nobody took are freed); free the pump before its hub. */
typedef struct ss_pump ss_pump;
int ss_pump_new(ss_hub *h, int max_events, ss_pump **out, ss_err *err);
int ss_pump_fd(ss_pump *p);
int ss_pump_take(ss_pump *p, ss_event **events, ss_err *err);
void ss_pump_release(ss_pump *p);
void ss_pump_free(ss_pump *p);
/* Bytes queued on c (ss_conn_queue_write) that the socket has not taken yet. */
size_t ss_conn_queued(ss_conn *c);
/* Send close_notify now, without closing: the connection stays open (and in its hub),
 * and the peer's answering close_notify is read as its end.  The graceful close of
 * asyncio's TLS transports.  1 when sent (or left in OpenSSL's buffer for the next try),
 * 0 for plain TCP or a connection no longer open. */
int ss_conn_close_notify(ss_conn *c);

void ss_free(void *p);

#endif
