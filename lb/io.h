/* Non-blocking socket I/O on buffers, with one tri-state result. */
#ifndef LB_IO_H
#define LB_IO_H

#include <stddef.h>
#include <sys/types.h>

#include "buf.h"

enum lb_io {
    LB_IO_OK,    /* bytes moved */
    LB_IO_AGAIN, /* nothing to do until the socket is ready */
    LB_IO_EOF,   /* the peer closed its side (reads only) */
    LB_IO_ERROR, /* errno says why */
};

/* Reads once into the free space of b (compacting it first if its tail is at
 * the end). LB_IO_AGAIN also when b is full. */
enum lb_io lb_io_read(int fd, struct lb_buf *b);

/* Writes up to n bytes of p; *written gets how many went. */
enum lb_io lb_io_write(int fd, const char *p, size_t n, size_t *written);

/* Writes b's bytes and consumes what went. */
enum lb_io lb_io_flush(int fd, struct lb_buf *b);

#endif
