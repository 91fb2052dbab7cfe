/* Maglev lookup table with weights and bounded loads. See maglev.h. */
#include "maglev.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "affinity.h"

/* Two independent hash families for a server's permutation (arbitrary,
 * fixed forever: changing them remaps every key). */
#define SEED_OFFSET 0x6c622d6d61676c31ULL /* "lb-magl1" */
#define SEED_SKIP 0x6c622d736b697031ULL   /* "lb-skip1" */

#define EMPTY_SLOT UINT16_MAX /* never a server index: n <= 65535 */

static bool is_prime(size_t x)
{
    if (x < 2)
        return false;
    if (x % 2 == 0)
        return x == 2;
    for (size_t d = 3; d <= x / d; d += 2)
        if (x % d == 0)
            return false;
    return true;
}

/* LB_MAGLEV_DEFAULT_SIZE while it is >= 100 * n, else the first prime after
 * 65537 * 2^k for the smallest k that is large enough. */
static size_t default_size(size_t n)
{
    size_t want = n * 100;
    if (want <= LB_MAGLEV_DEFAULT_SIZE)
        return LB_MAGLEV_DEFAULT_SIZE;
    size_t base = LB_MAGLEV_DEFAULT_SIZE;
    while (base < want)
        base *= 2;
    size_t m = base + 1;
    while (!is_prime(m))
        m++;
    return m;
}

struct by_id {
    const char *id;
    size_t index;
};

static int cmp_by_id(const void *a, const void *b)
{
    const struct by_id *x = a, *y = b;
    return strcmp(x->id, y->id);
}

/* One server during the build, in id order. */
struct filler {
    uint32_t pos;  /* next slot of its permutation to try */
    uint32_t skip; /* permutation step, 1..M-1 */
    uint64_t fill; /* k * wmax, for its next turn k */
    uint64_t need; /* round of its next turn: ceil(fill / weight) */
    unsigned weight;
    uint16_t index; /* position in the caller's arrays */
};

void lb_maglev_free(struct lb_maglev *m)
{
    free(m->slots);
    free(m->weights);
    memset(m, 0, sizeof(*m));
}

int lb_maglev_build(struct lb_maglev *m, const char *const *ids, const unsigned *weights,
                    const bool *available, size_t n, size_t table_size)
{
    struct by_id *sorted = NULL;
    struct filler *fillers = NULL;
    int rc = -1;

    memset(m, 0, sizeof(*m));
    if (n > LB_MAGLEV_MAX_SERVERS || (n > 0 && ids == NULL))
        return -1;
    size_t size = table_size ? table_size : default_size(n);
    if (table_size && (table_size < n || table_size > LB_MAGLEV_MAX_SIZE || !is_prime(table_size)))
        return -1;
    m->n = n;
    m->size = size;
    if (n == 0)
        return 0;

    m->weights = calloc(n, sizeof(*m->weights));
    sorted = malloc(n * sizeof(*sorted));
    fillers = malloc(n * sizeof(*fillers));
    if (m->weights == NULL || sorted == NULL || fillers == NULL)
        goto out;

    /* Id order, not input order, decides ties; equal ids would make it
     * depend on the input order again, so they are refused. */
    unsigned wmax = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] == NULL)
            goto out;
        sorted[i].id = ids[i];
        sorted[i].index = i;
        unsigned w = weights ? weights[i] : 1;
        if (w > wmax)
            wmax = w;
    }
    qsort(sorted, n, sizeof(*sorted), cmp_by_id);
    for (size_t i = 1; i < n; i++)
        if (strcmp(sorted[i - 1].id, sorted[i].id) == 0)
            goto out;

    size_t nf = 0;
    for (size_t k = 0; k < n; k++) {
        size_t i = sorted[k].index;
        unsigned w = weights ? weights[i] : 1;
        if (w == 0 || (available && !available[i]))
            continue;
        size_t id_len = strlen(ids[i]);
        struct filler *f = &fillers[nf++];
        f->pos = (uint32_t)(lb_hash64_seed(ids[i], id_len, SEED_OFFSET) % size);
        f->skip = (uint32_t)(lb_hash64_seed(ids[i], id_len, SEED_SKIP) % (size - 1) + 1);
        f->fill = 0;
        f->need = 0;
        f->weight = w;
        f->index = (uint16_t)i;
        m->weights[i] = w;
        m->total_weight += w;
    }
    m->n_available = nf;
    if (nf == 0) {
        rc = 0;
        goto out;
    }

    m->slots = malloc(size * sizeof(*m->slots));
    if (m->slots == NULL)
        goto out;
    memset(m->slots, 0xff, size * sizeof(*m->slots));

    /* Rounds: a server takes a turn in every round >= its `need`; the next
     * round is the smallest `need` left, so rounds in which nobody would take
     * a turn (a heavy server is down) are skipped, not looped through. */
    const uint32_t msize = (uint32_t)size;
    size_t filled = 0;
    uint64_t round = 0;
    while (filled < size) {
        uint64_t next = UINT64_MAX;
        for (size_t k = 0; k < nf && filled < size; k++) {
            struct filler *f = &fillers[k];
            if (f->need <= round) {
                uint32_t c = f->pos;
                while (m->slots[c] != EMPTY_SLOT) {
                    c += f->skip;
                    if (c >= msize)
                        c -= msize;
                }
                m->slots[c] = f->index;
                filled++;
                c += f->skip;
                f->pos = c >= msize ? c - msize : c;
                f->fill += wmax;
                f->need = (f->fill + f->weight - 1) / f->weight;
            }
            if (f->need < next)
                next = f->need;
        }
        round = next;
    }
    rc = 0;
