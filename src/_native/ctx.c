/*
 * TLS contexts, and how a socket negotiates exactly the versions its options name.
 *
 * OpenSSL takes a version *range* (min..max) plus "no TLS x" flags, and handles holes in
 * the range badly: it quietly shrinks the range to its lowest contiguous part, and
 * TLS 1.0/1.1 only complete at security level 0.  So:
 *  - Server: the context allows the whole range; when a ClientHello arrives, the
 *    client-hello callback intersects the versions the client offers with the socket's
 *    set, pins the connection to the highest common one (min = max), and sets the security
 *    level that version needs, for that connection only.  No common version: a
 *    protocol_version alert.
 *  - Client: the context offers the whole range (a hole cannot be expressed to a server);
 *    after the handshake, a version outside the set is refused before any data flows
 *    (ss_check_negotiated).
 */
#include "ss_internal.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    unsigned bit;
    int version;
} VERSIONS[] = {
    {SS_V_SSL3, SSL3_VERSION},     {SS_V_TLS1, TLS1_VERSION},
    {SS_V_TLS1_1, TLS1_1_VERSION}, {SS_V_TLS1_2, TLS1_2_VERSION},
    {SS_V_TLS1_3, TLS1_3_VERSION},
};
#define NVERSIONS (sizeof VERSIONS / sizeof VERSIONS[0])

static unsigned version_bit(int version)
{
    for (size_t i = 0; i < NVERSIONS; i++)
        if (VERSIONS[i].version == version)
            return VERSIONS[i].bit;
    return 0;
}

const char *ss_openssl_version_linked(void) { return OpenSSL_version(OPENSSL_VERSION); }
const char *ss_openssl_version_compiled(void) { return OPENSSL_VERSION_TEXT; }

long ss_openssl_security_level_default(void)
{
    SSL_CTX *c = SSL_CTX_new(TLS_method());
    if (!c)
        return -1;
    long level = SSL_CTX_get_security_level(c);
    SSL_CTX_free(c);
    return level;
}

unsigned ss_versions_supported(void)
{
    unsigned ok = 0;
    SSL_CTX *c = SSL_CTX_new(TLS_method());
    if (!c)
        return 0;
    for (size_t i = 0; i < NVERSIONS; i++) {
#ifdef OPENSSL_NO_SSL3_METHOD
        if (VERSIONS[i].version == SSL3_VERSION)
            continue;
#endif
        /* set_min_proto_version refuses versions compiled out of this build. */
        if (SSL_CTX_set_min_proto_version(c, VERSIONS[i].version) == 1)
            ok |= VERSIONS[i].bit;
    }
    SSL_CTX_free(c);
    ERR_clear_error();
    return ok;
}

static int lowest_version(unsigned set)
{
    for (size_t i = 0; i < NVERSIONS; i++)
        if (set & VERSIONS[i].bit)
            return VERSIONS[i].version;
    return 0;
}

static int highest_version(unsigned set)
{
    for (size_t i = NVERSIONS; i-- > 0;)
        if (set & VERSIONS[i].bit)
            return VERSIONS[i].version;
    return 0;
}

static void apply_level(SSL *s, ss_ctx *ctx, int version)
{
    int level = version < TLS1_2_VERSION ? ctx->legacy_security_level : ctx->security_level;
    if (level >= 0)
        SSL_set_security_level(s, level);
}

/* The versions a ClientHello offers: its supported_versions extension (RFC 8446 §4.2.1)
 * if present, else every version up to legacy_version. Returns 0 on a malformed list. */
static int offered_versions(SSL *s, unsigned *offered)
{
    const unsigned char *p;
    size_t len;
    *offered = 0;
    if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_supported_versions, &p, &len)) {
        if (len < 1 || (size_t)p[0] != len - 1 || (p[0] & 1))
            return 0;
        for (size_t i = 1; i + 1 < len; i += 2)
            *offered |= version_bit((p[i] << 8) | p[i + 1]);
        return 1;
    }
    unsigned legacy = SSL_client_hello_get0_legacy_version(s);
    for (size_t i = 0; i < NVERSIONS; i++)
        if ((unsigned)VERSIONS[i].version <= legacy && VERSIONS[i].version != TLS1_3_VERSION)
            *offered |= VERSIONS[i].bit;
    return 1;
}

