/*
 * TLS contexts: one ss_ctx per TLS configuration (role, options recipe, identity, trust),
 * built once by the Python layer's context cache and shared by every socket that uses it.
 *
 * Versions.  OpenSSL takes a version *range* (min..max) plus "no TLS x" flags.
 *  - Server: the context allows the mask's range and turns off the versions of the holes
 *    (SSL_OP_NO_*).  OpenSSL then negotiates exactly inside the mask and knows the mask's
 *    highest version as its own, so the RFC 8446 downgrade sentinel and the RFC 7507
 *    TLS_FALLBACK_SCSV check work as for any OpenSSL server.  The client-hello callback
 *    only computes which version will be negotiated (the highest common one) to set the
 *    security level and cipher list that version needs, for that connection only; no
 *    common version: a protocol_version alert.
 *  - Client: the context offers the whole range (a hole cannot be expressed to a server);
 *    after the handshake, a version outside the set is refused before any data flows
 *    (ss_check_negotiated).
 *
 * Security levels.  TLS 1.0/1.1 (and SSL 3) only complete at level 0, TLS 1.2+ keep the
 * normal level.  A context whose mask has a legacy version starts at level 0; once the
 * version is known each connection is set to the level of that version: the server in the
 * client-hello callback, both sides again in the certificate verification callback, which
 * also sets the X.509 "auth level" so that every check OpenSSL makes on the peer's chain
 * (key sizes, signature algorithms of every certificate) follows the negotiated version.
 *
 * Sessions.  Servers set a session id context (a digest of the configuration), so that
 * sessions and tickets resume, with or without client certificates.  Clients keep the
 * latest session per host, port and server name in the context (ss_client_session_attach)
 * and offer it on the next connection made with the same context.
 *
 * System authorities.  The default CA bundle is parsed once per process (system_roots);
 * contexts that trust it add those certificates, which only takes references.
 */
#include "ss_internal.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#include <openssl/core_names.h>
#include <openssl/rand.h>
#endif
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

/* What this libssl can do never changes in a process: asked once (a throw-away context
 * costs about as much as a handshake's key exchange). */
static pthread_once_t build_once = PTHREAD_ONCE_INIT;
static unsigned build_versions;
static long build_level = -1;
static unsigned probe_versions(void);

static void probe_build(void)
{
    build_versions = probe_versions();
    SSL_CTX *c = SSL_CTX_new(TLS_method());
    if (c) {
        build_level = SSL_CTX_get_security_level(c);
        SSL_CTX_free(c);
    }
    ERR_clear_error();
}

long ss_openssl_security_level_default(void)
{
    pthread_once(&build_once, probe_build);
    return build_level;
}

unsigned ss_versions_supported(void)
{
    pthread_once(&build_once, probe_build);
    return build_versions;
}

static unsigned probe_versions(void)
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

static int level_for(const ss_ctx *ctx, int version)
{
    return version < TLS1_2_VERSION ? ctx->legacy_security_level : ctx->security_level;
}

