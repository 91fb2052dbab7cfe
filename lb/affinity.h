/* Affinity: sticky-cookie tokens, Cookie header helpers and hash keys. Pure:
 * no I/O, no event loop, no config; ids and secrets come in as plain strings.
 *
 * Token format (version 1)
 * ------------------------
 *   token = base64url( first 16 bytes of HMAC-SHA256(secret, "lb-affinity-v1:" || server_id) )
 *
 * i.e. the first 128 bits of the MAC, base64url-encoded (RFC 4648 section 5,
 * alphabet A-Z a-z 0-9 - _) without padding: always LB_AFFINITY_TOKEN_LEN = 22
 * characters, all of them legal in a cookie-value without quoting. Properties:
 * - no nonce, no timestamp: the same (secret, id) always gives the same token,
 *   so every worker, every restart and every lb instance sharing the secret
 *   agrees, and lb keeps no per-session state;
 * - it names the server by a keyed hash of its stable id, never its position
 *   in the list (survives reordering) and never the id or address in clear;
 * - choosing a server without the secret means forging a 128-bit HMAC;
 * - the "lb-affinity-v1:" label separates this use of the secret from any
 *   other; a future format changes the label (and so every token), which only
 *   costs each client one rebalance.
 * A token only says "this client was on server X"; it is not a session id and
 * carries no expiry (max_age belongs to the Set-Cookie attributes).
 *
 * Lookup accepts exactly the 22 characters above; anything else (empty, other
 * length, over LB_AFFINITY_TOKEN_MAX, a character outside the alphabet,
 * another secret, an id no longer in the list) is "no affinity" (-1), which
 * the caller answers with normal balancing and a fresh token. */
#ifndef LB_AFFINITY_H
#define LB_AFFINITY_H

#include <stddef.h>
#include <stdint.h>

#define LB_AFFINITY_TOKEN_LEN 22 /* characters, without the terminating NUL */
#define LB_AFFINITY_TOKEN_MAX 64 /* longer cookie values are rejected unread */

/* Writes the token for server_id (a NUL-terminated string) under the secret
 * into out, NUL-terminated. secret is secret_len raw bytes (not necessarily a
 * string) and must not be empty; config validation should demand a long one.
 * Returns 0, or -1 when secret_len is 0 or over INT_MAX, out_len <
 * LB_AFFINITY_TOKEN_LEN + 1, or HMAC fails (out is then an empty string when
 * out_len > 0). Computes one HMAC: fine per server at build time, not meant
 * for the per-request path (use a struct lb_affinity_table). */
int lb_affinity_token(const char *secret, size_t secret_len, const char *server_id, char *out,
                      size_t out_len);

/* The index i such that token names server_ids[i], or -1 when it names none
 * (see the header comment). token is token_len bytes, need not be
 * NUL-terminated. The comparison is constant-time per candidate
 * (CRYPTO_memcmp) and every candidate is compared. Computes n HMACs: for
 * tools and tests; the request path uses lb_affinity_table_lookup(). With
 * duplicate ids the first wins. */
long lb_affinity_lookup(const char *secret, size_t secret_len, const char *const *server_ids,
                        size_t n, const char *token, size_t token_len);

/* Every server's token, computed once per backend (per config generation)
 * from its ids and secret, so the request path is a comparison loop with no
 * HMAC. Immutable after build: any number of threads may look up in it
 * concurrently. Indices are those of the ids array given to build. */
struct lb_affinity_table {
    size_t n;
    char (*tokens)[LB_AFFINITY_TOKEN_LEN + 1]; /* n NUL-terminated tokens */
};

/* Builds the table for n ids (n may be 0). Returns 0, or -1 on a bad secret
 * (see lb_affinity_token), a NULL id, or out of memory; the table is then
 * empty and safe to free. The table owns its storage; the ids and secret are
 * not referenced after the call. */
int lb_affinity_table_build(struct lb_affinity_table *table, const char *secret, size_t secret_len,
                            const char *const *server_ids, size_t n);

/* Frees the storage; safe to call twice and on a table whose build failed. */
void lb_affinity_table_free(struct lb_affinity_table *table);

/* Same contract and result as lb_affinity_lookup() with the build inputs. */
long lb_affinity_table_lookup(const struct lb_affinity_table *table, const char *token,
                              size_t token_len);

/* Server idx's token (LB_AFFINITY_TOKEN_LEN characters, NUL-terminated) for
 * Set-Cookie, owned by the table; NULL when idx >= table->n. */
const char *lb_affinity_table_token(const struct lb_affinity_table *table, size_t idx);

/* Cookie request-header helpers (RFC 6265 section 5.4 "name=value; name=value").
 * Pairs are split on ';' and trimmed of spaces and tabs around them, around
 * the name and around the value; names compare case-sensitively and exactly
 * (LBSRV never matches LBSRV2 or lbsrv). A value is returned as sent,
 * quotes included, and may itself contain '='. A piece without '=' has no name
 * and never matches. Nothing is allocated; results point into header_value. */

/* Finds cookie `name` (a non-empty NUL-terminated string) in the header value
 * (len bytes, need not be NUL-terminated). Returns how many pairs carry that
 * name: 0 (then *value = NULL, *value_len = 0), 1, or more when the client
 * sent duplicates (the caller decides whether to trust any of them). On a
 * match *value / *value_len describe the first one. value and value_len may
 * be NULL when only the count is wanted. */
int lb_cookie_find(const char *header_value, size_t len, const char *name, const char **value,
                   size_t *value_len);

/* Writes the header value without any `name=...` pair into out (out_cap
 * bytes), NUL-terminated, its length in *out_len. When no pair matched, out is
 * a verbatim copy of the input; otherwise the remaining pairs, each
 * byte-identical (trimmed of surrounding whitespace), joined by "; ", and an
 * empty string (*out_len 0: drop the header) when none remains. Returns the
 * number of pairs removed (>= 0), or -1 when out_cap is too small (2 * len + 1
 * always suffices; usually len + 1 does) or an argument is NULL. */
int lb_cookie_remove(const char *header_value, size_t len, const char *name, char *out,
                     size_t out_cap, size_t *out_len);

/* XXH64 (xxHash, 64-bit variant, seed 0), implemented here from its
 * specification: a fast non-cryptographic hash with full avalanche, for hash
 * keys (client address, header/cookie/query value, URI) and Maglev
 * permutations. Stable across builds, hosts, endianness and lb versions: two
 * lb processes map the same key the same way. Not for anything an attacker
 * must not be able to predict or collide (that is the HMAC's job). */
uint64_t lb_hash64(const void *data, size_t len);

/* The same with a seed, for independent hash families (XXH64 with that seed). */
uint64_t lb_hash64_seed(const void *data, size_t len, uint64_t seed);

#endif
