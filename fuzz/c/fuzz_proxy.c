/*
 * libFuzzer harness (C, clang -fsanitize=fuzzer,address,undefined) for the PROXY protocol
 * parser of the C core (src/_native/proxy.c: ss_proxy_parse, ss_proxy_allowed), the first
 * bytes a listener with the PROXY option reads from anybody who reaches its port.  Built and
 * run by fuzz/c/run.sh beside the deframer's harness.
 *
 * Invariant: for any bytes and any header limit,
 *   1. no crash, no sanitizer report (ASan, UBSan: no read past the buffer given);
 *   2. the result is -1 (malformed: `why` is a non-empty printable sentence), 0 (more bytes
 *      needed) or the header's length, 0 < n <= len, and n <= the limit for version 2;
 *   3. a header is self-delimiting: once the parser returns n for some bytes, every longer
 *      stream with those n bytes first gives the same n and the same source address, and
 *      every strict prefix of them gives 0 (never an error: a header cut by TCP at any byte
 *      waits for the rest);
 *   4. a non-empty source is AF_INET or AF_INET6 with its exact length; for a version 1
 *      header, the address and port are those of the header's text, re-parsed here
 *      independently (inet_pton, decimal port);
 *   5. ss_proxy_allowed: an empty list lets every address in; an entry of prefix length 0
 *      lets every address of a known family in; an entry equal to the address with 128
 *      bits lets it in; the answer is the same when the entry is repeated.
 *
 * Input layout: byte 0 picks the header limit (LIMITS); the rest is the stream.
 */
#include "../../src/_native/ss_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const size_t LIMITS[] = {16, 64, 107, 232, 536, 4096, 65551, 28};

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "invariant broken: %s: ", #cond);                              \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

typedef struct {
    int n;
    struct sockaddr_storage src;
    socklen_t src_len;
    char why[256];
} parsed;

/* Parse a copy of exactly len bytes (heap, so that ASan sees any read past its end). */
static void parse(const uint8_t *data, size_t len, size_t limit, parsed *out)
{
    unsigned char *copy = malloc(len ? len : 1);
    if (len)
        memcpy(copy, data, len);
    memset(out, 0, sizeof *out);
    memset(&out->src, 0xA5, sizeof out->src); /* what the parser does not set shows */
    out->src_len = 12345;
    out->n = ss_proxy_parse(copy, len, limit, &out->src, &out->src_len, out->why,
                            sizeof out->why);
    free(copy);
}

static int same_source(const parsed *a, const parsed *b)
{
    if (a->src_len != b->src_len)
        return 0;
    if (a->src_len == 0)
        return 1;
    return memcmp(&a->src, &b->src, a->src_len) == 0;
}

/* 4: the version 1 text, re-parsed independently of proxy.c. */
static void check_v1_text(const uint8_t *data, const parsed *p)
{
    char line[108];
    size_t n = (size_t)p->n - 2;
    CHECK(n < sizeof line, "v1 header of %d bytes", p->n);
    memcpy(line, data, n);
    line[n] = '\0';
    CHECK(data[n] == '\r' && data[n + 1] == '\n', "v1 header not ended by CR LF");
    if (strncmp(line, "PROXY UNKNOWN", 13) == 0) {
        CHECK(p->src_len == 0, "UNKNOWN gave an address");
        return;
    }
    char proto[8], s[64], d[64];
    unsigned sport, dport;
    char extra;
    int k = sscanf(line, "PROXY %7s %63s %63s %u %u%c", proto, s, d, &sport, &dport, &extra);
    CHECK(k == 5, "accepted v1 header \"%s\" does not have five fields", line);
    CHECK(sport <= 65535, "source port %u", sport);
    if (strcmp(proto, "TCP4") == 0) {
        struct in_addr a;
        CHECK(inet_pton(AF_INET, s, &a) == 1, "TCP4 source \"%s\" is not IPv4", s);
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&p->src;
        CHECK(p->src_len == sizeof *s4 && s4->sin_family == AF_INET, "TCP4 family");
        CHECK(memcmp(&s4->sin_addr, &a, 4) == 0, "TCP4 source differs from \"%s\"", s);
        CHECK(ntohs(s4->sin_port) == sport, "TCP4 source port differs");
    } else {
        CHECK(strcmp(proto, "TCP6") == 0, "accepted protocol \"%s\"", proto);
        struct in6_addr a;
        CHECK(inet_pton(AF_INET6, s, &a) == 1, "TCP6 source \"%s\" is not IPv6", s);
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&p->src;
        CHECK(p->src_len == sizeof *s6 && s6->sin6_family == AF_INET6, "TCP6 family");
        CHECK(memcmp(&s6->sin6_addr, &a, 16) == 0, "TCP6 source differs from \"%s\"", s);
        CHECK(ntohs(s6->sin6_port) == sport, "TCP6 source port differs");
    }
}

