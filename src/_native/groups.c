/* Key-exchange groups: which one a connection negotiated, which ones the linked OpenSSL
 * knows, and the operator's choice of groups (SSLSOCK_TLS_GROUPS).
 *
 * sslsock leaves the groups to OpenSSL unless told otherwise: with OpenSSL 3.5 and later
 * that means the hybrid post-quantum X25519MLKEM768 first, then X25519 and the NIST curves
 * (upstream's defaults), and with 3.0 the classical groups only.  Everything here is
 * decided at build time from the headers and at run time from the library, so the core
 * builds and runs on both. */
#include "ss_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

void ss_conn_group(ss_conn *c, char *buf, size_t len)
{
    if (!len)
        return;
    buf[0] = '\0';
    if (!c->ssl)
        return;
    pthread_mutex_lock(&c->ssl_lock);
    const char *name = NULL;
#if OPENSSL_VERSION_NUMBER >= 0x30200000L
    /* 3.2+: the group's TLS name, also for groups without a NID (the ML-KEM hybrids). */
    name = SSL_get0_group_name(c->ssl);
#else
    int id = SSL_get_negotiated_group(c->ssl);
    if (id > 0)
        name = SSL_group_to_name(c->ssl, id);
#endif
    snprintf(buf, len, "%s", name ? name : "");
    pthread_mutex_unlock(&c->ssl_lock);
}

int ss_openssl_group_available(const char *name)
{
    SSL_CTX *c = SSL_CTX_new(TLS_method());
    if (!c) {
        ERR_clear_error();
        return 0;
    }
    /* An unknown name makes the list invalid (no "?" prefix): that is the test. */
    int ok = SSL_CTX_set1_groups_list(c, name) == 1;
    SSL_CTX_free(c);
    ERR_clear_error();
    return ok;
}

static const char *groups_override(void)
{
    const char *v = getenv("SSLSOCK_TLS_GROUPS");
    return v && v[0] ? v : NULL;
}

int ss_ctx_apply_groups(SSL_CTX *c, ss_err *err)
{
    const char *groups = groups_override();
    if (groups && SSL_CTX_set1_groups_list(c, groups) != 1)
        return ss_fail_ssl(err, SS_E_CONFIG,
                           "SSLSOCK_TLS_GROUPS=\"%s\" is not a group list this OpenSSL (%s) "
                           "accepts",
                           groups, OpenSSL_version(OPENSSL_VERSION));
    return SS_OK;
}
