/* Sticky-cookie tokens, Cookie header helpers, XXH64. See affinity.h. */
#include "affinity.h"

#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/* ---- tokens ---- */

#define TOKEN_LABEL "lb-affinity-v1:"
#define TOKEN_MAC_BYTES 16 /* 128 bits of the HMAC-SHA256 output */

static const char b64url_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* base64url without padding of n bytes into out (4 * n / 3 rounded up
 * characters, then a NUL). */
static void b64url_encode(const unsigned char *in, size_t n, char *out)
{
    size_t o = 0;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
        out[o++] = b64url_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url_alphabet[(v >> 18) & 63];
        out[o++] = b64url_alphabet[(v >> 12) & 63];
        out[o++] = b64url_alphabet[(v >> 6) & 63];
    }
    out[o] = '\0';
}

static bool is_b64url_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

/* True if the bytes could be a token at all: the right length and alphabet.
 * Rejects oversized values before reading them. */
static bool token_well_formed(const char *token, size_t token_len)
{
    if (token == NULL || token_len != LB_AFFINITY_TOKEN_LEN)
        return false;
    for (size_t i = 0; i < token_len; i++)
        if (!is_b64url_char((unsigned char)token[i]))
            return false;
    return true;
}

int lb_affinity_token(const char *secret, size_t secret_len, const char *server_id, char *out,
                      size_t out_len)
{
    unsigned char small[256];
    unsigned char *msg = small;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_len = 0;
    int rc = -1;

    if (out != NULL && out_len > 0)
        out[0] = '\0';
    if (secret == NULL || secret_len == 0 || secret_len > INT_MAX || server_id == NULL ||
        out == NULL || out_len < LB_AFFINITY_TOKEN_LEN + 1)
        return -1;

    size_t label_len = sizeof(TOKEN_LABEL) - 1;
    size_t id_len = strlen(server_id);
    size_t msg_len = label_len + id_len;
    if (msg_len > sizeof(small)) {
        msg = malloc(msg_len);
        if (msg == NULL)
            return -1;
    }
    memcpy(msg, TOKEN_LABEL, label_len);
    memcpy(msg + label_len, server_id, id_len);

    if (HMAC(EVP_sha256(), secret, (int)secret_len, msg, msg_len, mac, &mac_len) == NULL ||
        mac_len < TOKEN_MAC_BYTES)
        goto out;
    b64url_encode(mac, TOKEN_MAC_BYTES, out);
    rc = 0;
out:
    OPENSSL_cleanse(mac, sizeof(mac));
    if (msg != small)
        free(msg);
    return rc;
}

/* True if the well-formed token equals expect, compared in constant time. */
static bool token_equal(const char *expect, const char *token)
{
    return CRYPTO_memcmp(expect, token, LB_AFFINITY_TOKEN_LEN) == 0;
}

long lb_affinity_lookup(const char *secret, size_t secret_len, const char *const *server_ids,
                        size_t n, const char *token, size_t token_len)
{
    if (!token_well_formed(token, token_len) || server_ids == NULL)
        return -1;
    long found = -1;
    for (size_t i = 0; i < n; i++) {
        char expect[LB_AFFINITY_TOKEN_LEN + 1];
        if (server_ids[i] == NULL ||
            lb_affinity_token(secret, secret_len, server_ids[i], expect, sizeof(expect)) < 0)
            continue;
        if (token_equal(expect, token) && found < 0)
            found = (long)i;
    }
    return found;
}

int lb_affinity_table_build(struct lb_affinity_table *table, const char *secret, size_t secret_len,
                            const char *const *server_ids, size_t n)
{
    table->n = 0;
    table->tokens = NULL;
    if (secret == NULL || secret_len == 0 || secret_len > INT_MAX || (n > 0 && server_ids == NULL))
        return -1;
    if (n == 0)
        return 0;

    table->tokens = calloc(n, sizeof(*table->tokens));
    if (table->tokens == NULL)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (server_ids[i] == NULL ||
            lb_affinity_token(secret, secret_len, server_ids[i], table->tokens[i],
                              sizeof(table->tokens[i])) < 0)
            goto fail;
    }
    table->n = n;
    return 0;
