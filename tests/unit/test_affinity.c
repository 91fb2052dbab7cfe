/* Affinity: sticky tokens (format, round trip, every tampered variant
 * refused), Cookie header find/remove tables, XXH64 vectors and distribution. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "affinity.h"

#define SECRET "correct horse battery staple"
#define SECRET_LEN (sizeof(SECRET) - 1)

static const char *const ids[] = {
    "web1",
    "web2",
    "web3",
    "10.0.0.1:8080",
    "10.0.0.2:8080",
    "[2001:db8::7]:443",
    "a",
    "b",
    "app-server-with-a-rather-long-stable-identifier-0123456789",
};
#define N_IDS (sizeof(ids) / sizeof(ids[0]))

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void token_for(const char *secret, size_t secret_len, const char *id, char *out)
{
    assert_int_equal(lb_affinity_token(secret, secret_len, id, out, LB_AFFINITY_TOKEN_LEN + 1), 0);
    assert_int_equal(strlen(out), LB_AFFINITY_TOKEN_LEN);
}

/* Both lookups, which must agree. */
static long lookup_both(const struct lb_affinity_table *t, const char *tok, size_t len)
{
    long direct = lb_affinity_lookup(SECRET, SECRET_LEN, ids, N_IDS, tok, len);
    long table = lb_affinity_table_lookup(t, tok, len);
    assert_int_equal(direct, table);
    return table;
}

/* ---- tokens ---- */

/* Known answers, computed independently with Python's hmac module:
 * base64url(HMAC-SHA256(secret, "lb-affinity-v1:" + id)[:16]) without '='. */
