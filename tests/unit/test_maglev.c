/* Maglev: balance over 10 servers and 100,000 keys, minimal disruption when a
 * server goes down and exact restoration when it returns, independence from
 * list order, weights, bounded loads, exclusion, bad arguments, build time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "affinity.h"
#include "maglev.h"

#define N 10
#define KEYS 100000

static const char *const ids10[N] = {"web1", "web2", "web3", "web4", "web5",
                                     "web6", "web7", "web8", "web9", "web10"};

/* 100,000 keys as a hash-affinity user would make them: XXH64 of a value. */
static uint64_t *make_keys(size_t count)
{
    uint64_t *keys = malloc(count * sizeof(*keys));
    assert_non_null(keys);
    for (size_t i = 0; i < count; i++) {
        char k[32];
        int len = snprintf(k, sizeof(k), "user-%zu", i);
        keys[i] = lb_hash64(k, (size_t)len);
    }
    return keys;
}

static void build_ok(struct lb_maglev *m, const char *const *ids, const unsigned *weights,
                     const bool *available, size_t n, size_t size)
{
    assert_int_equal(lb_maglev_build(m, ids, weights, available, n, size), 0);
}

/* Per-server key counts. */
static void count_keys(const struct lb_maglev *m, const uint64_t *keys, size_t count, size_t *per,
                       size_t n)
{
    memset(per, 0, n * sizeof(*per));
    for (size_t i = 0; i < count; i++) {
        long s = lb_maglev_lookup(m, keys[i]);
        assert_true(s >= 0 && (size_t)s < n);
        per[s]++;
    }
}

/* Per-server slot counts: key k for k in [0, M) visits every slot once. */
static void count_slots(const struct lb_maglev *m, size_t *per, size_t n)
{
    memset(per, 0, n * sizeof(*per));
    for (uint64_t k = 0; k < m->size; k++)
        per[lb_maglev_lookup(m, k)]++;
}

static void test_equal_shares(void **state)
{
    (void)state;
    uint64_t *keys = make_keys(KEYS);
    struct lb_maglev m;
    build_ok(&m, ids10, NULL, NULL, N, 0);
    assert_int_equal(m.size, LB_MAGLEV_DEFAULT_SIZE);
    assert_int_equal(m.n_available, N);

    size_t slots[N], per[N];
    count_slots(&m, slots, N);
    count_keys(&m, keys, KEYS, per, N);
    size_t smin = SIZE_MAX, smax = 0, kmin = SIZE_MAX, kmax = 0;
    for (size_t i = 0; i < N; i++) {
        smin = slots[i] < smin ? slots[i] : smin;
        smax = slots[i] > smax ? slots[i] : smax;
        kmin = per[i] < kmin ? per[i] : kmin;
        kmax = per[i] > kmax ? per[i] : kmax;
    }
    print_message("equal weights: slots %zu..%zu of %zu; keys per server %zu..%zu of %d, "
                  "max/min %.4f\n",
                  smin, smax, m.size, kmin, kmax, KEYS, (double)kmax / (double)kmin);
    assert_true(smax - smin <= 1); /* floor(M/n) or ceil(M/n) each */
    assert_true((double)kmax / (double)kmin <= 1.1);
    lb_maglev_free(&m);
    lb_maglev_free(&m);
    free(keys);
}

/* Each server in turn goes down: its keys move, almost no other key does;
 * when it comes back every key returns to exactly where it was. */
