/*
 * The PROXY protocol (versions 1 and 2), as HAProxy specifies it: the header a load
 * balancer sends at the start of a TCP connection to say who the real client is.
 *
 * Only parsing lives here (no I/O): the listener (listener.c) peeks at what has arrived,
 * asks ss_proxy_parse whether it holds a whole header, and then reads exactly that many
 * bytes, so the TLS ClientHello behind the header is left in the socket for OpenSSL.
 *
 *  v1: "PROXY TCP4 <src> <dst> <sport> <dport>\r\n" (or TCP6, or "PROXY UNKNOWN...\r\n"),
 *      at most 107 bytes.
 *  v2: a 12-byte signature, version/command, family/transport, a 16-bit length, then the
 *      addresses and optional TLVs (ignored).  LOCAL (health checks from the proxy itself)
 *      and families other than TCP over IPv4/IPv6 keep the connection's own address.
 */

#include "ss_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define V1_MAX 107

static const unsigned char V2_SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static int bad(char *why, size_t why_len, const char *text)
{
    snprintf(why, why_len, "%s", text);
    return -1;
}

/* A decimal port, 0..65535, digits only. */
static int parse_port(const char *s, size_t n, int *out)
{
    if (n == 0 || n > 5)
        return 0;
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    if (v > 65535)
        return 0;
    *out = v;
    return 1;
}

static int parse_v1(const unsigned char *buf, size_t len, struct sockaddr_storage *src,
                    socklen_t *src_len, char *why, size_t why_len)
{
    const unsigned char *end = NULL;
    for (size_t i = 0; i + 1 < len && i + 1 < V1_MAX; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n') {
            end = buf + i;
            break;
        }
    if (!end) {
        for (size_t i = 0; i < len && i < V1_MAX; i++)
            if (buf[i] < 0x20 && buf[i] != '\r')
                return bad(why, why_len, "PROXY v1 header with a control character in it");
        if (len >= V1_MAX)
            return bad(why, why_len, "PROXY v1 header without its line end within 107 bytes "
                                     "(the protocol's maximum)");
        return 0;
    }
    size_t hlen = (size_t)(end - buf) + 2;
    char line[V1_MAX + 1];
    memcpy(line, buf, (size_t)(end - buf));
    line[end - buf] = '\0';
    for (size_t i = 0; i < (size_t)(end - buf); i++) /* (all of them: a NUL too) */
        if (buf[i] < 0x20 || buf[i] > 0x7e)
            return bad(why, why_len, "PROXY v1 header with a non-printable byte in it");
    if (strncmp(line, "PROXY UNKNOWN", 13) == 0 && (line[13] == '\0' || line[13] == ' ')) {
        *src_len = 0; /* the proxy does not know: keep the connection's address */
        return (int)hlen;
    }
    /* PROXY TCP4 src dst sport dport: exactly six words, single spaces */
    char *words[7];
    int n = 0;
    char *p = line;
    while (n < 7) {
        words[n++] = p;
        char *sp = strchr(p, ' ');
        if (!sp)
            break;
        *sp = '\0';
        p = sp + 1;
    }
    if (n != 6 || strcmp(words[0], "PROXY") != 0)
        return bad(why, why_len, "malformed PROXY v1 header: expected \"PROXY TCP4|TCP6 "
                                 "<source> <destination> <source port> <destination port>\"");
    int family = strcmp(words[1], "TCP4") == 0 ? AF_INET
               : strcmp(words[1], "TCP6") == 0 ? AF_INET6 : 0;
    if (!family)
        return bad(why, why_len, "PROXY v1 header with an unknown protocol (TCP4, TCP6 or "
                                 "UNKNOWN expected)");
    int sport, dport;
    if (!parse_port(words[4], strlen(words[4]), &sport) ||
        !parse_port(words[5], strlen(words[5]), &dport))
        return bad(why, why_len, "PROXY v1 header with a port that is not a number 0..65535");
    memset(src, 0, sizeof *src);
    if (family == AF_INET) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)src;
        struct in_addr dst;
        if (inet_pton(AF_INET, words[2], &s4->sin_addr) != 1 ||
            inet_pton(AF_INET, words[3], &dst) != 1)
            return bad(why, why_len, "PROXY v1 TCP4 header with an address that is not IPv4");
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)sport);
        *src_len = sizeof *s4;
    } else {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)src;
        struct in6_addr dst;
        if (inet_pton(AF_INET6, words[2], &s6->sin6_addr) != 1 ||
            inet_pton(AF_INET6, words[3], &dst) != 1)
            return bad(why, why_len, "PROXY v1 TCP6 header with an address that is not IPv6");
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)sport);
        *src_len = sizeof *s6;
    }
    return (int)hlen;
}

