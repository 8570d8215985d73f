/*
 * What a TLS server operator expects beside versions and trust: ALPN, a key log, several
 * certificates chosen by name (SNI), revocation lists, OCSP stapling.  Everything here runs
 * in C at handshake time; the Python layer only configures it once per context.
 *
 * SNI.  The listener's context (the default) holds a table of (name, context) sorted by
 * name; each context is a complete server context of its own (same options and trust,
 * another certificate).  The client-hello callback looks the requested name up (exact
 * name, then the "*.parent" wildcard: two binary searches) and switches the connection to
 * that context with SSL_set_SSL_CTX before anything depends on it.  Session tickets stay
 * the default context's (OpenSSL keeps the first context as the session context), so the
 * ticket-key callback finds that context through ss_tlsext_origin.
 */
#include "ss_internal.h"

#include <openssl/err.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct ss_sni_entry {
    char *name; /* lower case, no trailing dot; "*.example.com" for a wildcard */
    ss_ctx *ctx;
};

/* ---- per-connection data: the default context after an SNI switch, a failure reason ---- */

static int origin_index = -1, why_index = -1;
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void free_why(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                     void *argp)
{
    free(ptr);
}

static void make_indexes(void)
{
    origin_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    why_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, free_why);
}

ss_ctx *ss_tlsext_origin(SSL *ssl)
{
    pthread_once(&index_once, make_indexes);
    ss_ctx *origin = origin_index >= 0 ? SSL_get_ex_data(ssl, origin_index) : NULL;
    return origin ? origin : SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
}

const char *ss_tlsext_failure(SSL *ssl)
{
    pthread_once(&index_once, make_indexes);
    return why_index >= 0 ? SSL_get_ex_data(ssl, why_index) : NULL;
}

static void set_failure(SSL *ssl, const char *why)
{
    pthread_once(&index_once, make_indexes);
    if (why_index < 0)
        return;
    char *copy = strdup(why);
    free(SSL_get_ex_data(ssl, why_index));
    SSL_set_ex_data(ssl, why_index, copy);
}

/* ---- ALPN ------------------------------------------------------------------------------- */

static int alpn_wire_ok(const unsigned char *p, size_t len)
{
    if (len == 0 || len > 65535)
        return 0;
    for (size_t i = 0; i < len; i += 1 + (size_t)p[i])
        if (p[i] == 0 || i + 1 + (size_t)p[i] > len)
            return 0;
    return 1;
}

/* Server: the first of our protocols (our order) that the client offers. */
static int alpn_select_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    ss_ctx *ctx = arg;
    unsigned char *sel = NULL;
    unsigned char sel_len = 0;
    if (SSL_select_next_proto(&sel, &sel_len, ctx->alpn, (unsigned)ctx->alpn_len, in, inlen) ==
        OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        *outlen = sel_len;
        return SSL_TLSEXT_ERR_OK;
    }
    if (ctx->alpn_required) {
        set_failure(s, "the client offers none of the application protocols (ALPN) this "
                       "server requires");
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* OpenSSL sends no_application_protocol */
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* ---- key log ---------------------------------------------------------------------------- */

static pthread_mutex_t keylog_lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *keylog_file;
static char *keylog_open; /* the path keylog_file was opened from */

static void keylog_cb(const SSL *s, const char *line)
{
    ss_ctx *ctx = SSL_CTX_get_app_data(SSL_get_SSL_CTX(s));
    if (!ctx || !ctx->keylog_path)
        return;
    pthread_mutex_lock(&keylog_lock);
    if (!keylog_file || strcmp(keylog_open, ctx->keylog_path) != 0) {
        if (keylog_file)
            fclose(keylog_file);
        keylog_file = NULL;
        free(keylog_open);
        keylog_open = NULL;
        /* A secret: only the owner may read it, whatever the umask. */
        int fd = open(ctx->keylog_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
            keylog_file = fdopen(fd, "a");
            if (!keylog_file)
                close(fd);
            else if (!(keylog_open = strdup(ctx->keylog_path))) {
                fclose(keylog_file);
                keylog_file = NULL;
            }
        }
    }
    if (keylog_file) {
        fputs(line, keylog_file);
        fputc('\n', keylog_file);
        fflush(keylog_file);
    }
    pthread_mutex_unlock(&keylog_lock);
}

/* ---- revocation lists ------------------------------------------------------------------ */

static int load_crls(SSL_CTX *c, const char *pem, size_t len, ss_err *err)
{
    X509_STORE *store = SSL_CTX_get_cert_store(c);
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    if (!bio)
        return ss_fail(err, SS_E_NOMEM, "out of memory reading revocation lists");
    int n = 0;
    X509_CRL *crl;
    while ((crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_crl(store, crl) == 1)
            n++;
        X509_CRL_free(crl);
    }
    ERR_clear_error();
    BIO_free(bio);
    if (n == 0)
        return ss_fail(err, SS_E_CONFIG,
                       "the revocation list holds no CRL in PEM (\"-----BEGIN X509 CRL-----\"); "
                       "convert a DER one with: openssl crl -inform DER -in FILE -out FILE.pem");
    /* The peer's certificate is checked against its issuer's list; an issuer without one
     * fails the check ("unable to get certificate CRL"), as in nginx's ssl_crl. */
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK);
    return SS_OK;
}