static void test_token_known_answers(void **state)
{
    (void)state;
    static const struct {
        const char *secret, *id, *token;
    } cases[] = {
        {SECRET, "web1", "rtxIVZRRO7FF5C6EWzXgag"},
        {SECRET, "10.0.0.1:8080", "gIFIecWrQ1r_2DeUjoFAOw"},
        {"k", "", "Bd3kNEXCOvLLqsif7lSR8g"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char tok[LB_AFFINITY_TOKEN_LEN + 1];
        token_for(cases[i].secret, strlen(cases[i].secret), cases[i].id, tok);
        assert_string_equal(tok, cases[i].token);
    }
}

static void test_token_format(void **state)
{
    (void)state;
    char seen[N_IDS][LB_AFFINITY_TOKEN_LEN + 1];
    for (size_t i = 0; i < N_IDS; i++) {
        char again[LB_AFFINITY_TOKEN_LEN + 1];
        token_for(SECRET, SECRET_LEN, ids[i], seen[i]);
        token_for(SECRET, SECRET_LEN, ids[i], again);
        assert_string_equal(seen[i], again); /* deterministic, no nonce */
        for (size_t k = 0; k < LB_AFFINITY_TOKEN_LEN; k++)
            assert_non_null(strchr(b64url, seen[i][k]));
        /* 128 bits in 22 characters: the last one carries 2 bits. */
        assert_non_null(strchr("AQgw", seen[i][LB_AFFINITY_TOKEN_LEN - 1]));
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(seen[i], seen[j]);
    }
}

static void test_token_bad_args(void **state)
{
    (void)state;
    char tok[LB_AFFINITY_TOKEN_LEN + 1] = "x";
    assert_int_equal(lb_affinity_token("", 0, "web1", tok, sizeof(tok)), -1);
    assert_string_equal(tok, "");
    assert_int_equal(lb_affinity_token(NULL, 3, "web1", tok, sizeof(tok)), -1);
    assert_int_equal(lb_affinity_token(SECRET, SECRET_LEN, NULL, tok, sizeof(tok)), -1);
    assert_int_equal(lb_affinity_token(SECRET, SECRET_LEN, "web1", tok, sizeof(tok) - 1), -1);
    assert_int_equal(lb_affinity_token(SECRET, SECRET_LEN, "web1", NULL, 0), -1);

    struct lb_affinity_table t;
    assert_int_equal(lb_affinity_table_build(&t, "", 0, ids, N_IDS), -1);
    assert_int_equal(t.n, 0);
    lb_affinity_table_free(&t);
    const char *with_null[] = {"web1", NULL};
    assert_int_equal(lb_affinity_table_build(&t, SECRET, SECRET_LEN, with_null, 2), -1);
    lb_affinity_table_free(&t);
    lb_affinity_table_free(&t);
    assert_int_equal(lb_affinity_table_build(&t, SECRET, SECRET_LEN, NULL, 0), 0);
    assert_null(lb_affinity_table_token(&t, 0));
    assert_int_equal(lb_affinity_table_lookup(&t, "rtxIVZRRO7FF5C6EWzXgag", 22), -1);
    lb_affinity_table_free(&t);
}

/* The secret is raw bytes: an embedded NUL counts, and every byte matters. */
static void test_token_binary_secret(void **state)
{
    (void)state;
    static const char sec[] = {'a', '\0', 'b', 'c'};
    char t4[LB_AFFINITY_TOKEN_LEN + 1], t1[LB_AFFINITY_TOKEN_LEN + 1];
    token_for(sec, sizeof(sec), "web1", t4);
    token_for(sec, 1, "web1", t1);
    assert_string_not_equal(t4, t1);
    assert_int_equal(lb_affinity_lookup(sec, sizeof(sec), ids, N_IDS, t4, strlen(t4)), 0);
    assert_int_equal(lb_affinity_lookup(sec, 1, ids, N_IDS, t4, strlen(t4)), -1);
}

static void test_token_round_trip(void **state)
{
    (void)state;
    struct lb_affinity_table t;
    assert_int_equal(lb_affinity_table_build(&t, SECRET, SECRET_LEN, ids, N_IDS), 0);
    assert_int_equal(t.n, N_IDS);
    for (size_t i = 0; i < N_IDS; i++) {
        char tok[LB_AFFINITY_TOKEN_LEN + 1];
        token_for(SECRET, SECRET_LEN, ids[i], tok);
        assert_string_equal(lb_affinity_table_token(&t, i), tok);
        assert_int_equal(lookup_both(&t, tok, strlen(tok)), (long)i);
        /* Not NUL-terminated: the length is what counts. */
        char padded[LB_AFFINITY_TOKEN_LEN + 8];
        memcpy(padded, tok, LB_AFFINITY_TOKEN_LEN);
        memcpy(padded + LB_AFFINITY_TOKEN_LEN, "; b=2xx", 7);
        assert_int_equal(lookup_both(&t, padded, LB_AFFINITY_TOKEN_LEN), (long)i);
    }
    assert_null(lb_affinity_table_token(&t, N_IDS));
    lb_affinity_table_free(&t);
    lb_affinity_table_free(&t);
}

/* The token names the id, not the position: a reordered list maps a token to
 * the same id, and a token of a removed id maps to nothing. */
static void test_token_survives_reorder(void **state)
{
    (void)state;
    const char *reordered[N_IDS];
    for (size_t i = 0; i < N_IDS; i++)
        reordered[i] = ids[(i * 5 + 3) % N_IDS];
    for (size_t i = 0; i < N_IDS; i++) {
        char tok[LB_AFFINITY_TOKEN_LEN + 1];
        token_for(SECRET, SECRET_LEN, ids[i], tok);
        long k = lb_affinity_lookup(SECRET, SECRET_LEN, reordered, N_IDS, tok, strlen(tok));
        assert_true(k >= 0);
        assert_string_equal(reordered[k], ids[i]);
        /* Without server i in the list the token names nothing. */
        const char *without[N_IDS];
        size_t n = 0;
        for (size_t j = 0; j < N_IDS; j++)
            if (j != i)
                without[n++] = ids[j];
        assert_int_equal(lb_affinity_lookup(SECRET, SECRET_LEN, without, n, tok, strlen(tok)), -1);
    }
}

static void test_token_rejects_tampering(void **state)
{
    (void)state;
    struct lb_affinity_table t;
    assert_int_equal(lb_affinity_table_build(&t, SECRET, SECRET_LEN, ids, N_IDS), 0);
    size_t variants = 0;

    for (size_t i = 0; i < N_IDS; i++) {
        char tok[LB_AFFINITY_TOKEN_LEN + 1];
        token_for(SECRET, SECRET_LEN, ids[i], tok);
        char v[LB_AFFINITY_TOKEN_MAX * 2 + 2];

        /* Every character replaced by every other character of the alphabet
         * (including the non-canonical last characters), and by bytes that
         * are not in it. */
        static const char bad_chars[] = "+/= .;,\"\\\x7f\x80\xff\t";
        for (size_t pos = 0; pos < LB_AFFINITY_TOKEN_LEN; pos++) {
            for (size_t c = 0; c < sizeof(b64url) - 1; c++) {
                if (b64url[c] == tok[pos])
                    continue;
                memcpy(v, tok, LB_AFFINITY_TOKEN_LEN);
                v[pos] = b64url[c];
                assert_int_equal(lookup_both(&t, v, LB_AFFINITY_TOKEN_LEN), -1);
                variants++;
            }
            for (size_t c = 0; c < sizeof(bad_chars); c++) { /* includes NUL */
                memcpy(v, tok, LB_AFFINITY_TOKEN_LEN);
                v[pos] = bad_chars[c];
                assert_int_equal(lookup_both(&t, v, LB_AFFINITY_TOKEN_LEN), -1);
                variants++;
            }
            /* Each bit flipped. */
            for (int bit = 0; bit < 8; bit++) {
                memcpy(v, tok, LB_AFFINITY_TOKEN_LEN);
                v[pos] = (char)(v[pos] ^ (1 << bit));
                assert_int_equal(lookup_both(&t, v, LB_AFFINITY_TOKEN_LEN), -1);
                variants++;
            }
        }
        /* Truncated: every proper prefix, the empty one included. */
        for (size_t len = 0; len < LB_AFFINITY_TOKEN_LEN; len++) {
            assert_int_equal(lookup_both(&t, tok, len), -1);
            variants++;
        }
        /* Extended by one or more valid characters, padding, or itself. */
        const char *const tails[] = {"A", "Ag", "==", "=", "_", tok};
        for (size_t k = 0; k < sizeof(tails) / sizeof(tails[0]); k++) {
            int len = snprintf(v, sizeof(v), "%s%s", tok, tails[k]);
            assert_int_equal(lookup_both(&t, v, (size_t)len), -1);
            variants++;
        }
        /* Quoted, or with surrounding spaces (a caller that forgot to trim). */
        int len = snprintf(v, sizeof(v), "\"%s\"", tok);
        assert_int_equal(lookup_both(&t, v, (size_t)len), -1);
        len = snprintf(v, sizeof(v), " %s", tok);
        assert_int_equal(lookup_both(&t, v, (size_t)len), -1);
        /* Case changed (base64url is case-sensitive). */
        memcpy(v, tok, LB_AFFINITY_TOKEN_LEN);
        for (size_t k = 0; k < LB_AFFINITY_TOKEN_LEN; k++)
            if (v[k] >= 'a' && v[k] <= 'z')
                v[k] = (char)(v[k] - 'a' + 'A');
            else if (v[k] >= 'A' && v[k] <= 'Z')
                v[k] = (char)(v[k] - 'A' + 'a');
        assert_int_equal(lookup_both(&t, v, LB_AFFINITY_TOKEN_LEN), -1);
        variants += 3;
    }

    /* Oversized values: 65 and more bytes, valid characters or not. */
    char big[4096];
    memset(big, 'A', sizeof(big));
    for (size_t len = LB_AFFINITY_TOKEN_MAX + 1; len <= sizeof(big); len *= 2)
        assert_int_equal(lookup_both(&t, big, len), -1);
    assert_int_equal(lookup_both(&t, big, LB_AFFINITY_TOKEN_MAX), -1);
    /* Empty, NULL. */
    assert_int_equal(lookup_both(&t, "", 0), -1);
    assert_int_equal(lb_affinity_table_lookup(&t, NULL, 22), -1);
    assert_int_equal(lb_affinity_lookup(SECRET, SECRET_LEN, ids, N_IDS, NULL, 22), -1);
    /* All-'A' and all-'_' tokens of the right length. */
    assert_int_equal(lookup_both(&t, big, LB_AFFINITY_TOKEN_LEN), -1);
    memset(big, '_', LB_AFFINITY_TOKEN_LEN);
    assert_int_equal(lookup_both(&t, big, LB_AFFINITY_TOKEN_LEN), -1);

    /* A token made with another secret, or with a secret differing in one
     * byte or in length, for an id that is in the list. */
    static const char *const others[] = {"correct horse battery stapler", "correct horse battery",
                                         "Correct horse battery staple", "x"};
    for (size_t k = 0; k < sizeof(others) / sizeof(others[0]); k++) {
        for (size_t i = 0; i < N_IDS; i++) {
            char tok[LB_AFFINITY_TOKEN_LEN + 1], mine[LB_AFFINITY_TOKEN_LEN + 1];
            token_for(others[k], strlen(others[k]), ids[i], tok);
            token_for(SECRET, SECRET_LEN, ids[i], mine);
            assert_string_not_equal(tok, mine); /* tokens differ across secrets */
            assert_int_equal(lookup_both(&t, tok, strlen(tok)), -1);
            variants++;
        }
    }
    /* A valid token (right secret) for ids not in the list, including ids
     * that differ from listed ones only slightly. */
    static const char *const strangers[] = {"web4",  "web",           "web10", "Web1", "web1 ",
                                            " web1", "10.0.0.1:8081", "",      "c"};
    for (size_t k = 0; k < sizeof(strangers) / sizeof(strangers[0]); k++) {
        char tok[LB_AFFINITY_TOKEN_LEN + 1];
        token_for(SECRET, SECRET_LEN, strangers[k], tok);
        assert_int_equal(lookup_both(&t, tok, strlen(tok)), -1);
        variants++;
    }
    print_message("rejected %zu tampered tokens\n", variants);
    lb_affinity_table_free(&t);
}

/* The token does not carry the id or the address in clear: no substring of
 * 3 or more characters of the id appears in it (the alphabet excludes '.'
 * and ':', so addresses are checked on their digit runs too). */
static void test_token_leaks_nothing(void **state)
{
    (void)state;
    static const char *const secrets[] = {SECRET, "s", "another secret"};
    for (size_t s = 0; s < sizeof(secrets) / sizeof(secrets[0]); s++) {
        for (size_t i = 0; i < N_IDS; i++) {
            char tok[LB_AFFINITY_TOKEN_LEN + 1];
            token_for(secrets[s], strlen(secrets[s]), ids[i], tok);
            size_t len = strlen(ids[i]);
            for (size_t a = 0; a + 4 <= len; a++) {
                char sub[5];
                memcpy(sub, ids[i] + a, 4);
                sub[4] = '\0';
                if (strstr(tok, sub) != NULL)
                    fail_msg("token %s for %s contains \"%s\"", tok, ids[i], sub);
            }
        }
    }
}

static void test_token_duplicate_ids_first_wins(void **state)
{
    (void)state;
    const char *dup[] = {"x", "web1", "y", "web1"};
    char tok[LB_AFFINITY_TOKEN_LEN + 1];
    token_for(SECRET, SECRET_LEN, "web1", tok);
    struct lb_affinity_table t;
    assert_int_equal(lb_affinity_table_build(&t, SECRET, SECRET_LEN, dup, 4), 0);
    assert_int_equal(lb_affinity_table_lookup(&t, tok, LB_AFFINITY_TOKEN_LEN), 1);
    assert_int_equal(lb_affinity_lookup(SECRET, SECRET_LEN, dup, 4, tok, LB_AFFINITY_TOKEN_LEN), 1);
    lb_affinity_table_free(&t);
}

/* ---- Cookie header ---- */

struct find_case {
    const char *header;
    const char *name;
    int count;
    const char *value; /* NULL when count is 0 */
};

static const struct find_case find_cases[] = {
    {"a=1; LBSRV=x; b=2", "LBSRV", 1, "x"},
    {"LBSRV=x", "LBSRV", 1, "x"},
    {"a=1", "LBSRV", 0, NULL},
    {"", "LBSRV", 0, NULL},
    {";", "LBSRV", 0, NULL},
    {"LBSRV2=y; LBSRV=x", "LBSRV", 1, "x"},
    {"LBSRV2=y", "LBSRV", 0, NULL},
    {"XLBSRV=y", "LBSRV", 0, NULL},
    {"LBSRV=x", "LBSRV2", 0, NULL},
    {"LBSRV=x", "LBSR", 0, NULL},
    {"lbsrv=x", "LBSRV", 0, NULL},
    {"  LBSRV = x ;b=2", "LBSRV", 1, "x"},
    {"\tLBSRV=x\t", "LBSRV", 1, "x"},
    {"a=1;LBSRV=x;b=2", "LBSRV", 1, "x"},
    {"a=1 ;  LBSRV=x  ; b=2", "LBSRV", 1, "x"},
    {"LBSRV=a=b=c", "LBSRV", 1, "a=b=c"},
    {"LBSRV==", "LBSRV", 1, "="},
    {"LBSRV=x; LBSRV=y", "LBSRV", 2, "x"},
    {"a=1; LBSRV=y; LBSRV=x; LBSRV=z", "LBSRV", 3, "y"},
    {"LBSRV=", "LBSRV", 1, ""},
    {"LBSRV=; a=1", "LBSRV", 1, ""},
    {"LBSRV", "LBSRV", 0, NULL},
    {"LBSRV; a=1", "LBSRV", 0, NULL},
    {";;LBSRV=x;;", "LBSRV", 1, "x"},
    {"LBSRV=\"x y\"", "LBSRV", 1, "\"x y\""},
    {"=x; LBSRV=v", "LBSRV", 1, "v"},
    {"a=LBSRV=x", "LBSRV", 0, NULL},
    {"a=1; b=LBSRV; LBSRV=ok", "LBSRV", 1, "ok"},
    {"LBSRV=x y", "LBSRV", 1, "x y"},
    {"a=1", "", 0, NULL},
};

static void test_cookie_find(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(find_cases) / sizeof(find_cases[0]); i++) {
        const struct find_case *c = &find_cases[i];
        const char *value = (const char *)1;
        size_t value_len = 99;
        int count = lb_cookie_find(c->header, strlen(c->header), c->name, &value, &value_len);
        if (count != c->count)
            fail_msg("case %zu \"%s\": count %d, want %d", i, c->header, count, c->count);
        if (c->value == NULL) {
            assert_null(value);
            assert_int_equal(value_len, 0);
            continue;
        }
        assert_non_null(value);
        assert_true(value >= c->header && value + value_len <= c->header + strlen(c->header));
        if (value_len != strlen(c->value) || memcmp(value, c->value, value_len) != 0)
            fail_msg("case %zu \"%s\": value \"%.*s\", want \"%s\"", i, c->header, (int)value_len,
                     value, c->value);
        /* Count only. */
        assert_int_equal(lb_cookie_find(c->header, strlen(c->header), c->name, NULL, NULL),
                         c->count);
    }
}

