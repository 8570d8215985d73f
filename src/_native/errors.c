/* Error records: filled right after the failing call, never later. */
#include "ss_internal.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void vset(ss_err *err, int code, const char *fmt, va_list ap)
{
    err->code = code;
    err->sys_code = 0;
    err->detail[0] = '\0';
    vsnprintf(err->message, sizeof err->message, fmt, ap);
}

int ss_fail(ss_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int ss_fail_errno(ss_err *err, int code, int errnum, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);
    err->sys_code = errnum;
    /* strerror_r (GNU flavour under _GNU_SOURCE) may return a static string. */
    char tmp[256];
    const char *s = strerror_r(errnum, tmp, sizeof tmp);
    snprintf(err->detail, sizeof err->detail, "%s", s);
    return code;
}

/* Drain OpenSSL's error queue into a readable "lib: reason" list (most specific first). */
void ss_ssl_reason(char *buf, size_t len, int *reason_code)
{
    unsigned long e;
    size_t used = 0;
    int first = 1;
    buf[0] = '\0';
    if (reason_code)
        *reason_code = 0;
    while ((e = ERR_get_error()) != 0) {
        const char *reason = ERR_reason_error_string(e);
        const char *lib = ERR_lib_error_string(e);
        char one[160];
        if (reason)
            snprintf(one, sizeof one, "%s%s%s", lib ? lib : "", lib ? ": " : "", reason);
        else
            ERR_error_string_n(e, one, sizeof one);
        if (first && reason_code)
            *reason_code = ERR_GET_REASON(e);
        if (used < len && !strstr(buf, one)) {
            int n = snprintf(buf + used, len - used, "%s%s", first ? "" : "; ", one);
            if (n > 0)
                used += (size_t)n;
        }
        first = 0;
    }
}

int ss_fail_ssl(ss_err *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);
    ss_ssl_reason(err->detail, sizeof err->detail, &err->sys_code);
    return code;
}

const char *ss_version_name(int version)
{
    switch (version) {
    case SSL3_VERSION: return "SSLv3";
    case TLS1_VERSION: return "TLSv1";
    case TLS1_1_VERSION: return "TLSv1.1";
    case TLS1_2_VERSION: return "TLSv1.2";
    case TLS1_3_VERSION: return "TLSv1.3";
    default: return "unknown";
    }
}

long long ss_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

long long ss_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : ss_now_ms() + timeout_ms;
}

int ss_remaining(long long deadline)
{
    if (deadline < 0)
        return -1;
    long long left = deadline - ss_now_ms();
    return left <= 0 ? 0 : (left > 0x7fffffff ? 0x7fffffff : (int)left);
}

void ss_free(void *p) { free(p); }
