#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int lb_buf_init(struct lb_buf *buf, size_t cap)
{
    buf->head = buf->tail = 0;
    buf->data = malloc(cap);
    buf->cap = buf->data ? cap : 0;
    return buf->data ? 0 : -1;
}

void lb_buf_free(struct lb_buf *buf)
{
    free(buf->data);
    buf->data = NULL;
    buf->cap = buf->head = buf->tail = 0;
}

void lb_buf_consume(struct lb_buf *buf, size_t n)
{
    buf->head += n;
    if (buf->head >= buf->tail)
        buf->head = buf->tail = 0;
}

void lb_buf_compact(struct lb_buf *buf)
{
    if (buf->head == 0)
        return;
    size_t len = lb_buf_len(buf);
    memmove(buf->data, buf->data + buf->head, len);
    buf->head = 0;
    buf->tail = len;
}

int lb_buf_append_slow(struct lb_buf *buf, const void *src, size_t n)
{
    if (lb_buf_room(buf) < n)
        lb_buf_compact(buf);
    if (lb_buf_room(buf) < n)
        return -1;
    memcpy(lb_buf_end(buf), src, n);
    buf->tail += n;
    return 0;
}

int lb_buf_append_str(struct lb_buf *buf, const char *s)
{
    return lb_buf_append(buf, s, strlen(s));
}

/* Writes v in `base` (10 or 16) backwards into a small array, then appends. */
static int append_number(struct lb_buf *buf, uint64_t v, unsigned base)
{
    static const char digits[] = "0123456789abcdef";
    char text[24];
    size_t i = sizeof(text);
    do {
        text[--i] = digits[v % base];
        v /= base;
    } while (v);
    return lb_buf_append(buf, text + i, sizeof(text) - i);
}

int lb_buf_append_u64(struct lb_buf *buf, uint64_t v)
{
    return append_number(buf, v, 10);
}

int lb_buf_append_hex(struct lb_buf *buf, uint64_t v)
{
    return append_number(buf, v, 16);
}

int lb_buf_printf(struct lb_buf *buf, const char *fmt, ...)
{
    /* Formatted through a small stack buffer: vsnprintf needs a byte for its
     * terminator, which would make text that exactly fills `buf` fail. */
    char text[LB_BUF_PRINTF_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(text))
        return -1;
    return lb_buf_append(buf, text, (size_t)n);
}

int lb_buf_cache_init(struct lb_buf_cache *cache, size_t block_size, size_t keep)
{
    cache->blocks = calloc(keep, sizeof(*cache->blocks));
    cache->count = 0;
    cache->cap = cache->blocks ? keep : 0;
    cache->block_size = block_size;
    return cache->blocks ? 0 : -1;
}

void lb_buf_cache_destroy(struct lb_buf_cache *cache)
{
    while (cache->count > 0)
        free(cache->blocks[--cache->count]);
    free(cache->blocks);
    cache->blocks = NULL;
    cache->cap = 0;
}

int lb_buf_take(struct lb_buf_cache *cache, struct lb_buf *buf)
{
    buf->head = buf->tail = 0;
    buf->data = cache->count > 0 ? cache->blocks[--cache->count] : malloc(cache->block_size);
    buf->cap = buf->data ? cache->block_size : 0;
    return buf->data ? 0 : -1;
}

void lb_buf_give(struct lb_buf_cache *cache, struct lb_buf *buf)
{
    if (!buf->data)
        return;
    if (cache->count < cache->cap)
        cache->blocks[cache->count++] = buf->data;
    else
        free(buf->data);
    buf->data = NULL;
    buf->cap = buf->head = buf->tail = 0;
}