/* ---- OCSP ------------------------------------------------------------------------------ */

static pthread_mutex_t ocsp_lock = PTHREAD_MUTEX_INITIALIZER;

/* Server: staple the response kept for this context (the one the connection switched to,
 * under SNI) when the client asked for one. */
static int ocsp_server_cb(SSL *s, void *arg)
{
    ss_ctx *ctx = arg;
    unsigned char *copy = NULL;
    size_t n = 0;
    pthread_mutex_lock(&ocsp_lock);
    if (ctx->ocsp && ctx->ocsp_len) {
        n = ctx->ocsp_len;
        copy = OPENSSL_malloc(n);
        if (copy)
            memcpy(copy, ctx->ocsp, n);
    }
    pthread_mutex_unlock(&ocsp_lock);
    if (!copy)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_set_tlsext_status_ocsp_resp(s, copy, (long)n) != 1) {
        OPENSSL_free(copy);
        return SSL_TLSEXT_ERR_NOACK;
    }
    return SSL_TLSEXT_ERR_OK;
}

int ss_ctx_set_ocsp_response(ss_ctx *ctx, const unsigned char *der, size_t len, ss_err *err)
{
    if (!ctx->is_server)
        return ss_fail(err, SS_E_INVALID, "an OCSP response is stapled by a server's context");
    unsigned char *copy = NULL;
    if (len) {
        const unsigned char *p = der;
        OCSP_RESPONSE *r = d2i_OCSP_RESPONSE(NULL, &p, (long)len);
        int ok = r && p == der + len;
        OCSP_RESPONSE_free(r);
        if (!ok) {
            ERR_clear_error();
            return ss_fail(err, SS_E_CONFIG, "the OCSP response is not a DER OCSPResponse (as "
                                             "openssl ocsp -respout writes it)");
        }
        copy = malloc(len);
        if (!copy)
            return ss_fail(err, SS_E_NOMEM, "out of memory for the OCSP response");
        memcpy(copy, der, len);
    }
    pthread_mutex_lock(&ocsp_lock);
    unsigned char *old = ctx->ocsp;
    ctx->ocsp = copy;
    ctx->ocsp_len = len;
    pthread_mutex_unlock(&ocsp_lock);
    free(old);
    return SS_OK;
}

/* Client: the stapled response must be there, signed for the server's certificate by its
 * issuer (or a responder it delegated), current, and say "good".  0 fails the handshake
 * (bad_certificate_status_response alert). */
