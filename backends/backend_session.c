/* The /session table: request counters kept in this process's memory, keyed by
 * a random session id. It is what makes the sample server stateful on purpose,
 * to show why a balancer needs affinity. Bounded: past `max` sessions the
 * oldest one is forgotten (its next request starts a new session). */
#include "backend.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define NIL UINT32_MAX

struct be_session {
    char sid[BE_SID_HEX + 1];
    uint64_t count;
    uint32_t next; /* in its hash bucket */
    bool used;
};

struct be_sessions {
    struct be_session *slots; /* filled in ring order: `oldest` is reused first */
    uint32_t *buckets;
    size_t max;
    size_t mask; /* buckets - 1 */
    size_t oldest;
    uint64_t rng[4]; /* xoshiro256** state */
};

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* FNV-1a over the hex id. */
static size_t hash_sid(const char *sid)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < BE_SID_HEX; i++) {
        h ^= (unsigned char)sid[i];
        h *= 1099511628211ull;
    }
    return (size_t)h;
}

struct be_sessions *be_sessions_new(size_t max)
{
    struct be_sessions *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    size_t nb = 1;
    while (nb < max * 2)
        nb <<= 1;
    s->max = max;
    s->mask = nb - 1;
    s->slots = calloc(max, sizeof(*s->slots));
    s->buckets = malloc(nb * sizeof(*s->buckets));
    if (!s->slots || !s->buckets)
        goto fail;
    for (size_t i = 0; i < nb; i++)
        s->buckets[i] = NIL;
    if (getrandom(s->rng, sizeof(s->rng), 0) != (ssize_t)sizeof(s->rng)) {
        /* Not a secret, only unlikely to repeat: time and address will do. */
        s->rng[0] = (uint64_t)time(NULL);
        s->rng[1] = (uint64_t)(uintptr_t)s;
        s->rng[2] = 0x9e3779b97f4a7c15ull;
        s->rng[3] = 0xbf58476d1ce4e5b9ull;
    }
    return s;
fail:
    be_sessions_free(s);
    return NULL;
}

void be_sessions_free(struct be_sessions *s)
{
    if (!s)
        return;
    free(s->slots);
    free(s->buckets);
    free(s);
}

static struct be_session *find(struct be_sessions *s, const char *sid, size_t bucket)
{
    for (uint32_t i = s->buckets[bucket]; i != NIL; i = s->slots[i].next) {
        if (memcmp(s->slots[i].sid, sid, BE_SID_HEX) == 0)
            return &s->slots[i];
    }
    return NULL;
}

uint64_t be_sessions_hit(struct be_sessions *s, const char *sid)
{
    struct be_session *e = find(s, sid, hash_sid(sid) & s->mask);
    return e ? ++e->count : 0;
}

static void unlink_slot(struct be_sessions *s, uint32_t idx)
{
    uint32_t *link = &s->buckets[hash_sid(s->slots[idx].sid) & s->mask];
    while (*link != idx)
        link = &s->slots[*link].next;
    *link = s->slots[idx].next;
}

int be_sessions_create(struct be_sessions *s, char *sid)
{
    static const char hex[] = "0123456789abcdef";
    size_t bucket;
    do {
        for (int half = 0; half < 2; half++) {
            uint64_t r = rng_next(s->rng);
            for (int i = 0; i < 16; i++)
                sid[half * 16 + i] = hex[(r >> (i * 4)) & 15];
        }
        sid[BE_SID_HEX] = '\0';
        bucket = hash_sid(sid) & s->mask;
    } while (find(s, sid, bucket));

    uint32_t idx = (uint32_t)s->oldest;
    s->oldest = (s->oldest + 1) % s->max;
    struct be_session *e = &s->slots[idx];
    if (e->used)
        unlink_slot(s, idx);
    memcpy(e->sid, sid, BE_SID_HEX + 1);
    e->count = 1;
    e->used = true;
    e->next = s->buckets[bucket];
    s->buckets[bucket] = idx;
    return 0;
}