/* Where a refused ClientHello leaves the versions it offered, for the error message. */
static int offered_index = -1;
static pthread_once_t offered_once = PTHREAD_ONCE_INIT;
static void make_offered_index(void)
{
    offered_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void version_names(unsigned set, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < NVERSIONS; i++)
        if (set & VERSIONS[i].bit && used < len)
            used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
                                     ss_version_name(VERSIONS[i].version));
    if (!used)
        snprintf(buf, len, "none");
}

static int client_hello_cb(SSL *s, int *alert, void *arg)
{
    ss_ctx *ctx = arg;
    unsigned offered;
    if (!offered_versions(s, &offered)) {
        *alert = SSL_AD_DECODE_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    int v = highest_version(offered & ctx->versions);
    if (v == 0) {
        pthread_once(&offered_once, make_offered_index);
        if (offered_index >= 0) /* +0x100: "set", even when the client offered nothing known */
            SSL_set_ex_data(s, offered_index, (void *)(uintptr_t)(offered | 0x100));
        *alert = SSL_AD_PROTOCOL_VERSION;
        return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_set_min_proto_version(s, v);
    SSL_set_max_proto_version(s, v);
    apply_level(s, ctx, v);
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* Bits of security each OpenSSL security level demands (SSL_CTX_set_security_level(3)). */
static int level_bits(int level)
{
    static const int bits[] = {0, 80, 112, 128, 192, 256};
    return level <= 0 ? 0 : level > 5 ? 256 : bits[level];
}

int ss_check_negotiated(SSL *ssl, ss_ctx *ctx, ss_err *err)
{
    int v = SSL_version(ssl);
    if (!(version_bit(v) & ctx->versions))
        return ss_fail(err, SS_E_TLS,
                       "the peer negotiated %s, which the SSL options of this socket exclude",
                       ss_version_name(v));
    /* A client allowing TLS 1.0/1.1 runs its handshake at the legacy level (0), as it
     * cannot know the version in advance; a connection that ends on TLS 1.2+ must still
     * meet the normal level, as it would without the legacy versions. */
    if (ctx->is_server || v < TLS1_2_VERSION || ctx->security_level <= ctx->legacy_security_level)
        return SS_OK;
    int need = level_bits(ctx->security_level);
    X509 *peer = SSL_get0_peer_certificate(ssl);
    EVP_PKEY *pk = peer ? X509_get0_pubkey(peer) : NULL;
    int bits = pk ? EVP_PKEY_get_security_bits(pk) : need;
    if (bits < need)
        return ss_fail(err, SS_E_TLS,
                       "the server's certificate key gives %d bits of security, below the %d "
                       "that security level %d requires on %s",
                       bits, need, ctx->security_level, ss_version_name(v));
    EVP_PKEY *tmp = NULL;
    if (SSL_get_peer_tmp_key(ssl, &tmp) == 1) {
        bits = EVP_PKEY_get_security_bits(tmp);
        EVP_PKEY_free(tmp);
        if (bits < need)
            return ss_fail(err, SS_E_TLS,
                           "the server's key exchange gives %d bits of security, below the %d "
                           "that security level %d requires on %s",
                           bits, need, ctx->security_level, ss_version_name(v));
    }
    bits = SSL_get_cipher_bits(ssl, NULL);
    if (bits < need)
        return ss_fail(err, SS_E_TLS,
                       "the cipher %s gives %d bits, below the %d that security level %d "
                       "requires on %s",
                       SSL_get_cipher_name(ssl), bits, need, ctx->security_level,
                       ss_version_name(v));
    return SS_OK;
}

static int load_chain(SSL_CTX *c, const char *pem, size_t len, ss_err *err)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return ss_fail(err, SS_E_NOMEM, "out of memory reading the certificate");
    int rc = SS_OK;
    X509 *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (!leaf) {
        rc = ss_fail_ssl(err, SS_E_CONFIG, "the certificate is not readable PEM");
    } else if (SSL_CTX_use_certificate(c, leaf) != 1) {
        rc = ss_fail_ssl(err, SS_E_CONFIG,
                         "OpenSSL refused the certificate (too weak a key for the security "
                         "level, or an unsupported type)");
    } else {
        X509 *extra;
        while ((extra = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
            if (SSL_CTX_add0_chain_cert(c, extra) != 1) {
                X509_free(extra);
                rc = ss_fail_ssl(err, SS_E_CONFIG, "OpenSSL refused a chain certificate");
                break;
            }
        }
        ERR_clear_error(); /* the end of the PEM stream leaves a "no start line" entry */
    }
    X509_free(leaf);
    BIO_free(bio);
    return rc;
}

static int load_key(SSL_CTX *c, const char *pem, size_t len, ss_err *err)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return ss_fail(err, SS_E_NOMEM, "out of memory reading the private key");
    int rc = SS_OK;
    /* No password callback: the Python layer hands over an unencrypted key. Never put the
     * key's bytes into an error message. */
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (!key)
        rc = ss_fail_ssl(err, SS_E_CONFIG, "the private key is not readable PEM");
    else if (SSL_CTX_use_PrivateKey(c, key) != 1)
        rc = ss_fail_ssl(err, SS_E_CONFIG, "OpenSSL refused the private key");
    else if (SSL_CTX_check_private_key(c) != 1)
        rc = ss_fail_ssl(err, SS_E_CONFIG, "the private key does not match the certificate");
    EVP_PKEY_free(key);
    BIO_free(bio);
    return rc;
}

static int load_trust(SSL_CTX *c, const char *pem, size_t len, ss_err *err)
{
    X509_STORE *store = SSL_CTX_get_cert_store(c);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return ss_fail(err, SS_E_NOMEM, "out of memory reading trust anchors");
    X509 *x;
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(store, x); /* a duplicate is not an error for us */
        if (names) {
            X509_NAME *n = X509_NAME_dup(X509_get_subject_name(x));
            if (n && !sk_X509_NAME_push(names, n))
                X509_NAME_free(n);
        }
        X509_free(x);
    }
    ERR_clear_error();
    BIO_free(bio);
    if (names)
        SSL_CTX_set_client_CA_list(c, names); /* takes ownership */
    /* A certificate placed in the store is trusted as it is, like one in the Windows
     * store, even when it is not self-signed (a server's own leaf, an intermediate). */
    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    return SS_OK;
}

int ss_ctx_new(const ss_ctx_config *cfg, ss_ctx **out, ss_err *err)
{
    *out = NULL;
    ERR_clear_error();
    unsigned usable = cfg->versions & ss_versions_supported();
    if (usable == 0)
        return ss_fail(err, SS_E_CONFIG, "none of the requested protocol versions is "
                                         "available in this OpenSSL build");
    ss_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return ss_fail(err, SS_E_NOMEM, "out of memory creating a TLS context");
    atomic_init(&ctx->refs, 1);
    ctx->is_server = cfg->is_server;
    ctx->versions = usable;
    ctx->security_level = cfg->security_level;
    ctx->legacy_security_level = cfg->legacy_security_level;

    SSL_CTX *c = SSL_CTX_new(cfg->is_server ? TLS_server_method() : TLS_client_method());
    if (!c) {
        free(ctx);
        return ss_fail_ssl(err, SS_E_NOMEM, "cannot create an OpenSSL context");
    }
    ctx->ssl_ctx = c;
    SSL_CTX_set_app_data(c, ctx);
    int rc = SS_OK;
    int lo = lowest_version(usable), hi = highest_version(usable);
    int has_legacy = lo < TLS1_2_VERSION;
    /* The context's level is the lowest any allowed version needs; servers raise it again
     * per connection once the version is known (client_hello_cb). */
    int level = has_legacy ? cfg->legacy_security_level : cfg->security_level;
    if (level >= 0)
        SSL_CTX_set_security_level(c, level);
    if (SSL_CTX_set_min_proto_version(c, lo) != 1 || SSL_CTX_set_max_proto_version(c, hi) != 1)
        rc = ss_fail_ssl(err, SS_E_CONFIG, "cannot set the protocol range %s..%s",
                         ss_version_name(lo), ss_version_name(hi));
    /* Compression (CRIME) and renegotiation (insecure or client-initiated floods) are off
     * under every mask. */
    SSL_CTX_set_options(c, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Release the 2 x 16 KiB record buffers while a connection is idle; allow partial
     * writes so one SSL_write never waits on a whole large buffer. */
    SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Send exactly the chain of the certificate file.  Without this, OpenSSL rebuilds the
     * chain from the trust store at every handshake (with the system store, a hashed
     * directory lookup in /etc/ssl/certs per connection). */
    SSL_CTX_set_mode(c, SSL_MODE_NO_AUTO_CHAIN);
    /* DHE suites need parameters; "auto" matches their size to the certificate's key. */
    if (cfg->is_server)
        SSL_CTX_set_dh_auto(c, 1);
    /* Read ahead: one read() per record (and often several records) instead of one for
     * the header and one for the body. */
    SSL_CTX_set_read_ahead(c, 1);
    /* Bound the server's session cache (OpenSSL's default holds 20,480 sessions). */
    SSL_CTX_sess_set_cache_size(c, 1024);
    if (rc == SS_OK && cfg->cipher_list && cfg->cipher_list[0] &&
        SSL_CTX_set_cipher_list(c, cfg->cipher_list) != 1)
        rc = ss_fail_ssl(err, SS_E_CONFIG, "cipher list \"%s\" selects no cipher",
                         cfg->cipher_list);
    if (rc == SS_OK && cfg->ciphersuites && cfg->ciphersuites[0] &&
        SSL_CTX_set_ciphersuites(c, cfg->ciphersuites) != 1)
        rc = ss_fail_ssl(err, SS_E_CONFIG, "TLS 1.3 cipher suites \"%s\" are not valid",
                         cfg->ciphersuites);
    if (rc == SS_OK && cfg->cert_pem && cfg->cert_pem_len)
        rc = load_chain(c, cfg->cert_pem, cfg->cert_pem_len, err);
    if (rc == SS_OK && cfg->key_pem && cfg->key_pem_len)
        rc = load_key(c, cfg->key_pem, cfg->key_pem_len, err);
    if (rc == SS_OK && cfg->is_server && !(cfg->cert_pem && cfg->key_pem))
        rc = ss_fail(err, SS_E_CONFIG, "a TLS server needs a certificate and its private key");
    if (rc == SS_OK && cfg->use_system_ca && SSL_CTX_set_default_verify_paths(c) != 1)
        ERR_clear_error(); /* no system store is not fatal: the store's anchors remain */
    if (rc == SS_OK && cfg->ca_pem && cfg->ca_pem_len)
        rc = load_trust(c, cfg->ca_pem, cfg->ca_pem_len, err);
    if (rc == SS_OK) {
        if (cfg->verify_peer)
            SSL_CTX_set_verify(c, SSL_VERIFY_PEER | (cfg->is_server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                               NULL);
        else
            SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
        if (cfg->is_server)
            SSL_CTX_set_client_hello_cb(c, client_hello_cb, ctx);
    }
    if (rc != SS_OK) {
        ss_ctx_free(ctx);
        return rc;
    }
    *out = ctx;
    return SS_OK;
}

void ss_ctx_ref(ss_ctx *ctx) { atomic_fetch_add(&ctx->refs, 1); }

void ss_ctx_free(ss_ctx *ctx)
{
    if (!ctx || atomic_fetch_sub(&ctx->refs, 1) != 1)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

/* Map a failed SSL_do_handshake to an error record. */
int ss_handshake_error(SSL *ssl, int ret, ss_err *err, const char *what)
{
    int e = SSL_get_error(ssl, ret);
    long vr = SSL_get_verify_result(ssl);
    if (vr != X509_V_OK) {
        ERR_clear_error();
        ss_fail(err, SS_E_VERIFY, "%s: the peer's certificate did not verify", what);
        err->sys_code = (int)vr;
        snprintf(err->detail, sizeof err->detail, "%s", X509_verify_cert_error_string(vr));
        return SS_E_VERIFY;
    }
    if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
        int errnum = errno;
        ERR_clear_error();
        if (errnum && e == SSL_ERROR_SYSCALL)
            return ss_fail_errno(err, SS_E_RESET, errnum, "%s: connection lost", what);
        return ss_fail(err, SS_E_RESET, "%s: the peer closed the connection during the handshake",
                       what);
    }
    pthread_once(&offered_once, make_offered_index);
    uintptr_t offered = offered_index >= 0 ? (uintptr_t)SSL_get_ex_data(ssl, offered_index) : 0;
    ss_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (offered && ctx) {
        char theirs[96], ours[96];
        version_names((unsigned)offered & 0xff, theirs, sizeof theirs);
        version_names(ctx->versions, ours, sizeof ours);
        ERR_clear_error();
        ss_fail(err, SS_E_TLS, "%s: the client offered %s; this socket's SSL options allow %s",
                what, theirs, ours);
        snprintf(err->detail, sizeof err->detail, "protocol_version alert sent");
        return SS_E_TLS;
    }
    unsigned long first = ERR_peek_error();
    if (ERR_GET_REASON(first) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        ERR_clear_error();
        return ss_fail(err, SS_E_RESET, "%s: the peer closed the connection during the handshake",
                       what);
    }
    return ss_fail_ssl(err, SS_E_TLS, "%s failed", what);
}