static int ocsp_client_cb(SSL *s, void *arg)
{
    const unsigned char *p = NULL;
    long len = SSL_get_tlsext_status_ocsp_resp(s, &p);
    const char *why = NULL;
    OCSP_RESPONSE *r = NULL;
    OCSP_BASICRESP *bs = NULL;
    OCSP_CERTID *id = NULL;
    X509 *leaf = SSL_get0_peer_certificate(s);
    X509 *issuer = NULL;
    STACK_OF(X509) *verified = SSL_get0_verified_chain(s);
    STACK_OF(X509) *sent = SSL_get_peer_cert_chain(s);
    if (!p || len <= 0) {
        why = "the server stapled no OCSP response, and this client requires one";
        goto done;
    }
    if (!(r = d2i_OCSP_RESPONSE(NULL, &p, len)) ||
        OCSP_response_status(r) != OCSP_RESPONSE_STATUS_SUCCESSFUL ||
        !(bs = OCSP_response_get1_basic(r))) {
        why = "the server stapled an OCSP response that is unreadable or not successful";
        goto done;
    }
    if (verified && sk_X509_num(verified) >= 2)
        issuer = sk_X509_value(verified, 1);
    for (int i = 0; !issuer && sent && leaf && i < sk_X509_num(sent); i++)
        if (X509_check_issued(sk_X509_value(sent, i), leaf) == X509_V_OK)
            issuer = sk_X509_value(sent, i);
    if (!leaf || !issuer) {
        why = "the server sent no issuer certificate to check its OCSP response against";
        goto done;
    }
    /* The responder is the issuer or a certificate it delegated: look for it among the
     * certificates the server sent and those of the verified chain (the issuer may come
     * from this client's trust store rather than from the server). */
    STACK_OF(X509) *known = sk_X509_new_null();
    for (int i = 0; known && sent && i < sk_X509_num(sent); i++)
        sk_X509_push(known, sk_X509_value(sent, i));
    for (int i = 0; known && verified && i < sk_X509_num(verified); i++)
        sk_X509_push(known, sk_X509_value(verified, i));
    int signed_ok = known && OCSP_basic_verify(bs, known, SSL_CTX_get_cert_store(
                                                               SSL_get_SSL_CTX(s)), 0) > 0;
    sk_X509_free(known); /* the certificates are borrowed */
    if (!signed_ok) {
        why = "the stapled OCSP response is not signed by a responder this client trusts";
        goto done;
    }
    int status, reason;
    ASN1_GENERALIZEDTIME *revtime, *thisupd, *nextupd;
    if (!(id = OCSP_cert_to_id(NULL, leaf, issuer)) ||
        !OCSP_resp_find_status(bs, id, &status, &reason, &revtime, &thisupd, &nextupd)) {
        why = "the stapled OCSP response is not about the server's certificate";
        goto done;
    }
    if (!OCSP_check_validity(thisupd, nextupd, 300, -1)) {
        why = "the stapled OCSP response is out of date (or not yet valid)";
        goto done;
    }
    if (status == V_OCSP_CERTSTATUS_REVOKED)
        why = "the stapled OCSP response says the server's certificate is revoked";
    else if (status != V_OCSP_CERTSTATUS_GOOD)
        why = "the stapled OCSP response does not know the server's certificate";
done:
    OCSP_CERTID_free(id);
    OCSP_BASICRESP_free(bs);
    OCSP_RESPONSE_free(r);
    if (why) {
        ERR_clear_error();
        set_failure(s, why);
        return 0;
    }
    return 1;
}

/* ---- SNI -------------------------------------------------------------------------------- */

static int sni_cmp(const void *a, const void *b)
{
    return strcmp(((const struct ss_sni_entry *)a)->name, ((const struct ss_sni_entry *)b)->name);
}

static ss_ctx *sni_find(const ss_ctx *ctx, const char *name)
{
    struct ss_sni_entry key = {(char *)name, NULL};
    const struct ss_sni_entry *e =
        bsearch(&key, ctx->sni, (size_t)ctx->nsni, sizeof *ctx->sni, sni_cmp);
    return e ? e->ctx : NULL;
}