static void test_remove_and_restore(void **state)
{
    (void)state;
    uint64_t *keys = make_keys(KEYS);
    struct lb_maglev full;
    build_ok(&full, ids10, NULL, NULL, N, 0);
    long *before = malloc(KEYS * sizeof(*before));
    assert_non_null(before);
    for (size_t i = 0; i < KEYS; i++)
        before[i] = lb_maglev_lookup(&full, keys[i]);

    double worst_moved = 0, worst_extra = 0;
    for (size_t down = 0; down < N; down++) {
        bool avail[N];
        for (size_t i = 0; i < N; i++)
            avail[i] = i != down;
        struct lb_maglev m;
        build_ok(&m, ids10, NULL, avail, N, 0);
        assert_int_equal(m.n_available, N - 1);
        size_t moved = 0, extra = 0, owned = 0;
        for (size_t i = 0; i < KEYS; i++) {
            long s = lb_maglev_lookup(&m, keys[i]);
            assert_true(s >= 0 && (size_t)s != down);
            if (s != before[i]) {
                moved++;
                if ((size_t)before[i] != down)
                    extra++; /* a key whose server did not go down moved */
            }
            if ((size_t)before[i] == down)
                owned++;
        }
        double f = (double)moved / KEYS, fx = (double)extra / KEYS;
        print_message("%-5s down: %5.2f%% of keys moved (its own share %5.2f%%, others %4.2f%%)\n",
                      ids10[down], 100 * f, 100.0 * (double)owned / KEYS, 100 * fx);
        assert_true(f <= 0.1 + 0.01);
        worst_moved = f > worst_moved ? f : worst_moved;
        worst_extra = fx > worst_extra ? fx : worst_extra;
        lb_maglev_free(&m);

        /* Back up: the same table, slot for slot. */
        build_ok(&m, ids10, NULL, NULL, N, 0);
        assert_memory_equal(m.slots, full.slots, full.size * sizeof(*full.slots));
        for (size_t i = 0; i < KEYS; i++)
            assert_int_equal(lb_maglev_lookup(&m, keys[i]), before[i]);
        lb_maglev_free(&m);
    }
    print_message("worst: %.2f%% moved, %.2f%% beyond the lost server's own keys\n",
                  100 * worst_moved, 100 * worst_extra);

    /* Two servers down, then both back. */
    bool avail[N];
    for (size_t i = 0; i < N; i++)
        avail[i] = i != 2 && i != 7;
    struct lb_maglev m;
    build_ok(&m, ids10, NULL, avail, N, 0);
    size_t moved = 0;
    for (size_t i = 0; i < KEYS; i++) {
        long s = lb_maglev_lookup(&m, keys[i]);
        assert_true(s != 2 && s != 7);
        moved += s != before[i];
    }
    print_message("web3+web8 down: %.2f%% moved\n", 100.0 * (double)moved / KEYS);
    assert_true((double)moved / KEYS <= 0.2 + 0.02);
    lb_maglev_free(&m);

    lb_maglev_free(&full);
    free(before);
    free(keys);
}

/* A server added to the list takes about its share, from everyone; few
 * keys move between the others. */
static void test_add_server(void **state)
{
    (void)state;
    uint64_t *keys = make_keys(KEYS);
    struct lb_maglev nine, ten;
    build_ok(&nine, ids10, NULL, NULL, N - 1, 0);
    build_ok(&ten, ids10, NULL, NULL, N, 0);
    size_t to_new = 0, others = 0;
    for (size_t i = 0; i < KEYS; i++) {
        long a = lb_maglev_lookup(&nine, keys[i]), b = lb_maglev_lookup(&ten, keys[i]);
        if (a != b && b == N - 1)
            to_new++;
        else if (a != b)
            others++;
    }
    print_message("web10 added to 9: %.2f%% of keys moved to it, %.2f%% between the others\n",
                  100.0 * (double)to_new / KEYS, 100.0 * (double)others / KEYS);
    assert_true((double)(to_new + others) / KEYS <= 0.1 + 0.01);
    lb_maglev_free(&nine);
    lb_maglev_free(&ten);
    free(keys);
}

/* The table depends on the ids, not on their order in the list. */
static void test_reorder(void **state)
{
    (void)state;
    static const unsigned w[N] = {1, 2, 3, 1, 2, 3, 1, 2, 3, 4};
    static const bool av[N] = {true, true, false, true, true, true, true, true, false, true};
    struct lb_maglev a;
    build_ok(&a, ids10, w, av, N, 0);

    static const size_t perms[][N] = {
        {9, 8, 7, 6, 5, 4, 3, 2, 1, 0},
        {3, 0, 7, 1, 9, 4, 2, 8, 6, 5},
        {1, 2, 3, 4, 5, 6, 7, 8, 9, 0},
    };
    for (size_t p = 0; p < sizeof(perms) / sizeof(perms[0]); p++) {
        const char *ids[N];
        unsigned wp[N];
        bool avp[N];
        for (size_t i = 0; i < N; i++) {
            ids[i] = ids10[perms[p][i]];
            wp[i] = w[perms[p][i]];
            avp[i] = av[perms[p][i]];
        }
        struct lb_maglev b;
        build_ok(&b, ids, wp, avp, N, 0);
        /* Every slot, hence every key, names the same id. */
        for (uint64_t k = 0; k < a.size; k++) {
            long x = lb_maglev_lookup(&a, k), y = lb_maglev_lookup(&b, k);
            assert_string_equal(ids10[x], ids[y]);
        }
        lb_maglev_free(&b);
    }
    lb_maglev_free(&a);
}

