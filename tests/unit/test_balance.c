/* Balancing algorithms, through the ops tables: exact weight distribution,
 * smoothness, rotation among equals, retries that skip tried servers, and
 * health: down and ejected servers are never picked, slow start ramps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "balance.h"

#define MAX_SERVERS 8

/* A backend built by hand: servers named "a", "b", ... with the given
 * weights and in-flight counts, so tests can print and compare by name. */
struct fixture {
    struct lb_backend backend;
    struct lb_server servers[MAX_SERVERS];
};

static void fixture_init(struct fixture *f, const unsigned *weights, const int *active, size_t n)
{
    assert_true(n <= MAX_SERVERS);
    memset(f, 0, sizeof(*f));
    snprintf(f->backend.name, sizeof(f->backend.name), "test");
    f->backend.servers = f->servers;
    f->backend.n_servers = n;
    for (size_t i = 0; i < n; i++) {
        struct lb_server *s = &f->servers[i];
        snprintf(s->id, sizeof(s->id), "%c", (char)('a' + i));
        s->weight = weights[i];
        s->index = (unsigned)i;
        atomic_init(&s->active, active ? active[i] : 0);
        atomic_init(&s->up, true);
    }
}

static size_t index_of(const struct fixture *f, const struct lb_server *s)
{
    assert_non_null(s);
    assert_true(s >= f->servers && s < f->servers + f->backend.n_servers);
    return (size_t)(s - f->servers);
}

/* `n` picks as a string of server names, e.g. "aabacaa". */
static void pick_string(const struct lb_balancer_ops *ops, void *st, const struct fixture *f,
                        const struct lb_pick_ctx *ctx, char *out, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)('a' + index_of(f, ops->pick(st, ctx)));
    out[n] = '\0';
}

static void *create_checked(const struct lb_balancer_ops *ops, const struct fixture *f)
{
    void *st = ops->create(&f->backend);
    assert_non_null(st);
    return st;
}

/* ---- lookup ---- */

static void test_find(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        const struct lb_balancer_ops *want;
    } cases[] = {
        {"roundrobin", &lb_balance_roundrobin},
        {"leastconn", &lb_balance_leastconn},
        {"RoundRobin", NULL},
        {"roundrobin ", NULL},
        {"round", NULL},
        {"random", NULL},
        {"", NULL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct lb_balancer_ops *got = lb_balancer_find(cases[i].name);
        if (got != cases[i].want)
            fail_msg("lb_balancer_find(\"%s\") gave the wrong ops", cases[i].name);
    }
    assert_null(lb_balancer_find(NULL));
}

static void test_ops_complete(void **state)
{
    (void)state;
    const struct lb_balancer_ops *all[] = {&lb_balance_roundrobin, &lb_balance_leastconn};
    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        assert_non_null(all[i]->name);
        assert_ptr_equal(lb_balancer_find(all[i]->name), all[i]);
        assert_non_null(all[i]->create);
        assert_non_null(all[i]->destroy);
        assert_non_null(all[i]->pick);
    }
}

static void test_pick_tried(void **state)
{
    (void)state;
    static struct lb_server s[LB_MAX_TRIED + 1];
    struct lb_pick_ctx ctx = {0};

    assert_false(lb_pick_tried(&ctx, &s[0]));
    assert_false(lb_pick_tried(NULL, &s[0]));

    ctx.tried[ctx.n_tried++] = &s[1];
    assert_false(lb_pick_tried(&ctx, &s[0]));
    assert_true(lb_pick_tried(&ctx, &s[1]));

    /* A full list: every entry counts, nothing past it does. */
    ctx.n_tried = 0;
    for (unsigned i = 0; i < LB_MAX_TRIED; i++)
        ctx.tried[ctx.n_tried++] = &s[i];
    for (unsigned i = 0; i < LB_MAX_TRIED; i++)
        assert_true(lb_pick_tried(&ctx, &s[i]));
    assert_false(lb_pick_tried(&ctx, &s[LB_MAX_TRIED]));

    /* Entries past n_tried are stale and must not count. */
    ctx.n_tried = 2;
    assert_true(lb_pick_tried(&ctx, &s[1]));
    assert_false(lb_pick_tried(&ctx, &s[2]));
}