static int sni_name_ok(const char *n)
{
    size_t len = strlen(n);
    if (len == 0 || len > 253 || n[len - 1] == '.')
        return 0;
    const char *host = n;
    if (n[0] == '*') {
        if (n[1] != '.' || !n[2])
            return 0;
        host = n + 2;
    }
    for (const char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
              *p == '_'))
            return 0;
    return 1;
}

int ss_ctx_set_sni(ss_ctx *ctx, const char *const *names, ss_ctx *const *ctxs, int count,
                   ss_err *err)
{
    if (!ctx->is_server)
        return ss_fail(err, SS_E_INVALID, "certificates by name (SNI) are for a server");
    if (ctx->sni)
        return ss_fail(err, SS_E_INVALID, "this context already has its certificates by name");
    if (count < 1)
        return ss_fail(err, SS_E_INVALID, "give at least one name and its certificate");
    struct ss_sni_entry *t = calloc((size_t)count, sizeof *t);
    if (!t)
        return ss_fail(err, SS_E_NOMEM, "out of memory for the certificates by name");
    int rc = SS_OK;
    for (int i = 0; i < count; i++) {
        if (!ctxs[i] || !ctxs[i]->is_server || !names[i] || !sni_name_ok(names[i])) {
            rc = ss_fail(err, SS_E_INVALID,
                         "\"%s\" is not a lower-case host name or \"*.domain\" wildcard with a "
                         "server context",
                         names[i] ? names[i] : "(null)");
            break;
        }
        if (!(t[i].name = strdup(names[i]))) {
            rc = ss_fail(err, SS_E_NOMEM, "out of memory for the certificates by name");
            break;
        }
        ss_ctx_ref(ctxs[i]);
        t[i].ctx = ctxs[i];
    }
    if (rc == SS_OK) {
        qsort(t, (size_t)count, sizeof *t, sni_cmp);
        for (int i = 1; i < count && rc == SS_OK; i++)
            if (strcmp(t[i - 1].name, t[i].name) == 0)
                rc = ss_fail(err, SS_E_INVALID, "the name \"%s\" is given twice", t[i].name);
    }
    if (rc != SS_OK) {
        for (int i = 0; i < count; i++) {
            free(t[i].name);
            if (t[i].ctx)
                ss_ctx_free(t[i].ctx);
        }
        free(t);
        return rc;
    }
    ctx->sni = t;
    ctx->nsni = count;
    return SS_OK;
}

/* The host name of the ClientHello's server_name extension (RFC 6066 §3), lower case,
 * without a trailing dot, into buf (256 bytes); 0 when there is none usable. */
static int requested_name(SSL *s, char *buf)
{
    const unsigned char *p;
    size_t len;
    if (!SSL_client_hello_get0_ext(s, TLSEXT_TYPE_server_name, &p, &len) || len < 5)
        return 0;
    size_t list = ((size_t)p[0] << 8) | p[1];
    size_t n = ((size_t)p[3] << 8) | p[4];
    if (list + 2 != len || p[2] != TLSEXT_NAMETYPE_host_name || n == 0 || n + 5 > len ||
        n > 254)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = p[5 + i];
        buf[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        if (ch == 0)
            return 0;
    }
    if (buf[n - 1] == '.')
        n--;
    buf[n] = '\0';
    return n > 0;
}

