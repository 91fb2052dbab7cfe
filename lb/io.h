/* Non-blocking socket I/O on buffers, with one tri-state result. */
#ifndef LB_IO_H
#define LB_IO_H

#include <errno.h>
#include <stddef.h>
#include <sys/types.h>

#include "buf.h"

enum lb_io {
    LB_IO_OK,    /* bytes moved */
    LB_IO_AGAIN, /* nothing to do until the socket is ready */
    LB_IO_EOF,   /* the peer closed its side (reads only) */
    LB_IO_ERROR, /* errno says why */
};

/* What a read-like call (recv, splice) that returned n means: LB_IO_OK for
 * bytes, LB_IO_EOF for 0, else LB_IO_AGAIN or LB_IO_ERROR by errno. The
 * caller calls again on EINTR itself. */
static inline enum lb_io lb_io_result(ssize_t n)
{
    if (n > 0)
        return LB_IO_OK;
    if (n == 0)
        return LB_IO_EOF;
    return errno == EAGAIN || errno == EWOULDBLOCK ? LB_IO_AGAIN : LB_IO_ERROR;
}

/* Reads once into the free space of b (compacting it first if its tail is at
 * the end). LB_IO_AGAIN also when b is full. */
enum lb_io lb_io_read(int fd, struct lb_buf *b);

/* Writes up to n bytes of p; *written gets how many went. */
enum lb_io lb_io_write(int fd, const char *p, size_t n, size_t *written);

/* Writes b's bytes and consumes what went. */
enum lb_io lb_io_flush(int fd, struct lb_buf *b);

#endif