static int parse_v2(const unsigned char *buf, size_t len, size_t max_len,
                    struct sockaddr_storage *src, socklen_t *src_len, char *why, size_t why_len)
{
    if (len < 16)
        return 0;
    if ((buf[12] >> 4) != 2)
        return bad(why, why_len, "PROXY v2 header with an unknown version (2 expected)");
    int cmd = buf[12] & 0x0F;
    if (cmd > 1)
        return bad(why, why_len, "PROXY v2 header with an unknown command (LOCAL or PROXY "
                                 "expected)");
    size_t body = ((size_t)buf[14] << 8) | buf[15];
    size_t hlen = 16 + body;
    if (hlen > max_len) {
        snprintf(why, why_len, "PROXY v2 header of %zu bytes, over this listener's limit of "
                               "%zu (addresses and TLVs take a few hundred)", hlen, max_len);
        return -1;
    }
    if (len < hlen)
        return 0;
    *src_len = 0;
    if (cmd == 0) /* LOCAL: the proxy's own connection (a health check) */
        return (int)hlen;
    const unsigned char *a = buf + 16;
    memset(src, 0, sizeof *src);
    switch (buf[13]) {
    case 0x11: { /* TCP over IPv4 */
        if (body < 12)
            return bad(why, why_len, "PROXY v2 TCP4 header too short for its addresses");
        struct sockaddr_in *s4 = (struct sockaddr_in *)src;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, a, 4);
        memcpy(&s4->sin_port, a + 8, 2);
        *src_len = sizeof *s4;
        break;
    }
    case 0x21: { /* TCP over IPv6 */
        if (body < 36)
            return bad(why, why_len, "PROXY v2 TCP6 header too short for its addresses");
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)src;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, a, 16);
        memcpy(&s6->sin6_port, a + 32, 2);
        *src_len = sizeof *s6;
        break;
    }
    default: /* UNSPEC, UDP, UNIX: the connection's own address stands */
        break;
    }
    return (int)hlen;
}

int ss_proxy_parse(const unsigned char *buf, size_t len, size_t max_len,
                   struct sockaddr_storage *src, socklen_t *src_len, char *why, size_t why_len)
{
    *src_len = 0;
    if (len == 0)
        return 0;
    if (buf[0] == 'P') {
        static const char v1[] = "PROXY ";
        size_t n = len < 6 ? len : 6;
        if (memcmp(buf, v1, n) != 0)
            return bad(why, why_len, "no PROXY header: the connection does not start with "
                                     "\"PROXY \" or the version 2 signature");
        return len < 6 ? 0 : parse_v1(buf, len, src, src_len, why, why_len);
    }
    if (buf[0] == V2_SIG[0]) {
        size_t n = len < 12 ? len : 12;
        if (memcmp(buf, V2_SIG, n) != 0)
            return bad(why, why_len, "no PROXY header: the connection starts with bytes that "
                                     "are not the version 2 signature");
        return parse_v2(buf, len, max_len, src, src_len, why, why_len);
    }
    if (buf[0] == 0x16)
        return bad(why, why_len, "no PROXY header: the client started the TLS handshake "
                                 "directly (connect through the proxy, or turn the PROXY "
                                 "protocol option off for this listener)");
    return bad(why, why_len, "no PROXY header: the connection does not start with \"PROXY \" "
                             "or the version 2 signature");
}

/* Is addr inside one of the allowed prefixes?  Each entry is 17 bytes: an IPv6 address
 * (IPv4 as ::ffff:a.b.c.d) and a prefix length in bits. */
int ss_proxy_allowed(const unsigned char *allow, int count, const struct sockaddr *addr)
{
    if (count <= 0)
        return 1;
    unsigned char a[16];
    if (addr->sa_family == AF_INET) {
        memset(a, 0, 10);
        a[10] = a[11] = 0xff;
        memcpy(a + 12, &((const struct sockaddr_in *)addr)->sin_addr, 4);
    } else if (addr->sa_family == AF_INET6) {
        memcpy(a, &((const struct sockaddr_in6 *)addr)->sin6_addr, 16);
    } else {
        return 0;
    }
    for (int i = 0; i < count; i++) {
        const unsigned char *e = allow + 17 * i;
        int bits = e[16] > 128 ? 128 : e[16];
        int full = bits / 8, rest = bits % 8;
        if (memcmp(a, e, (size_t)full) != 0)
            continue;
        if (rest) {
            unsigned char mask = (unsigned char)(0xff << (8 - rest));
            if ((a[full] & mask) != (e[full] & mask))
                continue;
        }
        return 1;
    }
    return 0;
}
