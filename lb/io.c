#include "io.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

enum lb_io lb_io_read(int fd, struct lb_buf *b)
{
    if (lb_buf_room(b) == 0)
        lb_buf_compact(b);
    if (lb_buf_room(b) == 0)
        return LB_IO_AGAIN;
    ssize_t n;
    /* recv, not read: sockets only, and it skips the VFS layer (file
     * position lock, permission hooks) that read() crosses per call. */
    while ((n = recv(fd, lb_buf_end(b), lb_buf_room(b), 0)) < 0 && errno == EINTR)
        ;
    if (n > 0)
        lb_buf_produce(b, (size_t)n);
    return lb_io_result(n);
}

enum lb_io lb_io_write(int fd, const char *p, size_t n, size_t *written)
{
    *written = 0;
    while (*written < n) {
        /* MSG_NOSIGNAL: a peer that closed gives EPIPE, never SIGPIPE. */
        ssize_t k = send(fd, p + *written, n - *written, MSG_NOSIGNAL);
        if (k > 0) {
            *written += (size_t)k;
            continue;
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return *written ? LB_IO_OK : LB_IO_AGAIN;
        return LB_IO_ERROR;
    }
    return LB_IO_OK;
}

enum lb_io lb_io_flush(int fd, struct lb_buf *b)
{
    size_t n;
    enum lb_io r = lb_io_write(fd, lb_buf_start(b), lb_buf_len(b), &n);
    lb_buf_consume(b, n);
    return r;
}