/* ---- roundrobin ---- */

/* Over any number of picks that is a multiple of sum(weights), smooth WRR
 * gives each server exactly its share, and it does so in every consecutive
 * block of sum(weights) picks, not just in total. */
static void test_rr_weights_exact(void **state)
{
    (void)state;
    static const struct {
        unsigned weights[MAX_SERVERS];
        size_t n;
        size_t picks;
    } cases[] = {
        {{5, 1, 1}, 3, 700},
        {{1, 1, 1}, 3, 999},
        {{3, 2, 1}, 3, 1200},
        {{1, 2, 3, 4}, 4, 1000},
        {{1000, 1}, 2, 1001 * 3},
        {{7}, 1, 700},
        {{2, 2, 2, 2, 2, 2, 2, 2}, 8, 1600},
        {{1, 9}, 2, 1000},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct fixture f;
        fixture_init(&f, cases[c].weights, NULL, cases[c].n);
        unsigned sum = 0;
        for (size_t i = 0; i < cases[c].n; i++)
            sum += cases[c].weights[i];
        assert_int_equal(cases[c].picks % sum, 0);

        void *st = create_checked(&lb_balance_roundrobin, &f);
        struct lb_pick_ctx ctx = {0};
        unsigned total[MAX_SERVERS] = {0}, block[MAX_SERVERS] = {0};
        for (size_t p = 1; p <= cases[c].picks; p++) {
            size_t i = index_of(&f, lb_balance_roundrobin.pick(st, &ctx));
            total[i]++;
            block[i]++;
            if (p % sum != 0)
                continue;
            for (size_t k = 0; k < cases[c].n; k++) {
                if (block[k] != cases[c].weights[k])
                    fail_msg("case %zu, picks %zu..%zu: server %zu got %u, weight %u", c,
                             p - sum + 1, p, k, block[k], cases[c].weights[k]);
                block[k] = 0;
            }
        }
        for (size_t k = 0; k < cases[c].n; k++)
            assert_int_equal(total[k], cases[c].picks / sum * cases[c].weights[k]);
        lb_balance_roundrobin.destroy(st);
    }
}

/* nginx's example: weights 5,1,1 interleave as a a b a c a a, never a burst
 * of five a's; the pattern repeats every 7 picks. */
static void test_rr_smooth_511(void **state)
{
    (void)state;
    static const unsigned w[] = {5, 1, 1};
    struct fixture f;
    fixture_init(&f, w, NULL, 3);
    void *st = create_checked(&lb_balance_roundrobin, &f);
    struct lb_pick_ctx ctx = {0};

    char seq[701];
    pick_string(&lb_balance_roundrobin, st, &f, &ctx, seq, 700);
    for (size_t i = 0; i < 700; i += 7) {
        if (memcmp(seq + i, "aabacaa", 7) != 0)
            fail_msg("picks %zu..%zu are \"%.7s\", want \"aabacaa\"", i, i + 6, seq + i);
    }
    lb_balance_roundrobin.destroy(st);
}

/* Other known smooth sequences, each from a fresh state. */
static void test_rr_sequences(void **state)
{
    (void)state;
    static const struct {
        unsigned weights[MAX_SERVERS];
        size_t n;
        const char *want;
    } cases[] = {
        {{1, 1, 1}, 3, "abcabcabc"},
        {{3, 2, 1}, 3, "abacbaabacba"},
        {{2, 1}, 2, "abaaba"},
        {{1, 2}, 2, "babbab"},
        {{4, 2, 1, 1}, 4, "abacdabaabacdaba"},
        {{1, 1, 1, 1}, 4, "abcdabcdabcd"},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct fixture f;
        fixture_init(&f, cases[c].weights, NULL, cases[c].n);
        void *st = create_checked(&lb_balance_roundrobin, &f);
        struct lb_pick_ctx ctx = {0};
        size_t len = strlen(cases[c].want);
        char got[64];
        pick_string(&lb_balance_roundrobin, st, &f, &ctx, got, len);
        if (strcmp(got, cases[c].want) != 0)
            fail_msg("case %zu: picks \"%s\", want \"%s\"", c, got, cases[c].want);
        lb_balance_roundrobin.destroy(st);
    }
}