/* The header is a slice: bytes past len are not read. */
static void test_cookie_find_slice(void **state)
{
    (void)state;
    const char *h = "a=1; LBSRV=x; LBSRV=y";
    const char *value;
    size_t value_len;
    assert_int_equal(lb_cookie_find(h, 12, "LBSRV", &value, &value_len), 1);
    assert_int_equal(value_len, 1);
    assert_memory_equal(value, "x", 1);
    assert_int_equal(lb_cookie_find(h, 11, "LBSRV", &value, &value_len), 1); /* "LBSRV=" */
    assert_int_equal(value_len, 0);
    assert_int_equal(lb_cookie_find(h, 10, "LBSRV", &value, &value_len), 0); /* "LBSRV" */
    assert_int_equal(lb_cookie_find(h, 9, "LBSRV", &value, &value_len), 0);
    assert_int_equal(lb_cookie_find(h, 0, "LBSRV", &value, &value_len), 0);
}

struct remove_case {
    const char *header;
    const char *name;
    int removed;
    const char *out;
};

static const struct remove_case remove_cases[] = {
    {"a=1; LBSRV=x; b=2", "LBSRV", 1, "a=1; b=2"},
    {"LBSRV=x", "LBSRV", 1, ""},
    {"LBSRV=", "LBSRV", 1, ""},
    {"  LBSRV=x ; ", "LBSRV", 1, ""},
    {"LBSRV=x; LBSRV=y", "LBSRV", 2, ""},
    {"LBSRV=x; a=1; LBSRV=y; b=2; LBSRV=z", "LBSRV", 3, "a=1; b=2"},
    {"LBSRV=x; a=1", "LBSRV", 1, "a=1"},
    {"a=1; LBSRV=x", "LBSRV", 1, "a=1"},
    {"LBSRV2=y; LBSRV=x; XLBSRV=z", "LBSRV", 1, "LBSRV2=y; XLBSRV=z"},
    {"LBSRV2=y; lbsrv=z", "LBSRV", 0, "LBSRV2=y; lbsrv=z"},
    {"a=1;LBSRV=x;b=2", "LBSRV", 1, "a=1; b=2"},
    {"  a=1 ;  LBSRV=x ;\tb=2  ", "LBSRV", 1, "a=1; b=2"},
    {"a=1; LBSRV = x; b=2", "LBSRV", 1, "a=1; b=2"},
    {"a=b=c; LBSRV=x=y; d==", "LBSRV", 1, "a=b=c; d=="},
    {"a=1; flag; LBSRV=x", "LBSRV", 1, "a=1; flag"},
    {"a=1;; LBSRV=x;;b=2;", "LBSRV", 1, "a=1; b=2"},
    {"sid=\"abc def\"; LBSRV=x; t=a%3Db", "LBSRV", 1, "sid=\"abc def\"; t=a%3Db"},
    {"a = 1; LBSRV=x", "LBSRV", 1, "a = 1"},
    {"a=LBSRV=x; LBSRV=y", "LBSRV", 1, "a=LBSRV=x"},
    /* Nothing matches: a verbatim copy, odd separators and all. */
    {"a=1; b=2", "LBSRV", 0, "a=1; b=2"},
    {"a=1;b=2", "LBSRV", 0, "a=1;b=2"},
    {" a=1 ;; b=2 ", "LBSRV", 0, " a=1 ;; b=2 "},
    {"", "LBSRV", 0, ""},
};