static void apply_level(SSL *s, ss_ctx *ctx, int version)
{
    int level = level_for(ctx, version);
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
    int ext_alert = ss_tlsext_client_hello(s, ctx); /* SNI switch first: it resets levels */
    if (ext_alert) {
        *alert = ext_alert;
        return SSL_CLIENT_HELLO_ERROR;
    }
    unsigned offered;
    if (!offered_versions(s, &offered)) {
        *alert = SSL_AD_DECODE_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    /* The version OpenSSL is about to choose: the context allows exactly ctx->versions. */
    int v = highest_version(offered & ctx->versions);
    if (v == 0) {
        pthread_once(&offered_once, make_offered_index);
        if (offered_index >= 0) /* +0x100: "set", even when the client offered nothing known */
            SSL_set_ex_data(s, offered_index, (void *)(uintptr_t)(offered | 0x100));
        *alert = SSL_AD_PROTOCOL_VERSION;
        return SSL_CLIENT_HELLO_ERROR;
    }
    apply_level(s, ctx, v);
    /* Legacy connections also accept what legacy peers offer (RSA key exchange, AES-CBC). */
    if (v < TLS1_2_VERSION && ctx->legacy_cipher_list &&
        SSL_set_cipher_list(s, ctx->legacy_cipher_list) != 1) {
        ERR_clear_error();
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* Bits of security each OpenSSL security level demands (SSL_CTX_set_security_level(3)). */
static int level_bits(int level)
{
    static const int bits[] = {0, 80, 112, 128, 192, 256};
    return level <= 0 ? 0 : level > 5 ? 256 : bits[level];
}

/* Certificate verification, both sides: the version is known by now, so the connection
 * takes that version's security level, and the chain is verified at the same "auth level"
 * (every certificate's key size and signature, not only the leaf's). */
static int cert_verify_cb(X509_STORE_CTX *x, void *arg)
{
    ss_ctx *ctx = arg;
    SSL *s = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    if (s) {
        int level = level_for(ctx, SSL_version(s));
        if (level >= 0) {
            SSL_set_security_level(s, level);
            X509_VERIFY_PARAM_set_auth_level(X509_STORE_CTX_get0_param(x), level);
        }
    }
    return X509_verify_cert(x);
}

int ss_check_negotiated(SSL *ssl, ss_ctx *ctx, ss_err *err)
{
    int v = SSL_version(ssl);
    if (!(version_bit(v) & ctx->versions))
        return ss_fail(err, SS_E_TLS,
                       "the peer negotiated %s, which the SSL options of this socket exclude",
                       ss_version_name(v));
    return SS_OK;
}

/* The weakest link of a certificate chain, in bits of security: each certificate's key,
 * and the signature of each one that is not self-signed. */
static int chain_security_bits(SSL_CTX *c)
{
    X509 *leaf = SSL_CTX_get0_certificate(c);
    if (!leaf)
        return -1;
    STACK_OF(X509) *chain = NULL;
    SSL_CTX_get0_chain_certs(c, &chain);
    int weakest = 1 << 20;
    int n = chain ? sk_X509_num(chain) : 0;
    for (int i = -1; i < n; i++) {
        X509 *x = i < 0 ? leaf : sk_X509_value(chain, i);
        EVP_PKEY *pk = X509_get0_pubkey(x);
        int bits = pk ? EVP_PKEY_get_security_bits(pk) : 0;
        if (bits < weakest)
            weakest = bits;
        int sig_bits;
        if (!(X509_get_extension_flags(x) & EXFLAG_SS) &&
            X509_get_signature_info(x, NULL, NULL, &sig_bits, NULL) == 1 && sig_bits < weakest)
            weakest = sig_bits;
    }
    ERR_clear_error();
    return weakest;
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
    return SS_OK;
}

/* ---- the system's authorities, parsed once -------------------------------------------- */

static pthread_once_t roots_once = PTHREAD_ONCE_INIT;
static STACK_OF(X509) *roots; /* the default CA file ($SSL_CERT_FILE or OpenSSL's) */

static void load_roots(void)
{
    const char *file = getenv(X509_get_default_cert_file_env());
    if (!file || !file[0])
        file = X509_get_default_cert_file();
    roots = sk_X509_new_null();
    BIO *bio = roots ? BIO_new_file(file, "r") : NULL;
    X509 *x;
    while (bio && (x = PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(roots, x))
            X509_free(x);
    BIO_free(bio);
    ERR_clear_error();
}

/* What SSL_CTX_set_default_verify_paths does, without parsing the bundle again: the CA
 * file's certificates (shared references) and the hashed directory ($SSL_CERT_DIR or
 * OpenSSL's), which OpenSSL only reads when a lookup needs it. */
static void add_system_trust(SSL_CTX *c)
{
    pthread_once(&roots_once, load_roots);
    X509_STORE *store = SSL_CTX_get_cert_store(c);
    for (int i = 0; roots && i < sk_X509_num(roots); i++)
        X509_STORE_add_cert(store, sk_X509_value(roots, i));
    const char *dir = getenv(X509_get_default_cert_dir_env());
    if (!dir || !dir[0])
        dir = X509_get_default_cert_dir();
    X509_LOOKUP *lookup = X509_STORE_add_lookup(store, X509_LOOKUP_hash_dir());
    if (lookup)
        X509_LOOKUP_add_dir(lookup, dir, X509_FILETYPE_PEM);
    ERR_clear_error();
}

/* ---- client sessions ------------------------------------------------------------------ */

/* Sessions kept per client context: one per host, port and server name, the least
 * recently stored one replaced when full. */
#define SS_SESSIONS 64

struct ss_session_slot {
    char *key;
    SSL_SESSION *session;
    unsigned long long stamp;
};

/* Where a client connection keeps the key of its session slot (freed with the SSL). */
static int session_key_index = -1;
static pthread_once_t session_key_once = PTHREAD_ONCE_INIT;

static void free_session_key(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                             void *argp)
{
    free(ptr);
}

static void make_session_key_index(void)
{
    session_key_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_session_key);
}

/* OpenSSL hands over each new session (TLS 1.2: at the handshake; TLS 1.3: with each
 * NewSessionTicket, read after it).  Returning 1 keeps the reference. */
static int new_session_cb(SSL *ssl, SSL_SESSION *session)
{
    ss_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    const char *key = session_key_index >= 0 ? SSL_get_ex_data(ssl, session_key_index) : NULL;
    if (!ctx || !ctx->sessions || !key || !SSL_SESSION_is_resumable(session))
        return 0;
    pthread_mutex_lock(&ctx->sessions_lock);
    struct ss_session_slot *slot = NULL, *oldest = &ctx->sessions[0];
    for (int i = 0; i < SS_SESSIONS && !slot; i++) {
        struct ss_session_slot *e = &ctx->sessions[i];
        if (e->key && strcmp(e->key, key) == 0)
            slot = e;
        else if (e->stamp < oldest->stamp)
            oldest = e;
    }
    if (!slot) {
        char *copy = strdup(key);
        if (!copy) {
            pthread_mutex_unlock(&ctx->sessions_lock);
            return 0;
        }
        slot = oldest;
        free(slot->key);
        slot->key = copy;
    }
    SSL_SESSION_free(slot->session);
    slot->session = session;
    slot->stamp = ++ctx->sessions_clock;
    pthread_mutex_unlock(&ctx->sessions_lock);
    return 1;
}

void ss_client_session_attach(ss_ctx *ctx, SSL *ssl, const char *host, int port,
                              const char *server_name)
{
    if (!ctx->sessions)
        return;
    pthread_once(&session_key_once, make_session_key_index);
    if (session_key_index < 0)
        return;
    size_t len = strlen(host) + (server_name ? strlen(server_name) : 0) + 16;
    char *key = malloc(len);
    if (!key)
        return;
    snprintf(key, len, "%s|%d|%s", host, port, server_name ? server_name : "");
    if (!SSL_set_ex_data(ssl, session_key_index, key)) {
        free(key);
        return;
    }
    pthread_mutex_lock(&ctx->sessions_lock);
    for (int i = 0; i < SS_SESSIONS; i++) {
        struct ss_session_slot *e = &ctx->sessions[i];
        if (e->key && e->session && strcmp(e->key, key) == 0) {
            SSL_set_session(ssl, e->session); /* takes its own reference */
            break;
        }
    }
    pthread_mutex_unlock(&ctx->sessions_lock);
    ERR_clear_error();
}

int ss_conn_tls_resumed(ss_conn *c)
{
    if (!c->ssl)
        return 0;
    pthread_mutex_lock(&c->ssl_lock);
    int reused = SSL_session_reused(c->ssl);
    pthread_mutex_unlock(&c->ssl_lock);
    return reused;
}

/* ---- shared session-ticket keys ----------------------------------------------------------
 *
 * OpenSSL encrypts tickets with keys of its own, random per context: a ticket made by one
 * process means nothing to another.  With shared keys (a file the processes and hosts of a
 * service all read), any of them decrypts the tickets of the others.  The first key
 * encrypts; a ticket under an older one is accepted and replaced by one under the current
 * key (return 2).  An unknown key name is no error: the handshake is a full one. */

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
static int ticket_key_cb(SSL *ssl, unsigned char key_name[16], unsigned char *iv,
                         EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    ss_ctx *ctx = ss_tlsext_origin(ssl); /* the listener's context, even after SNI */
    if (!ctx)
        return -1;
    int rc = 0;
    pthread_mutex_lock(&ctx->tickets_lock);
    const unsigned char *key = NULL;
    if (enc) {
        if (ctx->ntickets > 0 && RAND_bytes(iv, 16) == 1) {
            key = ctx->tickets;
            memcpy(key_name, key, 16);
            rc = 1;
        } else {
            rc = -1;
        }
    } else {
        for (int i = 0; i < ctx->ntickets; i++) {
            if (memcmp(ctx->tickets + (size_t)i * SS_TICKET_KEY_LEN, key_name, 16) == 0) {
                key = ctx->tickets + (size_t)i * SS_TICKET_KEY_LEN;
                rc = i == 0 ? 1 : 2;
                break;
            }
        }
    }
    if (key) {
        OSSL_PARAM params[3];
        params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)(key + 48), 32);
        params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
        params[2] = OSSL_PARAM_construct_end();
        int ok = enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key + 16, iv)
                     : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key + 16, iv);
        if (ok != 1 || EVP_MAC_CTX_set_params(hctx, params) != 1)
            rc = -1;
    }
    pthread_mutex_unlock(&ctx->tickets_lock);
    return rc;
}
#endif