static void test_rr_single(void **state)
{
    (void)state;
    static const unsigned weights[][1] = {{1}, {1000}};
    for (size_t c = 0; c < 2; c++) {
        struct fixture f;
        fixture_init(&f, weights[c], NULL, 1);
        void *st = create_checked(&lb_balance_roundrobin, &f);
        struct lb_pick_ctx ctx = {0};
        for (int i = 0; i < 100; i++)
            assert_ptr_equal(lb_balance_roundrobin.pick(st, &ctx), &f.servers[0]);
        /* Its only server already failed this request: nothing is left. */
        ctx.tried[ctx.n_tried++] = &f.servers[0];
        assert_null(lb_balance_roundrobin.pick(st, &ctx));
        lb_balance_roundrobin.destroy(st);
    }
}

static void test_rr_empty(void **state)
{
    (void)state;
    struct fixture f;
    fixture_init(&f, NULL, NULL, 0);
    void *st = create_checked(&lb_balance_roundrobin, &f);
    struct lb_pick_ctx ctx = {0};
    assert_null(lb_balance_roundrobin.pick(st, &ctx));
    lb_balance_roundrobin.destroy(st);
}

static void test_rr_tried(void **state)
{
    (void)state;
    static const unsigned w[] = {1, 1, 1};
    struct fixture f;
    fixture_init(&f, w, NULL, 3);
    void *st = create_checked(&lb_balance_roundrobin, &f);
    struct lb_pick_ctx ctx = {0};

    /* b is out: a and c alternate and b is never picked. */
    ctx.tried[ctx.n_tried++] = &f.servers[1];
    char got[101];
    pick_string(&lb_balance_roundrobin, st, &f, &ctx, got, 100);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(got[i], i % 2 ? 'c' : 'a');

    /* All tried: NULL, every time, and the state survives it. */
    ctx.tried[ctx.n_tried++] = &f.servers[0];
    ctx.tried[ctx.n_tried++] = &f.servers[2];
    for (int i = 0; i < 3; i++)
        assert_null(lb_balance_roundrobin.pick(st, &ctx));
    ctx.n_tried = 0;
    unsigned count[3] = {0};
    for (int i = 0; i < 300; i++)
        count[index_of(&f, lb_balance_roundrobin.pick(st, &ctx))]++;
    for (int i = 0; i < 3; i++)
        assert_int_equal(count[i], 100);
    lb_balance_roundrobin.destroy(st);
}

/* The retry loop as conn.c runs it: pick, add to tried, pick again. Every
 * server comes up exactly once, then NULL. */
static void test_rr_retry_walks_all(void **state)
{
    (void)state;
    static const unsigned w[] = {5, 1, 3, 1};
    struct fixture f;
    fixture_init(&f, w, NULL, 4);
    void *st = create_checked(&lb_balance_roundrobin, &f);
    for (int round = 0; round < 50; round++) {
        struct lb_pick_ctx ctx = {0};
        unsigned seen = 0;
        for (int k = 0; k < 4; k++) {
            struct lb_server *s = lb_balance_roundrobin.pick(st, &ctx);
            size_t i = index_of(&f, s);
            assert_false(seen & (1u << i));
            seen |= 1u << i;
            ctx.tried[ctx.n_tried++] = s;
        }
        assert_int_equal(seen, 0xf);
        assert_null(lb_balance_roundrobin.pick(st, &ctx));
    }
    lb_balance_roundrobin.destroy(st);
}