/* Weights 1:2:3 over three servers, and repeated over nine. */
static void test_weights(void **state)
{
    (void)state;
    uint64_t *keys = make_keys(KEYS);
    static const unsigned w3[] = {1, 2, 3};
    static const unsigned w9[] = {1, 2, 3, 1, 2, 3, 1, 2, 3};
    static const unsigned wbig[] = {100, 200, 300};
    const unsigned *sets[] = {w3, w9, wbig};
    const size_t sizes[] = {3, 9, 3};
    for (size_t s = 0; s < 3; s++) {
        size_t n = sizes[s];
        unsigned total_w = 0;
        for (size_t i = 0; i < n; i++)
            total_w += sets[s][i];
        struct lb_maglev m;
        build_ok(&m, ids10, sets[s], NULL, n, 0);
        size_t slots[N], per[N];
        count_slots(&m, slots, n);
        count_keys(&m, keys, KEYS, per, n);
        double worst_slot = 0, worst_key = 0;
        for (size_t i = 0; i < n; i++) {
            double want = (double)sets[s][i] / total_w;
            double fs = (double)slots[i] / (double)m.size, fk = (double)per[i] / KEYS;
            worst_slot = fmax(worst_slot, fabs(fs / want - 1));
            worst_key = fmax(worst_key, fabs(fk / want - 1));
            if (n == 3)
                print_message("weight %u: %.2f%% of slots, %.2f%% of keys (want %.2f%%)\n",
                              sets[s][i], 100 * fs, 100 * fk, 100 * want);
        }
        print_message("%zu servers: worst relative error %.3f%% (slots), %.2f%% (keys)\n", n,
                      100 * worst_slot, 100 * worst_key);
        assert_true(worst_slot < 0.005);
        assert_true(worst_key < 0.04);
        lb_maglev_free(&m);
    }
    free(keys);
}

/* The heaviest server down: the others keep their proportions, their turn
 * pattern (hence most keys) does not change, and the build skips the empty
 * rounds instead of looping through them. Weight 0 is out of the table. */
static void test_weights_heavy_down(void **state)
{
    (void)state;
    static const unsigned w[] = {1000, 1, 2, 0};
    static const bool av[] = {false, true, true, true};
    struct lb_maglev m;
    build_ok(&m, ids10, w, av, 4, 0);
    assert_int_equal(m.n_available, 2);
    size_t slots[4];
    count_slots(&m, slots, 4);
    assert_int_equal(slots[0], 0);
    assert_int_equal(slots[3], 0);
    double share = (double)slots[2] / (double)m.size;
    assert_true(fabs(share - 2.0 / 3) < 0.005);
    lb_maglev_free(&m);

    static const unsigned z[] = {0, 0};
    build_ok(&m, ids10, z, NULL, 2, 0);
    assert_int_equal(m.n_available, 0);
    assert_int_equal(lb_maglev_lookup(&m, 42), -1);
    lb_maglev_free(&m);
}

static void test_unavailable_and_empty(void **state)
{
    (void)state;
    bool none[N] = {false};
    struct lb_maglev m;
    build_ok(&m, ids10, NULL, none, N, 0);
    assert_int_equal(lb_maglev_lookup(&m, 1), -1);
    int in_flight[N] = {0};
    assert_int_equal(lb_maglev_lookup_bounded(&m, 1, in_flight, N, 1.25, NULL, NULL), -1);
    lb_maglev_free(&m);

    build_ok(&m, NULL, NULL, NULL, 0, 0);
    assert_int_equal(lb_maglev_lookup(&m, 1), -1);
    assert_int_equal(lb_maglev_lookup_bounded(&m, 1, NULL, 0, 1.25, NULL, NULL), -1);
    lb_maglev_free(&m);
    assert_int_equal(lb_maglev_lookup(NULL, 1), -1);

    /* One server: everything goes there. */
    bool one[N] = {false};
    one[6] = true;
    build_ok(&m, ids10, NULL, one, N, 0);
    for (uint64_t k = 0; k < m.size; k++)
        assert_int_equal(lb_maglev_lookup(&m, k), 6);
    lb_maglev_free(&m);
}