int ss_ctx_set_ticket_keys(ss_ctx *ctx, const unsigned char *keys, int count, ss_err *err)
{
    if (!ctx->is_server)
        return ss_fail(err, SS_E_INVALID, "session-ticket keys are for a server's context");
    if (count < 1 || count > SS_TICKET_KEYS_MAX || !keys)
        return ss_fail(err, SS_E_INVALID, "give 1 to %d session-ticket keys, not %d",
                       SS_TICKET_KEYS_MAX, count);
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    size_t len = (size_t)count * SS_TICKET_KEY_LEN;
    unsigned char *copy = malloc(len);
    if (!copy)
        return ss_fail(err, SS_E_NOMEM, "out of memory for the session-ticket keys");
    memcpy(copy, keys, len);
    pthread_mutex_lock(&ctx->tickets_lock);
    unsigned char *old = ctx->tickets;
    size_t old_len = (size_t)ctx->ntickets * SS_TICKET_KEY_LEN;
    int first = old == NULL;
    ctx->tickets = copy;
    ctx->ntickets = count;
    pthread_mutex_unlock(&ctx->tickets_lock);
    if (old) {
        OPENSSL_cleanse(old, old_len);
        free(old);
    }
    if (first && SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx->ssl_ctx, ticket_key_cb) != 1)
        return ss_fail_ssl(err, SS_E_CONFIG, "cannot install the session-ticket key callback");
    return SS_OK;