/* Each worker has its own state: one worker's picks do not move another's. */
static void test_rr_state_per_worker(void **state)
{
    (void)state;
    static const unsigned w[] = {5, 1, 1};
    struct fixture f;
    fixture_init(&f, w, NULL, 3);
    void *w1 = create_checked(&lb_balance_roundrobin, &f);
    void *w2 = create_checked(&lb_balance_roundrobin, &f);
    struct lb_pick_ctx ctx = {0};
    char got[8];
    pick_string(&lb_balance_roundrobin, w1, &f, &ctx, got, 3);
    assert_string_equal(got, "aab");
    pick_string(&lb_balance_roundrobin, w2, &f, &ctx, got, 7);
    assert_string_equal(got, "aabacaa");
    pick_string(&lb_balance_roundrobin, w1, &f, &ctx, got, 4);
    assert_string_equal(got, "acaa");
    lb_balance_roundrobin.destroy(w1);
    lb_balance_roundrobin.destroy(w2);
}

/* ---- leastconn ---- */

/* One pick from a fresh state against fixed counts. */
static void test_lc_least_active(void **state)
{
    (void)state;
    static const struct {
        unsigned weights[MAX_SERVERS];
        int active[MAX_SERVERS];
        size_t n;
        size_t want;
    } cases[] = {
        {{1, 1, 1}, {3, 1, 2}, 3, 1},
        {{1, 1, 1}, {0, 5, 5}, 3, 0},
        {{1, 1, 1}, {5, 5, 0}, 3, 2},
        {{1, 1, 1, 1}, {9, 8, 7, 100}, 4, 2},
        /* Weight: b carries three times a's load per unit of weight. */
        {{1, 3}, {1, 2}, 2, 1},  /* 1/1 vs 2/3 */
        {{1, 3}, {1, 4}, 2, 0},  /* 1/1 vs 4/3 */
        {{1, 3}, {0, 1}, 2, 0},  /* idle beats anything busy */
        {{10, 1}, {9, 1}, 2, 0}, /* 0.9 vs 1 */
        {{10, 1}, {11, 1}, 2, 1},
        {{2, 3, 5}, {4, 6, 9}, 3, 2}, /* 2, 2, 1.8 */
        {{1000, 1}, {1999, 2}, 2, 0},
        {{1000, 1}, {2001, 2}, 2, 1},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct fixture f;
        fixture_init(&f, cases[c].weights, cases[c].active, cases[c].n);
        void *st = create_checked(&lb_balance_leastconn, &f);
        struct lb_pick_ctx ctx = {0};
        /* A unique least stays the pick however often we ask, since pick
         * itself does not touch the counts. */
        for (int k = 0; k < 5; k++) {
            size_t got = index_of(&f, lb_balance_leastconn.pick(st, &ctx));
            if (got != cases[c].want)
                fail_msg("case %zu pick %d: server %zu, want %zu", c, k, got, cases[c].want);
        }
        for (size_t i = 0; i < cases[c].n; i++)
            assert_int_equal(atomic_load(&f.servers[i].active), cases[c].active[i]);
        lb_balance_leastconn.destroy(st);
    }
}

/* Equal servers share evenly, in rotation; servers above the least share
 * nothing. */