static void test_bad_args(void **state)
{
    (void)state;
    struct lb_maglev m;
    const char *dup[] = {"a", "b", "a"};
    assert_int_equal(lb_maglev_build(&m, dup, NULL, NULL, 3, 0), -1);
    assert_null(m.slots);
    lb_maglev_free(&m);
    const char *with_null[] = {"a", NULL};
    assert_int_equal(lb_maglev_build(&m, with_null, NULL, NULL, 2, 0), -1);
    assert_int_equal(lb_maglev_build(&m, NULL, NULL, NULL, 2, 0), -1);
    assert_int_equal(lb_maglev_build(&m, ids10, NULL, NULL, N, 65536), -1); /* not prime */
    assert_int_equal(lb_maglev_build(&m, ids10, NULL, NULL, N, 1), -1);
    assert_int_equal(lb_maglev_build(&m, ids10, NULL, NULL, N, 7), -1);        /* prime < n */
    assert_int_equal(lb_maglev_build(&m, ids10, NULL, NULL, N, 33554467), -1); /* > max */
    assert_int_equal(lb_maglev_build(&m, ids10, NULL, NULL, LB_MAGLEV_MAX_SERVERS + 1, 0), -1);
    lb_maglev_free(&m);

    /* Explicit small prime sizes work and stay balanced to one slot. */
    static const size_t primes[] = {11, 13, 101, 1009, 65521};
    for (size_t p = 0; p < sizeof(primes) / sizeof(primes[0]); p++) {
        build_ok(&m, ids10, NULL, NULL, N, primes[p]);
        assert_int_equal(m.size, primes[p]);
        size_t slots[N];
        count_slots(&m, slots, N);
        for (size_t i = 0; i < N; i++)
            assert_true(slots[i] >= primes[p] / N && slots[i] <= primes[p] / N + 1);
        int in_flight[N] = {0};
        assert_int_equal(lb_maglev_lookup_bounded(&m, 5, in_flight, N - 1, 1.25, NULL, NULL), -1);
        lb_maglev_free(&m);
    }
}

/* Default sizes: at least 100 * n, prime, and changing only at thresholds. */
static void test_default_size(void **state)
{
    (void)state;
    enum { BIG = 2000 };
    char(*names)[16] = malloc(BIG * sizeof(*names));
    const char **ids = malloc(BIG * sizeof(*ids));
    assert_non_null(names);
    assert_non_null(ids);
    for (size_t i = 0; i < BIG; i++) {
        snprintf(names[i], sizeof(names[i]), "srv%zu", i);
        ids[i] = names[i];
    }
    static const struct {
        size_t n, size;
    } cases[] = {{1, 65537},     {655, 65537},   {656, 131101},
                 {1310, 131101}, {1311, 262151}, {2000, 262151}};
    for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
        struct lb_maglev m;
        build_ok(&m, ids, NULL, NULL, cases[c].n, 0);
        assert_int_equal(m.size, cases[c].size);
        assert_true(m.size >= 100 * cases[c].n);
        if (cases[c].n == BIG) {
            size_t *slots = calloc(BIG, sizeof(*slots));
            assert_non_null(slots);
            count_slots(&m, slots, BIG);
            for (size_t i = 0; i < BIG; i++)
                assert_true(slots[i] >= m.size / BIG && slots[i] <= m.size / BIG + 1);
            free(slots);
        }
        lb_maglev_free(&m);
    }
    free(ids);
    free(names);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void test_build_time(void **state)
{
    (void)state;
    static const unsigned w[N] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1000};
    double best = 1e9, best_w = 1e9;
    for (int r = 0; r < 5; r++) {
        struct lb_maglev m;
        double t0 = now_ms();
        build_ok(&m, ids10, NULL, NULL, N, 0);
        double t1 = now_ms();
        lb_maglev_free(&m);
        build_ok(&m, ids10, w, NULL, N, 0);
        double t2 = now_ms();
        lb_maglev_free(&m);
        best = fmin(best, t1 - t0);
        best_w = fmin(best_w, t2 - t1);
    }
    print_message("build 10 x 65537: %.2f ms (equal weights), %.2f ms (1..1000)\n", best, best_w);
    assert_true(best < 50 && best_w < 50); /* generous: sanitizer builds are slower */
}

/* ---- bounded load ---- */

struct excl {
    const bool *set;
    unsigned calls[N];
};