static void test_cookie_remove(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(remove_cases) / sizeof(remove_cases[0]); i++) {
        const struct remove_case *c = &remove_cases[i];
        size_t len = strlen(c->header);
        char out[256];
        size_t out_len = 99;
        memset(out, 'Z', sizeof(out));
        int removed = lb_cookie_remove(c->header, len, c->name, out, sizeof(out), &out_len);
        if (removed != c->removed || out_len != strlen(c->out) || strcmp(out, c->out) != 0)
            fail_msg("case %zu \"%s\": removed %d \"%s\", want %d \"%s\"", i, c->header, removed,
                     out, c->removed, c->out);
        /* Nothing of the name is left, and the result fits in len + 1. */
        assert_int_equal(lb_cookie_find(out, out_len, c->name, NULL, NULL), 0);
        char tight[256];
        assert_int_equal(lb_cookie_remove(c->header, len, c->name, tight, len + 1, &out_len),
                         c->removed);
        assert_string_equal(tight, c->out);
    }
}

static void test_cookie_remove_capacity(void **state)
{
    (void)state;
    const char *h = "a=1; LBSRV=x; b=2";
    char out[32];
    size_t out_len = 5;
    /* "a=1; b=2" needs 9 bytes with its NUL. */
    assert_int_equal(lb_cookie_remove(h, strlen(h), "LBSRV", out, 8, &out_len), -1);
    assert_int_equal(out_len, 0);
    assert_string_equal(out, "");
    assert_int_equal(lb_cookie_remove(h, strlen(h), "LBSRV", out, 9, &out_len), 1);
    assert_string_equal(out, "a=1; b=2");
    /* A verbatim copy needs len + 1. */
    assert_int_equal(lb_cookie_remove("a=1", 3, "LBSRV", out, 3, &out_len), -1);
    assert_int_equal(lb_cookie_remove("a=1", 3, "LBSRV", out, 4, &out_len), 0);
    /* The one case that grows: tightly packed pieces get "; " separators;
     * 2 * len + 1 is always enough. */
    h = "a;b;c;d;e;f;LBSRV=";
    char big[64];
    assert_int_equal(lb_cookie_remove(h, strlen(h), "LBSRV", big, 2 * strlen(h) + 1, &out_len), 1);
    assert_string_equal(big, "a; b; c; d; e; f");
    /* Bad arguments. */
    assert_int_equal(lb_cookie_remove(NULL, 0, "LBSRV", out, sizeof(out), &out_len), -1);
    assert_int_equal(lb_cookie_remove(h, strlen(h), NULL, out, sizeof(out), &out_len), -1);
    assert_int_equal(lb_cookie_remove(h, strlen(h), "LBSRV", NULL, 0, &out_len), -1);
    assert_int_equal(lb_cookie_remove(h, strlen(h), "LBSRV", out, sizeof(out), NULL), -1);
}