static void test_lc_ties_spread(void **state)
{
    (void)state;
    static const struct {
        unsigned weights[MAX_SERVERS];
        int active[MAX_SERVERS];
        size_t n;
        unsigned want[MAX_SERVERS]; /* out of 1200 picks */
    } cases[] = {
        {{1, 1, 1, 1}, {0, 0, 0, 0}, 4, {300, 300, 300, 300}},
        {{1, 1, 1}, {2, 2, 5}, 3, {600, 600, 0}},
        {{1, 1, 1}, {5, 2, 2}, 3, {0, 600, 600}},
        {{1, 1, 1, 1}, {1, 3, 1, 3}, 4, {600, 0, 600, 0}},
        {{1, 3}, {1, 3}, 2, {600, 600}}, /* equal per unit of weight */
        {{1, 5, 2}, {0, 0, 0}, 3, {400, 400, 400}},
        {{1, 1, 1, 1, 1, 1}, {4, 4, 4, 4, 4, 4}, 6, {200, 200, 200, 200, 200, 200}},
    };
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct fixture f;
        fixture_init(&f, cases[c].weights, cases[c].active, cases[c].n);
        void *st = create_checked(&lb_balance_leastconn, &f);
        struct lb_pick_ctx ctx = {0};
        unsigned count[MAX_SERVERS] = {0};
        size_t last = SIZE_MAX;
        for (int k = 0; k < 1200; k++) {
            size_t i = index_of(&f, lb_balance_leastconn.pick(st, &ctx));
            count[i]++;
            /* With more than one least, no server is picked twice running. */
            if (i == last)
                fail_msg("case %zu pick %d: server %zu twice in a row", c, k, i);
            last = i;
        }
        for (size_t i = 0; i < cases[c].n; i++) {
            if (count[i] != cases[c].want[i])
                fail_msg("case %zu: server %zu got %u, want %u", c, i, count[i], cases[c].want[i]);
        }
        lb_balance_leastconn.destroy(st);
    }
}

/* The caller's loop: every pick adds a request that never ends. The counts
 * then grow in proportion to the weights. */
static void test_lc_fills_by_weight(void **state)
{
    (void)state;
    static const unsigned w[] = {1, 2, 3, 6};
    struct fixture f;
    fixture_init(&f, w, NULL, 4);
    void *st = create_checked(&lb_balance_leastconn, &f);
    struct lb_pick_ctx ctx = {0};
    for (int k = 0; k < 1200; k++) {
        struct lb_server *s = lb_balance_leastconn.pick(st, &ctx);
        assert_non_null(s);
        atomic_fetch_add(&s->active, 1);
    }
    assert_int_equal(atomic_load(&f.servers[0].active), 100);
    assert_int_equal(atomic_load(&f.servers[1].active), 200);
    assert_int_equal(atomic_load(&f.servers[2].active), 300);
    assert_int_equal(atomic_load(&f.servers[3].active), 600);
    lb_balance_leastconn.destroy(st);
}

/* Requests that finish: a server whose count drops becomes the pick. */
static void test_lc_follows_counts(void **state)
{
    (void)state;
    static const unsigned w[] = {1, 1, 1};
    static const int active[] = {2, 2, 2};
    struct fixture f;
    fixture_init(&f, w, active, 3);
    void *st = create_checked(&lb_balance_leastconn, &f);
    struct lb_pick_ctx ctx = {0};
    atomic_fetch_sub(&f.servers[2].active, 1);
    assert_ptr_equal(lb_balance_leastconn.pick(st, &ctx), &f.servers[2]);
    atomic_fetch_sub(&f.servers[0].active, 2);
    assert_ptr_equal(lb_balance_leastconn.pick(st, &ctx), &f.servers[0]);
    assert_ptr_equal(lb_balance_leastconn.pick(st, &ctx), &f.servers[0]);
    lb_balance_leastconn.destroy(st);
}

static void test_lc_tried(void **state)
{
    (void)state;
    static const unsigned w[] = {1, 1, 1};
    static const int active[] = {0, 5, 1};
    struct fixture f;
    fixture_init(&f, w, active, 3);
    void *st = create_checked(&lb_balance_leastconn, &f);
    struct lb_pick_ctx ctx = {0};

    /* The least loaded failed: the next least, not the busiest. */
    ctx.tried[ctx.n_tried++] = &f.servers[0];
    for (int k = 0; k < 5; k++)
        assert_ptr_equal(lb_balance_leastconn.pick(st, &ctx), &f.servers[2]);
    ctx.tried[ctx.n_tried++] = &f.servers[2];
    assert_ptr_equal(lb_balance_leastconn.pick(st, &ctx), &f.servers[1]);
    ctx.tried[ctx.n_tried++] = &f.servers[1];
    for (int k = 0; k < 3; k++)
        assert_null(lb_balance_leastconn.pick(st, &ctx));

    /* Ties among the untried still rotate. */
    static const int idle[] = {0, 0, 0};
    fixture_init(&f, w, idle, 3);
    ctx.n_tried = 0;
    ctx.tried[ctx.n_tried++] = &f.servers[1];
    char got[9];
    pick_string(&lb_balance_leastconn, st, &f, &ctx, got, 8);
    assert_int_equal(strspn(got, "ac"), 8);
    for (size_t i = 1; i < 8; i++)
        assert_int_not_equal(got[i], got[i - 1]);
    lb_balance_leastconn.destroy(st);
}

