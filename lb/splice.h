/* Zero-copy body forwarding with splice(2): socket → pipe → socket, so the
 * bytes of a large response body never enter lb's memory (the kernel moves
 * page references). A pipe belongs to one connection while it forwards a
 * body; empty pipes are kept by the worker for the next body. */
#ifndef LB_SPLICE_H
#define LB_SPLICE_H

#include <stdbool.h>
#include <stddef.h>

#include "io.h"

/* Bodies with at least this much left to forward are spliced; smaller ones
 * are cheaper to copy through the connection's buffers (a pipe costs two
 * syscalls per fill and may have to be created). */
#define LB_SPLICE_MIN_BODY (256 * 1024)

/* A splice from the server that moved at least this much means the server
 * is ahead of lb: lb then waits for a whole pipe before it is woken. */
#define LB_SPLICE_BATCH (256 * 1024)

/* How long bytes may wait below a raised low-water mark before lb looks (a
 * server that slowed down mid-body). */
#define LB_SPLICE_STALL 0.02

/* A worker keeps this many empty pipes, and has at most this many in use
 * (2 descriptors each; each pins up to 1 MiB of kernel memory while full);
 * past the limit bodies are copied through the buffers instead. */
#define LB_PIPES_SPARE 16
#define LB_PIPES_MAX 256

struct lb_pipe {
    int rd, wr;
    size_t len; /* bytes in the pipe */
    size_t cap; /* bytes the pipe holds at most, when every slot is full */
    /* The kernel took no more although the server had bytes: a pipe counts
     * slots, not bytes (one per splice or packet fragment), so small pieces
     * fill it long before `cap`. Cleared when bytes leave. */
    bool full;
    struct lb_pipe *next_spare;
};

/* The pipe may take more bytes now. */
static inline bool lb_pipe_has_room(const struct lb_pipe *pipe)
{
    return !pipe->full && pipe->len < pipe->cap;
}

/* A worker's empty pipes. One owner. */
struct lb_pipe_cache {
    struct lb_pipe *spares;
    size_t n_spares;
    size_t keep;   /* spares kept at most */
    size_t in_use; /* pipes out of the cache now */
    size_t limit;  /* pipes out at most: past it, bodies are copied instead */
};

void lb_pipe_cache_init(struct lb_pipe_cache *cache, size_t keep, size_t limit);
void lb_pipe_cache_destroy(struct lb_pipe_cache *cache);

/* An empty pipe, or NULL (the limit is reached, or pipe2 failed: out of fds). */
struct lb_pipe *lb_pipe_take(struct lb_pipe_cache *cache);

/* Returns a pipe; one still holding bytes is closed, not kept. NULL is fine. */
void lb_pipe_give(struct lb_pipe_cache *cache, struct lb_pipe *pipe);

/* Moves up to `max` bytes (and no more than the pipe has room for) from the
 * socket `fd` into the pipe. *moved gets how many. LB_IO_EOF when the peer
 * closed, LB_IO_AGAIN when the socket has nothing or the pipe is full (then
 * pipe->full is set). */
enum lb_io lb_splice_in(int fd, struct lb_pipe *pipe, size_t max, size_t *moved);

/* Wakes lb for a socket only once `want` bytes (at least 1) are waiting, or
 * at EOF: fewer, larger splices per body, and fewer cross-CPU wake-ups.
 * *current is the value the socket has (1 is the kernel's default); it is
 * only changed when it differs. */
void lb_splice_set_lowat(int fd, size_t want, int *current);

/* Moves what the pipe holds to the socket `fd`. *moved gets how many. */
enum lb_io lb_splice_out(struct lb_pipe *pipe, int fd, size_t *moved);

/* After a body's last byte: true when the socket holds nothing more (no
 * bytes past the body, no close), so the connection may be pooled. */
bool lb_splice_socket_quiet(int fd);

#endif