int ss_tlsext_client_hello(SSL *s, ss_ctx *ctx)
{
    if (ctx->alpn_required &&
        !SSL_client_hello_get0_ext(s, TLSEXT_TYPE_application_layer_protocol_negotiation, NULL,
                                   NULL)) {
        set_failure(s, "the client offers no application protocol (ALPN), and this server "
                       "requires one");
        return SSL_AD_NO_APPLICATION_PROTOCOL;
    }
    if (!ctx->sni)
        return 0;
    char name[256];
    if (!requested_name(s, name))
        return 0;
    ss_ctx *chosen = sni_find(ctx, name);
    const char *dot = strchr(name, '.');
    if (!chosen && dot && dot[1]) {
        char wild[258];
        snprintf(wild, sizeof wild, "*%s", dot);
        chosen = sni_find(ctx, wild);
    }
    if (!chosen || chosen == ctx)
        return 0;
    pthread_once(&index_once, make_indexes);
    if (origin_index >= 0)
        SSL_set_ex_data(s, origin_index, ctx);
    if (!SSL_set_SSL_CTX(s, chosen->ssl_ctx)) {
        ERR_clear_error();
        return SSL_AD_INTERNAL_ERROR;
    }
    return 0;
}

/* Server: accept every name.  Without a callback OpenSSL neither acknowledges the name
 * nor keeps it in the session, and a resumed TLS 1.2 session would then report none. */
static int servername_cb(SSL *s, int *alert, void *arg)
{
    return SSL_TLSEXT_ERR_OK;
}

/* ---- setup ------------------------------------------------------------------------------ */

int ss_tlsext_setup(ss_ctx *ctx, const ss_ctx_config *cfg, ss_err *err)
{
    SSL_CTX *c = ctx->ssl_ctx;
    if (cfg->alpn && cfg->alpn_len) {
        if (!alpn_wire_ok(cfg->alpn, cfg->alpn_len))
            return ss_fail(err, SS_E_INVALID, "the ALPN protocol list is malformed");
        if (!(ctx->alpn = malloc(cfg->alpn_len)))
            return ss_fail(err, SS_E_NOMEM, "out of memory for the ALPN protocols");
        memcpy(ctx->alpn, cfg->alpn, cfg->alpn_len);
        ctx->alpn_len = cfg->alpn_len;
        if (cfg->is_server)
            SSL_CTX_set_alpn_select_cb(c, alpn_select_cb, ctx);
        else if (SSL_CTX_set_alpn_protos(c, ctx->alpn, (unsigned)ctx->alpn_len) != 0)
            return ss_fail_ssl(err, SS_E_CONFIG, "OpenSSL refused the ALPN protocol list");
    }
    if (cfg->alpn_required && cfg->is_server) {
        if (!ctx->alpn)
            return ss_fail(err, SS_E_INVALID, "ALPN is required but no protocol is given");
        ctx->alpn_required = 1;
    }
    if (cfg->keylog_path && cfg->keylog_path[0]) {
        if (!(ctx->keylog_path = strdup(cfg->keylog_path)))
            return ss_fail(err, SS_E_NOMEM, "out of memory for the key log path");
        SSL_CTX_set_keylog_callback(c, keylog_cb);
    }
    if (cfg->crl_pem && cfg->crl_pem_len) {
        int rc = load_crls(c, cfg->crl_pem, cfg->crl_pem_len, err);
        if (rc != SS_OK)
            return rc;
    }
    if (cfg->is_server) {
        SSL_CTX_set_tlsext_servername_callback(c, servername_cb);
        SSL_CTX_set_tlsext_status_cb(c, ocsp_server_cb);
        SSL_CTX_set_tlsext_status_arg(c, ctx);
    } else if (cfg->ocsp_required) {
        SSL_CTX_set_tlsext_status_type(c, TLSEXT_STATUSTYPE_ocsp);
        SSL_CTX_set_tlsext_status_cb(c, ocsp_client_cb);
    }
    return SS_OK;
}

void ss_tlsext_free(ss_ctx *ctx)
{
    free(ctx->alpn);
    free(ctx->keylog_path);
    for (int i = 0; i < ctx->nsni; i++) {
        free(ctx->sni[i].name);
        ss_ctx_free(ctx->sni[i].ctx);
    }
    free(ctx->sni);
    free(ctx->ocsp);
}