static void test_lc_single_and_empty(void **state)
{
    (void)state;
    static const unsigned w[] = {1};
    struct fixture f;
    fixture_init(&f, w, NULL, 1);
    void *st = create_checked(&lb_balance_leastconn, &f);
    struct lb_pick_ctx ctx = {0};
    for (int k = 0; k < 10; k++)
        assert_ptr_equal(lb_balance_leastconn.pick(st, &ctx), &f.servers[0]);
    ctx.tried[ctx.n_tried++] = &f.servers[0];
    assert_null(lb_balance_leastconn.pick(st, &ctx));
    lb_balance_leastconn.destroy(st);

    fixture_init(&f, NULL, NULL, 0);
    st = create_checked(&lb_balance_leastconn, &f);
    ctx.n_tried = 0;
    assert_null(lb_balance_leastconn.pick(st, &ctx));
    lb_balance_leastconn.destroy(st);
}

/* ---- health, for both algorithms ---- */

static const struct lb_balancer_ops *const all_ops[] = {&lb_balance_roundrobin,
                                                        &lb_balance_leastconn};

/* A down server is never picked, whatever its weight or load; when it comes
 * back it is picked again; with every server down, pick gives NULL. */
static void test_down_never_picked(void **state)
{
    (void)state;
    static const unsigned w[] = {5, 1, 3, 1}; /* the heaviest are down */
    for (size_t o = 0; o < 2; o++) {
        const struct lb_balancer_ops *ops = all_ops[o];
        struct fixture f;
        fixture_init(&f, w, NULL, 4);
        void *st = create_checked(ops, &f);
        struct lb_pick_ctx ctx = {.now_ms = 1000};
        atomic_store(&f.servers[0].up, false);
        atomic_store(&f.servers[2].up, false);
        unsigned count[4] = {0};
        for (int k = 0; k < 400; k++)
            count[index_of(&f, ops->pick(st, &ctx))]++;
        if (count[0] || count[2] || !count[1] || !count[3])
            fail_msg("%s: a,b,c,d picked %u,%u,%u,%u with a and c down", ops->name, count[0],
                     count[1], count[2], count[3]);
        /* Down plus tried: the only usable one. */
        ctx.tried[ctx.n_tried++] = &f.servers[1];
        for (int k = 0; k < 10; k++)
            assert_ptr_equal(ops->pick(st, &ctx), &f.servers[3]);
        ctx.n_tried = 0;
        /* All down: nothing, every time (the caller answers 503). */
        atomic_store(&f.servers[1].up, false);
        atomic_store(&f.servers[3].up, false);
        for (int k = 0; k < 10; k++)
            assert_null(ops->pick(st, &ctx));
        /* a back: it takes everything. */
        atomic_store(&f.servers[0].up, true);
        for (int k = 0; k < 10; k++)
            assert_ptr_equal(ops->pick(st, &ctx), &f.servers[0]);
        ops->destroy(st);
    }
}

/* An ejected server is skipped until ejected_until_ms, then picked again;
 * a ctx without now_ms reads the clock. */