/* The whole path a request takes: find the token, look it up, strip it. */
static void test_cookie_token_end_to_end(void **state)
{
    (void)state;
    struct lb_affinity_table t;
    assert_int_equal(lb_affinity_table_build(&t, SECRET, SECRET_LEN, ids, N_IDS), 0);
    char header[256];
    snprintf(header, sizeof(header), "theme=dark; LBSRV=%s; sid=\"q=1\"",
             lb_affinity_table_token(&t, 4));
    const char *value;
    size_t value_len;
    assert_int_equal(lb_cookie_find(header, strlen(header), "LBSRV", &value, &value_len), 1);
    assert_int_equal(lb_affinity_table_lookup(&t, value, value_len), 4);
    char out[256];
    size_t out_len;
    assert_int_equal(lb_cookie_remove(header, strlen(header), "LBSRV", out, sizeof(out), &out_len),
                     1);
    assert_string_equal(out, "theme=dark; sid=\"q=1\"");
    lb_affinity_table_free(&t);
}

/* ---- XXH64 ---- */

static void test_hash64_vectors(void **state)
{
    (void)state;
    /* Published XXH64 values (python-xxhash documentation, .NET and other
     * implementations' test suites); the long ones run the 32-byte stripes. */
    static const struct {
        const char *data;
        uint64_t seed;
        uint64_t hash;
    } cases[] = {
        {"", 0, 0xEF46DB3751D8E999ULL},
        {"a", 0, 0xD24EC4F1A98C6E5BULL},
        {"abc", 0, 0x44BC2CF5AD770999ULL},
        {"xxhash", 0, 0x32DD38952C4BC720ULL},
        {"xxhash", 20141025, 0xB559B98D844E0635ULL},
        {"I want an unsigned 64-bit seed!", 0, 0xD4CB0A70A2B8C7C1ULL},
        {"I want an unsigned 64-bit seed!", 1, 0xCE5087F12470D961ULL},
        {"0123456789abcdef0123456789abcdef", 0, 0x642A94958E71E6C5ULL},
        {"Nobody inspects the spammish repetition", 0, 0xFBCEA83C8A378BF1ULL},
        {"The quick brown fox jumps over the lazy dog", 0, 0x0B242D361FDA71BCULL},
        {"The quick brown fox jumps over the lazy dog.", 0, 0x44AD33705751AD73ULL},
        {"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 0, 0x856E843298F99AD7ULL},
        {"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", 0,
         0xECBAF4BDF26B6349ULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t h = lb_hash64_seed(cases[i].data, strlen(cases[i].data), cases[i].seed);
        if (h != cases[i].hash)
            fail_msg("case %zu \"%s\": %016llx, want %016llx", i, cases[i].data,
                     (unsigned long long)h, (unsigned long long)cases[i].hash);
        if (cases[i].seed == 0)
            assert_true(lb_hash64(cases[i].data, strlen(cases[i].data)) == h);
    }
    unsigned char hundred[100];
    for (size_t i = 0; i < sizeof(hundred); i++)
        hundred[i] = (unsigned char)i;
    assert_true(lb_hash64(hundred, sizeof(hundred)) == 0x6AC1E58032166597ULL);
    /* lb's own keys, pinned so that a change of the hash (which would remap
     * every hash-affinity user) cannot go unnoticed. */
    assert_true(lb_hash64("10.0.0.1", 8) == 0xED16CB68C786E3D7ULL);
    assert_true(lb_hash64("user-42", 7) == 0x397E9D3A76AF7C81ULL);
    /* NULL is the empty input. */
    assert_true(lb_hash64(NULL, 0) == 0xEF46DB3751D8E999ULL);
}

/* The same bytes at any alignment hash the same. */
static void test_hash64_alignment(void **state)
{
    (void)state;
    unsigned char buf[128 + 8];
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    for (size_t len = 0; len <= 100; len += 3) {
        uint64_t want = lb_hash64(buf, len);
        unsigned char copy[128 + 8];
        for (size_t off = 1; off < 8; off++) {
            memcpy(copy + off, buf, len);
            assert_true(lb_hash64(copy + off, len) == want);
        }
    }
}

static double chi_square(const unsigned *counts, size_t buckets, size_t total)
{
    double expect = (double)total / (double)buckets;
    double x2 = 0;
    for (size_t b = 0; b < buckets; b++)
        x2 += ((double)counts[b] - expect) * ((double)counts[b] - expect) / expect;
    return x2;
}

/* Similar keys spread evenly over buckets taken from the low bits, the high
 * bits and mod a prime, and each input bit flips about half the output bits. */
static void test_hash64_distribution(void **state)
{
    (void)state;
    enum { KEYS = 100000, BUCKETS = 64 };
    unsigned lo[BUCKETS] = {0}, hi[BUCKETS] = {0}, mod[61] = {0}, seq[BUCKETS] = {0};
    for (unsigned i = 0; i < KEYS; i++) {
        char key[32];
        int len = snprintf(key, sizeof(key), "user-%u", i);
        uint64_t h = lb_hash64(key, (size_t)len);
        lo[h % BUCKETS]++;
        hi[h >> 58]++;
        mod[h % 61]++;
        unsigned char le[4] = {(unsigned char)i, (unsigned char)(i >> 8), (unsigned char)(i >> 16),
                               (unsigned char)(i >> 24)};
        seq[lb_hash64(le, 4) % BUCKETS]++;
    }
    /* 63 (60) degrees of freedom: 120 (115) is far beyond the 99.99th percentile. */
    double x_lo = chi_square(lo, BUCKETS, KEYS), x_hi = chi_square(hi, BUCKETS, KEYS);
    double x_mod = chi_square(mod, 61, KEYS), x_seq = chi_square(seq, BUCKETS, KEYS);
    print_message("chi2: low bits %.1f, high bits %.1f, mod 61 %.1f, 4-byte counters %.1f\n", x_lo,
                  x_hi, x_mod, x_seq);
    assert_true(x_lo < 120 && x_hi < 120 && x_seq < 120);
    assert_true(x_mod < 115);

    /* Avalanche over 16-byte inputs. */
    unsigned long long flipped = 0, trials = 0;
    unsigned per_bit[64] = {0};
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (int t = 0; t < 500; t++) {
        unsigned char in[16];
        for (size_t k = 0; k < sizeof(in); k++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            in[k] = (unsigned char)x;
        }
        uint64_t h0 = lb_hash64(in, sizeof(in));
        for (int bit = 0; bit < 128; bit++) {
            in[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            uint64_t d = h0 ^ lb_hash64(in, sizeof(in));
            in[bit / 8] ^= (unsigned char)(1u << (bit % 8));
            flipped += (unsigned long long)__builtin_popcountll(d);
            for (int o = 0; o < 64; o++)
                per_bit[o] += (unsigned)((d >> o) & 1);
            trials++;
        }
    }
    double avg = (double)flipped / (double)trials;
    print_message("avalanche: %.2f of 64 output bits flip per input bit\n", avg);
    assert_true(avg > 31.0 && avg < 33.0);
    for (int o = 0; o < 64; o++) {
        double p = (double)per_bit[o] / (double)trials;
        assert_true(p > 0.46 && p < 0.54);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_known_answers),
        cmocka_unit_test(test_token_format),
        cmocka_unit_test(test_token_bad_args),
        cmocka_unit_test(test_token_binary_secret),
        cmocka_unit_test(test_token_round_trip),
        cmocka_unit_test(test_token_survives_reorder),
        cmocka_unit_test(test_token_rejects_tampering),
        cmocka_unit_test(test_token_leaks_nothing),
        cmocka_unit_test(test_token_duplicate_ids_first_wins),
        cmocka_unit_test(test_cookie_find),
        cmocka_unit_test(test_cookie_find_slice),
        cmocka_unit_test(test_cookie_remove),
        cmocka_unit_test(test_cookie_remove_capacity),
        cmocka_unit_test(test_cookie_token_end_to_end),
        cmocka_unit_test(test_hash64_vectors),
        cmocka_unit_test(test_hash64_alignment),
        cmocka_unit_test(test_hash64_distribution),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