static bool is_excluded(void *ctx, size_t idx)
{
    struct excl *e = ctx;
    e->calls[idx]++;
    return e->set[idx];
}

/* ceil(num / den) for the bound checks, in integers. */
static uint64_t ceil_div(uint64_t num, uint64_t den)
{
    return (num + den - 1) / den;
}

/* Keys arrive and stay (in-flight counts only grow): after every assignment
 * no server holds more than ceil(1.25 * total / n). Half of the requests
 * carry one hot key, which without the bound would all land on one server. */
static void test_bounded_load_growing(void **state)
{
    (void)state;
    struct lb_maglev m;
    build_ok(&m, ids10, NULL, NULL, N, 0);
    int in_flight[N] = {0};
    uint64_t total = 0;
    size_t primary = 0, hot = 0;
    uint64_t hot_key = lb_hash64("hot-user", 8);
    uint64_t *keys = make_keys(10000);
    for (size_t r = 0; r < 10000; r++) {
        uint64_t key = (r % 2) ? hot_key : keys[r];
        long s = lb_maglev_lookup_bounded(&m, key, in_flight, N, 1.25, NULL, NULL);
        assert_true(s >= 0 && s < N);
        primary += s == lb_maglev_lookup(&m, key);
        hot += key == hot_key && s == lb_maglev_lookup(&m, hot_key);
        in_flight[s]++;
        total++;
        /* 1.25 = 5/4: bound = ceil(5 * total / (4 * n)). */
        uint64_t bound = ceil_div(5 * total, 4 * N);
        for (size_t i = 0; i < N; i++)
            if ((uint64_t)in_flight[i] > bound)
                fail_msg("after %zu requests server %zu holds %d > %llu", r + 1, i, in_flight[i],
                         (unsigned long long)bound);
    }
    int mx = 0;
    for (size_t i = 0; i < N; i++)
        mx = in_flight[i] > mx ? in_flight[i] : mx;
    print_message("bounded 1.25, 50%% hot key: max %d in flight (average %llu, bound %llu); "
                  "%.1f%% on the primary server, hot key %.1f%% on its own\n",
                  mx, (unsigned long long)(total / N),
                  (unsigned long long)ceil_div(5 * total, 4 * N), 100.0 * (double)primary / 1e4,
                  100.0 * (double)hot / 5e3);
    free(keys);
    lb_maglev_free(&m);
}

/* Requests also complete (random departures), keys uniform: each assignment
 * respects the bound at the moment it is made, and most keys still go to
 * their own server. */
static void test_bounded_load_churn(void **state)
{
    (void)state;
    struct lb_maglev m;
    build_ok(&m, ids10, NULL, NULL, N, 0);
    int in_flight[N] = {0};
    uint64_t total = 0;
    size_t primary = 0;
    enum { REQS = 10000 };
    uint64_t *keys = make_keys(REQS);
    uint64_t x = 88172645463325252ULL;
    for (size_t r = 0; r < REQS; r++) {
        /* Keep about 200 in flight: a departure for each arrival once full. */
        if (total >= 200) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint64_t pick = x % total;
            for (size_t i = 0; i < N; i++) {
                if (pick < (uint64_t)in_flight[i]) {
                    in_flight[i]--;
                    total--;
                    break;
                }
                pick -= (uint64_t)in_flight[i];
            }
        }
        long s = lb_maglev_lookup_bounded(&m, keys[r], in_flight, N, 1.25, NULL, NULL);
        assert_true(s >= 0 && s < N);
        uint64_t bound = ceil_div(5 * (total + 1), 4 * N);
        assert_true((uint64_t)in_flight[s] + 1 <= bound);
        primary += s == lb_maglev_lookup(&m, keys[r]);
        in_flight[s]++;
        total++;
    }
    print_message("bounded 1.25 with departures: %.1f%% of keys on their primary server\n",
                  100.0 * (double)primary / REQS);
    assert_true(primary > REQS * 7 / 10);
    free(keys);
    lb_maglev_free(&m);
}

/* Without load every key goes to its primary server; the walk visits each
 * server at most once (excluded called at most once each); excluded servers
 * are never returned; all excluded gives -1. */