fail:
    lb_affinity_table_free(table);
    return -1;
}

void lb_affinity_table_free(struct lb_affinity_table *table)
{
    free(table->tokens);
    table->tokens = NULL;
    table->n = 0;
}

long lb_affinity_table_lookup(const struct lb_affinity_table *table, const char *token,
                              size_t token_len)
{
    if (table == NULL || !token_well_formed(token, token_len))
        return -1;
    /* Every entry is compared, so the time does not depend on which matched. */
    long found = -1;
    for (size_t i = 0; i < table->n; i++)
        if (token_equal(table->tokens[i], token) && found < 0)
            found = (long)i;
    return found;
}

const char *lb_affinity_table_token(const struct lb_affinity_table *table, size_t idx)
{
    if (table == NULL || idx >= table->n)
        return NULL;
    return table->tokens[idx];
}

/* ---- Cookie header ---- */

/* One ';'-separated piece of a Cookie header, trimmed. */
struct cookie_pair {
    const char *start; /* the trimmed piece, "name=value" */
    size_t len;
    const char *name; /* trimmed name; len 0 when the piece has no '=' */
    size_t name_len;
    const char *value; /* trimmed value */
    size_t value_len;
};

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Parses the piece starting at *pos (which advances past its ';'). Returns
 * false when the header is exhausted. Empty pieces (";;", a trailing ';')
 * come back with len 0. */
static bool next_pair(const char *s, size_t len, size_t *pos, struct cookie_pair *pair)
{
    if (*pos >= len)
        return false;
    size_t b = *pos;
    const char *semi = memchr(s + b, ';', len - b);
    size_t e = semi ? (size_t)(semi - s) : len;
    *pos = semi ? e + 1 : len;

    while (b < e && is_ows(s[b]))
        b++;
    while (e > b && is_ows(s[e - 1]))
        e--;
    pair->start = s + b;
    pair->len = e - b;
    pair->name = s + b;
    pair->name_len = 0;
    pair->value = s + e;
    pair->value_len = 0;

    const char *eq = memchr(s + b, '=', e - b);
    if (eq == NULL)
        return true; /* nameless piece: never matches */
    size_t ne = (size_t)(eq - s);
    while (ne > b && is_ows(s[ne - 1]))
        ne--;
    size_t vb = (size_t)(eq - s) + 1;
    while (vb < e && is_ows(s[vb]))
        vb++;
    pair->name_len = ne - b;
    pair->value = s + vb;
    pair->value_len = e - vb;
    return true;
}

static bool pair_is(const struct cookie_pair *pair, const char *name, size_t name_len)
{
    return name_len > 0 && pair->name_len == name_len && memcmp(pair->name, name, name_len) == 0;
}

int lb_cookie_find(const char *header_value, size_t len, const char *name, const char **value,
                   size_t *value_len)
{
    int count = 0;
    if (value)
        *value = NULL;
    if (value_len)
        *value_len = 0;
    if (header_value == NULL || name == NULL)
        return 0;

    size_t name_len = strlen(name);
    size_t pos = 0;
    struct cookie_pair pair;
    while (next_pair(header_value, len, &pos, &pair)) {
        if (!pair_is(&pair, name, name_len))
            continue;
        if (count == 0) {
            if (value)
                *value = pair.value;
            if (value_len)
                *value_len = pair.value_len;
        }
        if (count < INT_MAX)
            count++;
    }
    return count;
}