static void test_ejected_never_picked(void **state)
{
    (void)state;
    static const unsigned w[] = {1, 1, 1};
    for (size_t o = 0; o < 2; o++) {
        const struct lb_balancer_ops *ops = all_ops[o];
        struct fixture f;
        fixture_init(&f, w, NULL, 3);
        void *st = create_checked(ops, &f);
        atomic_store(&f.servers[1].ejected_until_ms, 5000);
        struct lb_pick_ctx ctx = {.now_ms = 4999};
        unsigned count[3] = {0};
        for (int k = 0; k < 300; k++)
            count[index_of(&f, ops->pick(st, &ctx))]++;
        if (count[1] != 0 || count[0] != 150 || count[2] != 150)
            fail_msg("%s: while b is ejected: %u,%u,%u", ops->name, count[0], count[1], count[2]);
        /* At the end of the ejection b is back, in an equal share. */
        ctx.now_ms = 5000;
        memset(count, 0, sizeof count);
        for (int k = 0; k < 300; k++)
            count[index_of(&f, ops->pick(st, &ctx))]++;
        if (count[1] < 90)
            fail_msg("%s: after the ejection b got %u of 300", ops->name, count[1]);
        /* now_ms 0 (or no ctx): the real clock, which never reaches an
         * ejection into the far future. */
        atomic_store(&f.servers[2].ejected_until_ms, UINT64_MAX);
        ctx.now_ms = 0;
        for (int k = 0; k < 50; k++)
            assert_ptr_not_equal(ops->pick(st, &ctx), &f.servers[2]);
        for (int k = 0; k < 50; k++)
            assert_ptr_not_equal(ops->pick(st, NULL), &f.servers[2]);
        /* Down and ejected at once, or both ejected and one down: nothing. */
        atomic_store(&f.servers[0].up, false);
        atomic_store(&f.servers[1].ejected_until_ms, UINT64_MAX);
        assert_null(ops->pick(st, &ctx));
        ops->destroy(st);
    }
}

/* Slow start: a server that just came up gets about 10% of its share, growing
 * linearly to all of it over slow_start; full share once it is over. */
static void test_slow_start_share(void **state)
{
    (void)state;
    static const unsigned w[] = {1, 1};
    struct fixture f;
    fixture_init(&f, w, NULL, 2);
    f.backend.slow_start = 10; /* seconds */
    const uint64_t up_at = 100000;
    atomic_store(&f.servers[1].up_since_ms, up_at);
    void *st = create_checked(&lb_balance_roundrobin, &f);
    struct lb_pick_ctx ctx = {0};
    /* b's share of 1100 picks at points of the ramp: its weight w(t) against
     * a's full 1000 gives 1100 * w / (1000 + w): 100 at the start, 390 half
     * way, 550 at the end and after. */
    static const struct {
        uint64_t after_ms;
    } points[] = {{0}, {2500}, {5000}, {7500}, {10000}, {60000}};
    unsigned prev = 0;
    for (size_t p = 0; p < sizeof points / sizeof points[0]; p++) {
        ctx.now_ms = up_at + points[p].after_ms;
        uint64_t wb = lb_health_weight(&f.servers[1], &f.backend, ctx.now_ms);
        uint64_t wa = lb_health_weight(&f.servers[0], &f.backend, ctx.now_ms);
        assert_int_equal(wa, LB_WEIGHT_SCALE);
        unsigned want = (unsigned)(1100 * wb / (wa + wb));
        unsigned count = 0;
        for (int k = 0; k < 1100; k++)
            count += lb_balance_roundrobin.pick(st, &ctx) == &f.servers[1];
        if (count + 2 < want || count > want + 2)
            fail_msg("at +%llums: b (weight %llu) got %u of 1100, want about %u",
                     (unsigned long long)points[p].after_ms, (unsigned long long)wb, count, want);
        assert_true(count >= prev);
        prev = count;
    }
    lb_balance_roundrobin.destroy(st);
}

/* The ramp itself, and leastconn's ratio following it: a server in slow start
 * takes fewer connections. */