static void test_bounded_excluded(void **state)
{
    (void)state;
    struct lb_maglev m;
    build_ok(&m, ids10, NULL, NULL, N, 0);
    int zero[N] = {0};
    bool none[N] = {false};
    bool some[N] = {false};
    some[0] = some[3] = some[7] = true;
    bool all[N];
    for (size_t i = 0; i < N; i++)
        all[i] = true;
    uint64_t *keys = make_keys(20000);
    for (size_t r = 0; r < 20000; r++) {
        struct excl e = {.set = none};
        long s = lb_maglev_lookup_bounded(&m, keys[r], zero, N, 1.25, is_excluded, &e);
        assert_int_equal(s, lb_maglev_lookup(&m, keys[r]));
        assert_int_equal(lb_maglev_lookup_bounded(&m, keys[r], NULL, N, 1.25, NULL, NULL), s);

        struct excl e2 = {.set = some};
        s = lb_maglev_lookup_bounded(&m, keys[r], zero, N, 1.25, is_excluded, &e2);
        assert_true(s >= 0 && !some[s]);
        for (size_t i = 0; i < N; i++)
            assert_true(e2.calls[i] <= 1);
        /* The first non-excluded server of the preference order. */
        if (!some[lb_maglev_lookup(&m, keys[r])])
            assert_int_equal(s, lb_maglev_lookup(&m, keys[r]));

        struct excl e3 = {.set = all};
        assert_int_equal(lb_maglev_lookup_bounded(&m, keys[r], zero, N, 1.25, is_excluded, &e3),
                         -1);
        for (size_t i = 0; i < N; i++)
            assert_int_equal(e3.calls[i], 1);
    }

    /* Everyone over the bound but the excluded: the first non-excluded in
     * the order, never an excluded one. */
    int loaded[N];
    for (size_t i = 0; i < N; i++)
        loaded[i] = some[i] ? 0 : 1000;
    for (size_t r = 0; r < 1000; r++) {
        struct excl e = {.set = some};
        long s = lb_maglev_lookup_bounded(&m, keys[r], loaded, N, 1.25, is_excluded, &e);
        assert_true(s >= 0 && !some[s]);
    }
    /* in_flight sized for another table, factor below 1, negative counts. */
    assert_int_equal(lb_maglev_lookup_bounded(&m, 1, zero, N - 1, 1.25, NULL, NULL), -1);
    int neg[N] = {-5, -5, -5, -5, -5, -5, -5, -5, -5, -5};
    assert_int_equal(lb_maglev_lookup_bounded(&m, keys[0], neg, N, 0.5, NULL, NULL),
                     lb_maglev_lookup(&m, keys[0]));
    assert_int_equal(lb_maglev_lookup_bounded(&m, keys[0], zero, N, NAN, NULL, NULL),
                     lb_maglev_lookup(&m, keys[0]));
    free(keys);
    lb_maglev_free(&m);
}

/* Weighted bound: a server's room is its weight's share of the total. With
 * weights 1:3 under growing load the heavy server gets about 3/4. */
static void test_bounded_weighted(void **state)
{
    (void)state;
    static const unsigned w[] = {1, 3};
    struct lb_maglev m;
    build_ok(&m, ids10, w, NULL, 2, 0);
    int in_flight[2] = {0};
    uint64_t total = 0;
    uint64_t hot = lb_hash64("hot", 3);
    for (size_t r = 0; r < 4000; r++) {
        long s = lb_maglev_lookup_bounded(&m, hot, in_flight, 2, 1.25, NULL, NULL);
        assert_true(s == 0 || s == 1);
        in_flight[s]++;
        total++;
        /* bound_i = ceil(5 * total * w_i / (4 * W)), W = 4 */
        for (size_t i = 0; i < 2; i++)
            assert_true((uint64_t)in_flight[i] <= ceil_div(5 * total * w[i], 16));
    }
    print_message("weights 1:3, one hot key: %d / %d\n", in_flight[0], in_flight[1]);
    assert_true(in_flight[1] >= 2900 && in_flight[1] <= 3750);
    lb_maglev_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_equal_shares),
        cmocka_unit_test(test_remove_and_restore),
        cmocka_unit_test(test_add_server),
        cmocka_unit_test(test_reorder),
        cmocka_unit_test(test_weights),
        cmocka_unit_test(test_weights_heavy_down),
        cmocka_unit_test(test_unavailable_and_empty),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_default_size),
        cmocka_unit_test(test_build_time),
        cmocka_unit_test(test_bounded_load_growing),
        cmocka_unit_test(test_bounded_load_churn),
        cmocka_unit_test(test_bounded_excluded),
        cmocka_unit_test(test_bounded_weighted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