int lb_cookie_remove(const char *header_value, size_t len, const char *name, char *out,
                     size_t out_cap, size_t *out_len)
{
    if (header_value == NULL || name == NULL || out == NULL || out_len == NULL)
        return -1;
    *out_len = 0;
    if (out_cap > 0)
        out[0] = '\0';

    int removed = lb_cookie_find(header_value, len, name, NULL, NULL);
    if (removed == 0) {
        if (out_cap < len + 1)
            return -1;
        memcpy(out, header_value, len);
        out[len] = '\0';
        *out_len = len;
        return 0;
    }

    size_t name_len = strlen(name);
    size_t pos = 0;
    size_t o = 0;
    struct cookie_pair pair;
    while (next_pair(header_value, len, &pos, &pair)) {
        if (pair.len == 0 || pair_is(&pair, name, name_len))
            continue;
        size_t sep = o > 0 ? 2 : 0;
        if (out_cap - o < sep + pair.len + 1) {
            out[0] = '\0';
            return -1;
        }
        if (sep) {
            out[o++] = ';';
            out[o++] = ' ';
        }
        memcpy(out + o, pair.start, pair.len);
        o += pair.len;
    }
    if (out_cap < o + 1)
        return -1;
    out[o] = '\0';
    *out_len = o;
    return removed;
}

/* ---- XXH64 ---- */

#define P64_1 0x9E3779B185EBCA87ULL
#define P64_2 0xC2B2AE3D27D4EB4FULL
#define P64_3 0x165667B19E3779F9ULL
#define P64_4 0x85EBCA77C2B2AE63ULL
#define P64_5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t x, unsigned r)
{
    return (x << r) | (x >> (64 - r));
}

/* Little-endian reads, whatever the host order, so hashes are portable. */
static inline uint64_t read64le(const unsigned char *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24 |
           (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48 |
           (uint64_t)p[7] << 56;
}

static inline uint32_t read32le(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t xxh_round(uint64_t acc, uint64_t input)
{
    acc += input * P64_2;
    acc = rotl64(acc, 31);
    return acc * P64_1;
}

static inline uint64_t xxh_merge(uint64_t acc, uint64_t v)
{
    acc ^= xxh_round(0, v);
    return acc * P64_1 + P64_4;
}

uint64_t lb_hash64_seed(const void *data, size_t len, uint64_t seed)
{
    static const unsigned char empty[1] = {0};
    const unsigned char *p = data ? data : empty;
    const unsigned char *end = p + (data ? len : 0);
    uint64_t h;

    if (data == NULL)
        len = 0;
    if (len >= 32) {
        uint64_t v1 = seed + P64_1 + P64_2;
        uint64_t v2 = seed + P64_2;
        uint64_t v3 = seed;
        uint64_t v4 = seed - P64_1;
        const unsigned char *limit = end - 32;
        do {
            v1 = xxh_round(v1, read64le(p));
            v2 = xxh_round(v2, read64le(p + 8));
            v3 = xxh_round(v3, read64le(p + 16));
            v4 = xxh_round(v4, read64le(p + 24));
            p += 32;
        } while (p <= limit);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = xxh_merge(h, v1);
        h = xxh_merge(h, v2);
        h = xxh_merge(h, v3);
        h = xxh_merge(h, v4);
    } else {
        h = seed + P64_5;
    }
    h += (uint64_t)len;

    while (end - p >= 8) {
        h ^= xxh_round(0, read64le(p));
        h = rotl64(h, 27) * P64_1 + P64_4;
        p += 8;
    }
    if (end - p >= 4) {
        h ^= (uint64_t)read32le(p) * P64_1;
        h = rotl64(h, 23) * P64_2 + P64_3;
        p += 4;
    }
    while (p < end) {
        h ^= (uint64_t)*p * P64_5;
        h = rotl64(h, 11) * P64_1;
        p++;
    }

    h ^= h >> 33;
    h *= P64_2;
    h ^= h >> 29;
    h *= P64_3;
    h ^= h >> 32;
    return h;
}

uint64_t lb_hash64(const void *data, size_t len)
{
    return lb_hash64_seed(data, len, 0);
}