#else
    return ss_fail(err, SS_E_CONFIG, "shared session-ticket keys need OpenSSL 3.0 or later");
#endif
}

/* ---- building a context ----------------------------------------------------------------- */

/* What else shapes the verification of a client: the system's authorities trusted or not,
 * partial chains allowed or not (and the security levels, which refuse weak client keys).
 * A session verified under looser trust must not resume under stricter trust. */
static int session_trust_update(EVP_MD_CTX *h, const ss_ctx_config *cfg)
{
    int trust[4] = {cfg->use_system_ca, cfg->partial_chain, cfg->security_level,
                    cfg->legacy_security_level};
    return EVP_DigestUpdate(h, "trust", 5) == 1 && EVP_DigestUpdate(h, trust, sizeof trust) == 1;
}

/* Server: the session id context binds sessions and tickets to this configuration (a
 * session made under another certificate, trust or version set does not resume here).
 * Without one OpenSSL refuses to resume sessions of verified clients. */
static int set_session_id_context(SSL_CTX *c, const ss_ctx_config *cfg)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_MD_CTX *h = EVP_MD_CTX_new();
    int ok = h && EVP_DigestInit_ex(h, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(h, "sslsock", 7) == 1 &&
             EVP_DigestUpdate(h, &cfg->versions, sizeof cfg->versions) == 1 &&
             EVP_DigestUpdate(h, &cfg->verify_peer, sizeof cfg->verify_peer) == 1 &&
             EVP_DigestUpdate(h, cfg->cert_pem ? cfg->cert_pem : "", cfg->cert_pem_len) == 1 &&
             EVP_DigestUpdate(h, cfg->ca_pem ? cfg->ca_pem : "", cfg->ca_pem_len) == 1 &&
             EVP_DigestUpdate(h, cfg->crl_pem ? cfg->crl_pem : "", cfg->crl_pem_len) == 1 &&
             session_trust_update(h, cfg) &&
             EVP_DigestFinal_ex(h, md, &md_len) == 1;
    EVP_MD_CTX_free(h);
    if (md_len > SSL_MAX_SID_CTX_LENGTH)
        md_len = SSL_MAX_SID_CTX_LENGTH;
    return ok && SSL_CTX_set_session_id_context(c, md, md_len) == 1;
}