/* 5: the allow list, on the address the header named. */
static void check_allowed(const parsed *p, const uint8_t *data, size_t len)
{
    const struct sockaddr *sa = (const struct sockaddr *)&p->src;
    CHECK(ss_proxy_allowed(NULL, 0, sa) == 1, "an empty list refused an address");
    unsigned char entries[3 * 17];
    memset(entries, 0, sizeof entries);
    /* entry 0: prefix length 0 (everything); entry 1: the address itself, /128 */
    if (sa->sa_family == AF_INET) {
        entries[17 + 10] = entries[17 + 11] = 0xff;
        memcpy(entries + 17 + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else {
        memcpy(entries + 17, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    }
    entries[17 + 16] = 128;
    CHECK(ss_proxy_allowed(entries, 1, sa) == 1, "a /0 entry refused an address");
    CHECK(ss_proxy_allowed(entries + 17, 1, sa) == 1, "its own /128 refused an address");
    /* entry 2: fuzzer bytes, prefix length anything (clamped to 128 by the parser) */
    for (size_t i = 0; i < 17 && i < len; i++)
        entries[34 + i] = data[len - 1 - i];
    int one = ss_proxy_allowed(entries + 34, 1, sa);
    CHECK(one == 0 || one == 1, "allowed() returned %d", one);
    memcpy(entries + 17, entries + 34, 17);
    CHECK(ss_proxy_allowed(entries + 17, 2, sa) == one, "a repeated entry changed the answer");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t limit = LIMITS[data[0] & 7];
    data++;
    size--;
    parsed whole;
    parse(data, size, limit, &whole);
    int n = whole.n;
    CHECK(n >= -1 && n <= (int)size, "result %d for %zu bytes", n, size);
    if (n == -1) {
        size_t w = strlen(whole.why);
        CHECK(w > 0, "an error without a reason");
        for (size_t i = 0; i < w; i++)
            CHECK(whole.why[i] >= 0x20 && whole.why[i] < 0x7f, "unprintable reason");
        return 0;
    }
    if (n == 0)
        return 0;
    if (data[0] != 'P')
        CHECK((size_t)n <= limit, "v2 header of %d bytes over the limit %zu", n, limit);
    CHECK(whole.src_len == 0 || whole.src_len == sizeof(struct sockaddr_in) ||
              whole.src_len == sizeof(struct sockaddr_in6),
          "source length %u", (unsigned)whole.src_len);
    if (whole.src_len == sizeof(struct sockaddr_in))
        CHECK(whole.src.ss_family == AF_INET, "IPv4 length, family %d", whole.src.ss_family);
    if (whole.src_len == sizeof(struct sockaddr_in6))
        CHECK(whole.src.ss_family == AF_INET6, "IPv6 length, family %d", whole.src.ss_family);
    /* 3: the header alone, and every strict prefix of it */
    parsed alone;
    parse(data, (size_t)n, limit, &alone);
    CHECK(alone.n == n && same_source(&alone, &whole), "the header alone gave %d, not %d",
          alone.n, n);
    for (size_t cut = 0; cut < (size_t)n; cut++) {
        parsed part;
        parse(data, cut, limit, &part);
        CHECK(part.n == 0, "a prefix of %zu bytes of a %d-byte header gave %d (%s)", cut, n,
              part.n, part.why);
    }
    if (data[0] == 'P')
        check_v1_text(data, &whole);
    if (whole.src_len)
        check_allowed(&whole, data, size);
    return 0;
}
