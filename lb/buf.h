/* Fixed-capacity byte buffers with exactly one owner each.
 *
 * A buffer holds the bytes [data + head, data + tail). Readers consume from
 * head, writers append at tail; lb_buf_compact() moves the live bytes to the
 * front when the tail runs into the end. Pure: no I/O, no event loop. */
#ifndef LB_BUF_H
#define LB_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct lb_buf {
    char *data;
    size_t cap;
    size_t head; /* first unconsumed byte */
    size_t tail; /* one past the last byte */
};

/* Allocates cap bytes. Returns 0, or -1 when out of memory (buf is then empty). */
int lb_buf_init(struct lb_buf *buf, size_t cap);

/* Frees the storage; safe to call twice. */
void lb_buf_free(struct lb_buf *buf);

static inline size_t lb_buf_len(const struct lb_buf *buf)
{
    return buf->tail - buf->head;
}

/* Free space at the tail, without compacting. */
static inline size_t lb_buf_room(const struct lb_buf *buf)
{
    return buf->cap - buf->tail;
}

static inline char *lb_buf_start(const struct lb_buf *buf)
{
    return buf->data + buf->head;
}

static inline char *lb_buf_end(const struct lb_buf *buf)
{
    return buf->data + buf->tail;
}

/* Marks n bytes at the tail as written (after a read() into lb_buf_end()). */
static inline void lb_buf_produce(struct lb_buf *buf, size_t n)
{
    buf->tail += n;
}

/* Drops n bytes from the head; an emptied buffer rewinds to offset 0. */
void lb_buf_consume(struct lb_buf *buf, size_t n);

/* Moves the live bytes to the front so all free space is at the tail. */
void lb_buf_compact(struct lb_buf *buf);

/* lb_buf_append() when the bytes do not fit at the tail: compacts first. */
int lb_buf_append_slow(struct lb_buf *buf, const void *src, size_t n);

/* Appends n bytes, compacting if needed. Returns 0, or -1 when they do not fit
 * (nothing is written then). Inline: a head is written in a few dozen
 * appends, many of a constant size the compiler turns into plain stores. */
static inline int lb_buf_append(struct lb_buf *buf, const void *src, size_t n)
{
    if (buf->cap - buf->tail < n)
        return lb_buf_append_slow(buf, src, n);
    memcpy(buf->data + buf->tail, src, n);
    buf->tail += n;
    return 0;
}

/* Appends a string, an unsigned number in decimal, or in hex. Return 0, or
 * -1 when it does not fit (nothing is written then). Cheaper than printf on
 * the hot path. */
int lb_buf_append_str(struct lb_buf *buf, const char *s);
int lb_buf_append_u64(struct lb_buf *buf, uint64_t v);
int lb_buf_append_hex(struct lb_buf *buf, uint64_t v);

#define LB_BUF_PRINTF_MAX 1024

/* Appends printf-formatted text of less than LB_BUF_PRINTF_MAX bytes.
 * Returns 0, or -1 when it does not fit (nothing is written then). */
int lb_buf_printf(struct lb_buf *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Spare storage blocks of one size, so a busy worker does not malloc per
 * request and an idle connection holds no buffer. One owner (a worker). */
struct lb_buf_cache {
    char **blocks;
    size_t count;
    size_t cap;        /* blocks kept at most */
    size_t block_size; /* capacity of every buffer taken from the cache */
};

/* Returns 0, or -1 when out of memory. */
int lb_buf_cache_init(struct lb_buf_cache *cache, size_t block_size, size_t keep);
void lb_buf_cache_destroy(struct lb_buf_cache *cache);

/* Gives buf storage (buf must have none). Returns 0, or -1 out of memory. */
int lb_buf_take(struct lb_buf_cache *cache, struct lb_buf *buf);

/* Returns buf's storage to the cache (or frees it); buf then has none. */
void lb_buf_give(struct lb_buf_cache *cache, struct lb_buf *buf);

#endif