/* Server: the versions the certificate can really serve.  TLS 1.2+ run at the normal
 * security level, which a weak chain (a 1024-bit RSA key, a SHA-1 signature) does not
 * meet; offering them anyway would end every such handshake in internal_error. */
static unsigned servable_versions(SSL_CTX *c, const ss_ctx_config *cfg, unsigned versions,
                                  int *bits_out)
{
    int bits = chain_security_bits(c);
    *bits_out = bits;
    if (bits >= 0 && bits < level_bits(cfg->security_level))
        versions &= ~(unsigned)(SS_V_TLS1_2 | SS_V_TLS1_3);
    return versions;
}

/* The options that turn off the versions of the holes inside lo..hi. */
static long hole_options(unsigned versions, int lo, int hi)
{
    static const struct {
        int version;
        long option;
    } NO[] = {{SSL3_VERSION, SSL_OP_NO_SSLv3},
              {TLS1_VERSION, SSL_OP_NO_TLSv1},
              {TLS1_1_VERSION, SSL_OP_NO_TLSv1_1},
              {TLS1_2_VERSION, SSL_OP_NO_TLSv1_2},
              {TLS1_3_VERSION, SSL_OP_NO_TLSv1_3}};
    long options = 0;
    for (size_t i = 0; i < sizeof NO / sizeof NO[0]; i++)
        if (NO[i].version > lo && NO[i].version < hi && !(versions & version_bit(NO[i].version)))
            options |= NO[i].option;
    return options;
}

static int load_identity(SSL_CTX *c, const ss_ctx_config *cfg, ss_err *err)
{
    int rc = SS_OK;
    if (cfg->cert_pem && cfg->cert_pem_len)
        rc = load_chain(c, cfg->cert_pem, cfg->cert_pem_len, err);
    if (rc == SS_OK && cfg->key_pem && cfg->key_pem_len)
        rc = load_key(c, cfg->key_pem, cfg->key_pem_len, err);
    if (rc == SS_OK && cfg->is_server && !(cfg->cert_pem && cfg->key_pem))
        rc = ss_fail(err, SS_E_CONFIG, "a TLS server needs a certificate and its private key");
    return rc;
}

/* Versions, level and options, once the identity is known (a server's versions depend on
 * its certificate). */