static void test_slow_start_weight(void **state)
{
    (void)state;
    static const unsigned w[] = {4, 4};
    struct fixture f;
    fixture_init(&f, w, NULL, 2);
    const struct lb_server *b = &f.servers[1];
    f.backend.slow_start = 10;
    atomic_store(&f.servers[1].up_since_ms, 20000);
    static const struct {
        uint64_t now;
        uint64_t want;
    } ramp[] = {
        {19000, 400},  /* a clock before up_since counts as the start */
        {20000, 400},  /* 10% of 4000 */
        {21000, 760},  /* + 3600 * 1/10 */
        {25000, 2200}, /* half way */
        {29999, 3999}, {30000, 4000}, {99999, 4000},
    };
    uint64_t last = 0;
    for (size_t i = 0; i < sizeof ramp / sizeof ramp[0]; i++) {
        uint64_t got = lb_health_weight(b, &f.backend, ramp[i].now);
        if (got != ramp[i].want)
            fail_msg("at %llu: weight %llu, want %llu", (unsigned long long)ramp[i].now,
                     (unsigned long long)got, (unsigned long long)ramp[i].want);
        assert_true(got >= last);
        last = got;
    }
    /* No slow start, or up since lb started: full at once. */
    f.backend.slow_start = 0;
    assert_int_equal(lb_health_weight(b, &f.backend, 20000), 4000);
    f.backend.slow_start = 10;
    atomic_store(&f.servers[1].up_since_ms, 0);
    assert_int_equal(lb_health_weight(b, &f.backend, 20000), 4000);
    assert_int_equal(lb_health_weight(b, NULL, 20000), 4000);
    /* Back from an ejection (not yet cleared by the health thread): it
     * ramps from the end of the ejection too. */
    atomic_store(&f.servers[1].ejected_until_ms, 50000);
    assert_int_equal(lb_health_weight(b, &f.backend, 50000), 400);
    assert_int_equal(lb_health_weight(b, &f.backend, 55000), 2200);
    assert_int_equal(lb_health_weight(b, &f.backend, 60000), 4000);
    atomic_store(&f.servers[1].ejected_until_ms, 0);

    /* leastconn: at 10%, b is filled to about a tenth of a's count. */
    atomic_store(&f.servers[1].up_since_ms, 20000);
    void *st = create_checked(&lb_balance_leastconn, &f);
    struct lb_pick_ctx ctx = {.now_ms = 20000};
    for (int k = 0; k < 1100; k++)
        atomic_fetch_add(&lb_balance_leastconn.pick(st, &ctx)->active, 1);
    int na = atomic_load(&f.servers[0].active), nb = atomic_load(&f.servers[1].active);
    if (nb < 95 || nb > 105)
        fail_msg("leastconn at 10%%: a %d, b %d", na, nb);
    /* Ramp over: b catches up, taking the next picks until level. */
    ctx.now_ms = 30000;
    for (int k = 0; k < 900; k++)
        atomic_fetch_add(&lb_balance_leastconn.pick(st, &ctx)->active, 1);
    assert_int_equal(atomic_load(&f.servers[0].active), atomic_load(&f.servers[1].active));
    lb_balance_leastconn.destroy(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find),
        cmocka_unit_test(test_ops_complete),
        cmocka_unit_test(test_pick_tried),
        cmocka_unit_test(test_rr_weights_exact),
        cmocka_unit_test(test_rr_smooth_511),
        cmocka_unit_test(test_rr_sequences),
        cmocka_unit_test(test_rr_single),
        cmocka_unit_test(test_rr_empty),
        cmocka_unit_test(test_rr_tried),
        cmocka_unit_test(test_rr_retry_walks_all),
        cmocka_unit_test(test_rr_state_per_worker),
        cmocka_unit_test(test_lc_least_active),
        cmocka_unit_test(test_lc_ties_spread),
        cmocka_unit_test(test_lc_fills_by_weight),
        cmocka_unit_test(test_lc_follows_counts),
        cmocka_unit_test(test_lc_tried),
        cmocka_unit_test(test_lc_single_and_empty),
        cmocka_unit_test(test_down_never_picked),
        cmocka_unit_test(test_ejected_never_picked),
        cmocka_unit_test(test_slow_start_share),
        cmocka_unit_test(test_slow_start_weight),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
