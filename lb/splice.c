#include "splice.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* _GNU_SOURCE (splice, pipe2, F_SETPIPE_SZ) comes from the build. SIGPIPE is
 * ignored process-wide (main.c): splice to a closed socket gives EPIPE. */

/* A larger pipe means fewer splice calls per body; the kernel allows up to
 * /proc/sys/fs/pipe-max-size (1 MiB by default) and keeps the default 64 KiB
 * when it refuses. Pages are only pinned while bytes are in flight. */
#define PIPE_SIZE (1024 * 1024)

void lb_pipe_cache_init(struct lb_pipe_cache *cache, size_t keep, size_t limit)
{
    cache->spares = NULL;
    cache->n_spares = 0;
    cache->keep = keep;
    cache->in_use = 0;
    cache->limit = limit;
}

static void pipe_close(struct lb_pipe *pipe)
{
    close(pipe->rd);
    close(pipe->wr);
    free(pipe);
}

void lb_pipe_cache_destroy(struct lb_pipe_cache *cache)
{
    while (cache->spares) {
        struct lb_pipe *pipe = cache->spares;
        cache->spares = pipe->next_spare;
        pipe_close(pipe);
    }
    cache->n_spares = 0;
}

struct lb_pipe *lb_pipe_take(struct lb_pipe_cache *cache)
{
    if (cache->in_use >= cache->limit)
        return NULL;
    struct lb_pipe *pipe = cache->spares;
    if (pipe) {
        cache->spares = pipe->next_spare;
        cache->n_spares--;
    } else {
        pipe = malloc(sizeof(*pipe));
        int fds[2];
        if (!pipe || pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
            free(pipe);
            return NULL;
        }
        pipe->rd = fds[0];
        pipe->wr = fds[1];
        int cap = fcntl(pipe->wr, F_SETPIPE_SZ, PIPE_SIZE);
        if (cap < 0)
            cap = fcntl(pipe->wr, F_GETPIPE_SZ);
        pipe->cap = cap > 0 ? (size_t)cap : 65536;
    }
    pipe->len = 0;
    pipe->full = false;
    pipe->next_spare = NULL;
    cache->in_use++;
    return pipe;
}

void lb_pipe_give(struct lb_pipe_cache *cache, struct lb_pipe *pipe)
{
    if (!pipe)
        return;
    cache->in_use--;
    if (pipe->len > 0 || cache->n_spares >= cache->keep) {
        pipe_close(pipe);
        return;
    }
    pipe->next_spare = cache->spares;
    cache->spares = pipe;
    cache->n_spares++;
}

/* One splice call with lb's flags, retried on EINTR. */
static enum lb_io splice_once(int from, int to, size_t len, size_t *moved)
{
    ssize_t n;
    while ((n = splice(from, NULL, to, NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK)) < 0 &&
           errno == EINTR)
        ;
    *moved = n > 0 ? (size_t)n : 0;
    return lb_io_result(n);
}

enum lb_io lb_splice_in(int fd, struct lb_pipe *pipe, size_t max, size_t *moved)
{
    size_t room = pipe->cap - pipe->len;
    if (max > room)
        max = room;
    if (max == 0 || pipe->full) {
        *moved = 0;
        return LB_IO_AGAIN;
    }
    enum lb_io r = splice_once(fd, pipe->wr, max, moved);
    pipe->len += *moved;
    int waiting = 0;
    /* Nothing taken while the socket has bytes: the pipe's slots ran out. */
    if (r == LB_IO_AGAIN && pipe->len > 0 && ioctl(fd, FIONREAD, &waiting) == 0 && waiting > 0)
        pipe->full = true;
    return r;
}

enum lb_io lb_splice_out(struct lb_pipe *pipe, int fd, size_t *moved)
{
    if (pipe->len == 0) {
        *moved = 0;
        return LB_IO_AGAIN;
    }
    enum lb_io r = splice_once(pipe->rd, fd, pipe->len, moved);
    pipe->len -= *moved;
    if (*moved > 0)
        pipe->full = false;
    /* A pipe read never ends: an "EOF" here cannot be the client's. */
    return r == LB_IO_EOF ? LB_IO_AGAIN : r;
}

void lb_splice_set_lowat(int fd, size_t want, int *current)
{
    int v = want < 1 ? 1 : want > INT_MAX ? INT_MAX : (int)want;
    if (v == *current)
        return;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v)) == 0)
        *current = v;
}

bool lb_splice_socket_quiet(int fd)
{
    char byte;
    ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}