out:
    free(fillers);
    free(sorted);
    if (rc < 0)
        lb_maglev_free(m);
    return rc;
}

long lb_maglev_lookup(const struct lb_maglev *m, uint64_t key)
{
    if (m == NULL || m->n_available == 0)
        return -1;
    return m->slots[key % m->size];
}

long lb_maglev_lookup_bounded(const struct lb_maglev *m, uint64_t key, const int *in_flight,
                              size_t n, double factor, bool (*excluded)(void *ctx, size_t idx),
                              void *ctx)
{
    if (m == NULL || m->n_available == 0 || n != m->n)
        return -1;
    if (!(factor >= 1.0))
        factor = 1.0;

    uint64_t total = 0;
    if (in_flight)
        for (size_t i = 0; i < n; i++)
            if (m->weights[i] > 0 && in_flight[i] > 0)
                total += (uint64_t)in_flight[i];
    /* Bound for server i: ceil(per_weight * w_i); the epsilon keeps an exact
     * integer from rounding up to the next one. */
    const double per_weight = factor * ((double)total + 1.0) / (double)m->total_weight;

    uint64_t seen[(LB_MAGLEV_MAX_SERVERS + 63) / 64];
    memset(seen, 0, ((n + 63) / 64) * sizeof(seen[0]));
    size_t n_seen = 0;
    long fallback = -1;
    size_t slot = (size_t)(key % m->size);
    for (size_t step = 0; step < m->size && n_seen < m->n_available; step++) {
        size_t i = m->slots[slot];
        if (++slot == m->size)
            slot = 0;
        if (seen[i / 64] & (UINT64_C(1) << (i % 64)))
            continue;
        seen[i / 64] |= UINT64_C(1) << (i % 64);
        n_seen++;
        if (excluded && excluded(ctx, i))
            continue;
        if (fallback < 0)
            fallback = (long)i;
        double load = in_flight && in_flight[i] > 0 ? (double)in_flight[i] : 0.0;
        double bound = ceil(per_weight * (double)m->weights[i] - 1e-9);
        if (load + 1.0 <= bound)
            return (long)i;
    }
    return fallback;
}