static int set_versions(ss_ctx *ctx, const ss_ctx_config *cfg, ss_err *err)
{
    SSL_CTX *c = ctx->ssl_ctx;
    if (cfg->is_server) {
        ctx->versions = servable_versions(c, cfg, ctx->versions, &ctx->cert_bits);
        if (!ctx->versions)
            return ss_fail(err, SS_E_CONFIG,
                           "the certificate gives %d bits of security, below the %d that "
                           "security level %d requires on TLS 1.2 and 1.3, and the SSL options "
                           "allow no older version: use a stronger certificate (RSA 2048+, EC)",
                           ctx->cert_bits, level_bits(cfg->security_level), cfg->security_level);
    }
    int lo = lowest_version(ctx->versions), hi = highest_version(ctx->versions);
    /* The context's level is the lowest any allowed version needs; each connection takes
     * its version's level once the version is known. */
    int level = lo < TLS1_2_VERSION ? ctx->legacy_security_level : ctx->security_level;
    if (level >= 0)
        SSL_CTX_set_security_level(c, level);
    if (SSL_CTX_set_min_proto_version(c, lo) != 1 || SSL_CTX_set_max_proto_version(c, hi) != 1)
        return ss_fail_ssl(err, SS_E_CONFIG, "cannot set the protocol range %s..%s",
                           ss_version_name(lo), ss_version_name(hi));
    if (cfg->is_server)
        SSL_CTX_set_options(c, hole_options(ctx->versions, lo, hi));
    return SS_OK;
}

static int set_ciphers(SSL_CTX *c, const ss_ctx_config *cfg, ss_err *err)
{
    if (cfg->cipher_list && cfg->cipher_list[0] && SSL_CTX_set_cipher_list(c, cfg->cipher_list) != 1)
        return ss_fail_ssl(err, SS_E_CONFIG, "cipher list \"%s\" selects no cipher",
                           cfg->cipher_list);
    if (cfg->ciphersuites && cfg->ciphersuites[0] &&
        SSL_CTX_set_ciphersuites(c, cfg->ciphersuites) != 1)
        return ss_fail_ssl(err, SS_E_CONFIG, "TLS 1.3 cipher suites \"%s\" are not valid",
                           cfg->ciphersuites);
    return SS_OK;
}

static void set_sessions(ss_ctx *ctx, const ss_ctx_config *cfg)
{
    SSL_CTX *c = ctx->ssl_ctx;
    if (cfg->is_server) {
        /* Bound the server's session cache (OpenSSL's default holds 20,480 sessions). */
        SSL_CTX_sess_set_cache_size(c, 1024);
        if (!set_session_id_context(c, cfg))
            ERR_clear_error(); /* then only resumption is lost */
        return;
    }
    SSL_CTX_set_session_cache_mode(c, cfg->no_resumption ? SSL_SESS_CACHE_OFF
                                                         : SSL_SESS_CACHE_CLIENT |
                                                               SSL_SESS_CACHE_NO_INTERNAL_STORE);
    if (cfg->no_resumption)
        return;
    ctx->sessions = calloc(SS_SESSIONS, sizeof *ctx->sessions);
    if (ctx->sessions)
        SSL_CTX_sess_set_new_cb(c, new_session_cb);
}

