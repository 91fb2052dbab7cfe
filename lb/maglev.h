/* Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable
 * Software Network Load Balancer", NSDI 2016) with weights, and bounded loads
 * (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads",
 * SODA 2018). Pure: no I/O, no event loop, no config; servers come in as
 * plain arrays of ids, weights and availability.
 *
 * The table
 * ---------
 * M slots (M prime), each naming a server. Server s has a permutation of the
 * slots, offset(s) + j * skip(s) mod M, with offset = XXH64(id, seed A) mod M
 * and skip = XXH64(id, seed B) mod (M - 1) + 1, so it depends on the id only.
 * The table is filled in turns: on its turn a server takes the next slot of
 * its permutation that is still empty, until every slot is taken. A key
 * (a 64-bit hash, e.g. lb_hash64() of the client address) maps to slot
 * key mod M. Properties:
 * - balance: with equal weights every server owns floor(M/n) or ceil(M/n)
 *   slots;
 * - minimal disruption: marking a server unavailable hands its slots to the
 *   others and moves few other keys (0.2-0.3% of all keys with M = 65537,
 *   n = 10, on top of the lost server's 10%); making it available again
 *   rebuilds exactly the earlier table;
 * - order independence: turns go in the order of the ids (strcmp), not of
 *   the input array, so reordering the server list changes no key's server.
 *   Indices in and out of this API are positions in the arrays given to
 *   lb_maglev_build(); map them back to ids there.
 *
 * Weights
 * -------
 * Fractional turns, as in Envoy's weighted Maglev: with wmax the largest
 * weight among all the servers given (available or not), turn number k of a
 * server of weight w happens in round ceil(k * wmax / w), k = 0, 1, 2, ...
 * So a server of weight wmax takes a slot every round, one of weight wmax/3
 * every third round, and over the build each server owns slots in proportion
 * to its weight (within one slot per round). wmax includes unavailable
 * servers so that marking a server down does not change the others' turn
 * pattern (which would move keys between survivors). A weight of 0 keeps the
 * server out of the table, like unavailable.
 *
 * Sharing
 * -------
 * A built table is immutable: the lookups take it const, write nothing and
 * may run in any number of threads at once. The intended use is to build a
 * new table off the request path (health thread or reload, when a server goes
 * up or down or changes weight) into a freshly allocated struct lb_maglev,
 * publish the pointer with one atomic store (release), let workers load it
 * (acquire) once per request, and free the old table when no worker can
 * still hold it (config generation reference count). There is no in-place
 * update. Building 10 servers into 65537 slots takes under a millisecond
 * (-O2). */
#ifndef LB_MAGLEV_H
#define LB_MAGLEV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LB_MAGLEV_DEFAULT_SIZE 65537 /* prime; used while 100 * n <= this */
#define LB_MAGLEV_MAX_SERVERS 65535  /* slots hold 16-bit indices */
#define LB_MAGLEV_MAX_SIZE (1u << 25)

struct lb_maglev {
    size_t n;              /* servers given to build; indices refer to that array */
    size_t n_available;    /* servers in the table (available, weight > 0) */
    uint64_t total_weight; /* sum of the weights of the servers in the table */
    size_t size;           /* M, prime */
    uint16_t *slots;       /* M server indices; NULL when n_available is 0 */
    unsigned *weights;     /* n weights, 0 for a server not in the table */
};

/* Builds the table for n servers: ids[i] (NUL-terminated, distinct), weights[i]
 * (NULL: all 1), available[i] (NULL: all available; false keeps server i out
 * of the table, as does weight 0). table_size 0 picks a prime of at least
 * 100 * n: LB_MAGLEV_DEFAULT_SIZE, else the first prime after
 * 65537 * 2^k for the smallest such k (so M changes rarely as servers are
 * added; a change of M remaps most keys). Otherwise table_size must be a prime
 * in [n, LB_MAGLEV_MAX_SIZE] (>= 100 * n recommended for balance).
 * Returns 0, or -1 on a NULL or duplicate id, n > LB_MAGLEV_MAX_SERVERS, a bad
 * table_size, or out of memory; m is then empty and safe to free. Building
 * with no server in the table succeeds; lookups then return -1. */
int lb_maglev_build(struct lb_maglev *m, const char *const *ids, const unsigned *weights,
                    const bool *available, size_t n, size_t table_size);

/* Frees the storage; safe to call twice and after a failed build. */
void lb_maglev_free(struct lb_maglev *m);

/* The server index for key, or -1 when no server is in the table. */
long lb_maglev_lookup(const struct lb_maglev *m, uint64_t key);

/* Bounded-load lookup. Walks the key's preference order (slots key mod M,
 * +1, +2, ... wrapping, each server counted at its first appearance, which
 * starts with lb_maglev_lookup()'s answer) and returns the first server that
 * is not excluded and whose load stays within its bound with this request:
 *
 *     in_flight[i] + 1 <= ceil(factor * (total + 1) * w_i / W)
 *
 * where total is the sum of in_flight over the servers in the table, w_i the
 * server's weight and W the sum of their weights. With equal weights that is
 * ceil(factor * (total + 1) / n_available), Mirrokni et al.'s bound; weights
 * scale each server's share of it. Since factor >= 1, some server always
 * qualifies unless the excluded ones hold the spare room; then the first
 * non-excluded server in the order is returned (a request is never refused
 * for load alone). Returns -1 when every server in the table is excluded or
 * none is in it, or on a bad argument.
 *
 * in_flight has n == m->n entries (negative counts read as 0; NULL: all 0).
 * factor below 1 (or NaN) is taken as 1. excluded (may be NULL) says whether
 * server idx must not be picked (already tried for this request, draining);
 * it is called at most once per server. Cost: one pass over the order until
 * a server qualifies, at most M slots; no allocation. */
long lb_maglev_lookup_bounded(const struct lb_maglev *m, uint64_t key, const int *in_flight,
                              size_t n, double factor, bool (*excluded)(void *ctx, size_t idx),
                              void *ctx);

#endif