static int ctx_setup(ss_ctx *ctx, const ss_ctx_config *cfg, ss_err *err)
{
    SSL_CTX *c = ctx->ssl_ctx;
    /* Load the identity at the lowest level the mask allows (a weak certificate may still
     * serve the legacy versions); set_versions decides what it can serve. */
    int lowest = lowest_version(ctx->versions) < TLS1_2_VERSION ? ctx->legacy_security_level
                                                                : ctx->security_level;
    if (lowest >= 0)
        SSL_CTX_set_security_level(c, lowest);
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
    /* ... into a buffer of four records: a bulk stream costs one read() per 64 KiB.  (The
     * buffer is released while the connection is idle, as above.) */
    SSL_CTX_set_default_read_buffer_len(c, 4 * 16384 + 4 * 256);
    int rc = set_ciphers(c, cfg, err);
    if (rc == SS_OK)
        rc = ss_ctx_apply_groups(c, err);
    if (rc == SS_OK)
        rc = load_identity(c, cfg, err);
    if (rc == SS_OK)
        rc = set_versions(ctx, cfg, err);
    if (rc != SS_OK)
        return rc;
    if (cfg->legacy_cipher_list && cfg->legacy_cipher_list[0] && cfg->is_server) {
        ctx->legacy_cipher_list = strdup(cfg->legacy_cipher_list);
        if (!ctx->legacy_cipher_list)
            return ss_fail(err, SS_E_NOMEM, "out of memory creating a TLS context");
    }
    if (cfg->use_system_ca)
        add_system_trust(c);
    if (cfg->ca_pem && cfg->ca_pem_len && (rc = load_trust(c, cfg->ca_pem, cfg->ca_pem_len, err)))
        return rc;
    /* Only when asked: a certificate trusted as it is, even when it is not self-signed (a
     * client trusting a server's own leaf from the store, like the Windows store does).  A
     * server verifying clients wants chains that end at a CA meant for clients. */
    if (cfg->partial_chain)
        X509_STORE_set_flags(SSL_CTX_get_cert_store(c), X509_V_FLAG_PARTIAL_CHAIN);
    set_sessions(ctx, cfg);
    if (cfg->verify_peer)
        SSL_CTX_set_verify(
            c, SSL_VERIFY_PEER | (cfg->is_server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    else
        SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_cert_verify_callback(c, cert_verify_cb, ctx);
    if (cfg->is_server)
        SSL_CTX_set_client_hello_cb(c, client_hello_cb, ctx);
    return ss_tlsext_setup(ctx, cfg, err);
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
    pthread_mutex_init(&ctx->sessions_lock, NULL);
    pthread_mutex_init(&ctx->tickets_lock, NULL);
    ctx->is_server = cfg->is_server;
    ctx->versions = usable;
    ctx->security_level =
        cfg->security_level >= 0 ? cfg->security_level : (int)ss_openssl_security_level_default();
    ctx->legacy_security_level = cfg->legacy_security_level;
    ctx->cert_bits = -1;
    ctx->ssl_ctx = SSL_CTX_new(cfg->is_server ? TLS_server_method() : TLS_client_method());
    if (!ctx->ssl_ctx) {
        pthread_mutex_destroy(&ctx->sessions_lock);
        pthread_mutex_destroy(&ctx->tickets_lock);
        free(ctx);
        return ss_fail_ssl(err, SS_E_NOMEM, "cannot create an OpenSSL context");
    }
    SSL_CTX_set_app_data(ctx->ssl_ctx, ctx);
    int rc = ctx_setup(ctx, cfg, err);
    if (rc != SS_OK) {
        ss_ctx_free(ctx);
        return rc;
    }
    *out = ctx;
    return SS_OK;
}

unsigned ss_ctx_versions(const ss_ctx *ctx) { return ctx->versions; }

int ss_ctx_cert_security_bits(const ss_ctx *ctx) { return ctx->cert_bits; }

void ss_ctx_ref(ss_ctx *ctx) { atomic_fetch_add(&ctx->refs, 1); }

void ss_ctx_free(ss_ctx *ctx)
{
    if (!ctx || atomic_fetch_sub(&ctx->refs, 1) != 1)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    for (int i = 0; ctx->sessions && i < SS_SESSIONS; i++) {
        free(ctx->sessions[i].key);
        SSL_SESSION_free(ctx->sessions[i].session);
    }
    free(ctx->sessions);
    free(ctx->legacy_cipher_list);
    ss_tlsext_free(ctx);
    if (ctx->tickets) {
        OPENSSL_cleanse(ctx->tickets, (size_t)ctx->ntickets * SS_TICKET_KEY_LEN);
        free(ctx->tickets);
    }
    pthread_mutex_destroy(&ctx->sessions_lock);
    pthread_mutex_destroy(&ctx->tickets_lock);
    free(ctx);
}

/* Map a failed SSL_do_handshake to an error record. */
int ss_handshake_error(SSL *ssl, int ret, ss_err *err, const char *what)
{
    int e = SSL_get_error(ssl, ret);
    long vr = SSL_get_verify_result(ssl);
    const char *ext_why = ss_tlsext_failure(ssl); /* ALPN refused, OCSP response refused */
    if (ext_why) {
        ERR_clear_error();
        return ss_fail(err, SS_E_TLS, "%s: %s", what, ext_why);
    }
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
