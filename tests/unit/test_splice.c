/* Spliced forwarding: the worker's pipe cache (limit, reuse, a pipe with
 * bytes left is closed, not kept) and lb_splice_in/out over real loopback TCP
 * connections (bytes exact and in order, the pipe's room respected, EOF,
 * the low-water mark). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdbool.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "splice.h"

static bool fd_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1;
}

static void test_cache_limit_and_reuse(void **state)
{
    (void)state;
    struct lb_pipe_cache cache;
    lb_pipe_cache_init(&cache, 1, 2);
    struct lb_pipe *a = lb_pipe_take(&cache);
    struct lb_pipe *b = lb_pipe_take(&cache);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(lb_pipe_take(&cache)); /* the limit: bodies are copied instead */
    assert_int_equal(cache.in_use, 2);
    assert_true(a->cap >= 65536);
    assert_int_equal(a->len, 0);

    int a_rd = a->rd;
    lb_pipe_give(&cache, a); /* empty: kept */
    assert_true(fd_open(a_rd));
    b->len = 1; /* as if bytes were left in it */
    int b_rd = b->rd, b_wr = b->wr;
    lb_pipe_give(&cache, b); /* not empty: closed */
    assert_false(fd_open(b_rd));
    assert_false(fd_open(b_wr));
    assert_int_equal(cache.in_use, 0);
    assert_int_equal(cache.n_spares, 1);

    struct lb_pipe *again = lb_pipe_take(&cache);
    assert_ptr_equal(again, a); /* the spare, not a new pipe */
    assert_int_equal(again->len, 0);
    struct lb_pipe *fresh = lb_pipe_take(&cache);
    assert_non_null(fresh);
    lb_pipe_give(&cache, again);
    lb_pipe_give(&cache, fresh); /* past `keep`: closed */
    assert_int_equal(cache.n_spares, 1);
    lb_pipe_give(&cache, NULL);
    lb_pipe_cache_destroy(&cache);
    assert_false(fd_open(a_rd));
}

/* A connected loopback TCP pair: fds[0] the client end, fds[1] the accepted
 * end, both non-blocking. */
static void tcp_pair(int fds[2])
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(l >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &len), 0);
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fds[0], (struct sockaddr *)&a, sizeof(a)), 0);
    fds[1] = accept(l, NULL, NULL);
    assert_true(fds[1] >= 0);
    close(l);
    for (int i = 0; i < 2; i++)
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
}

static void fill_pattern(unsigned char *p, size_t n, size_t offset)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((offset + i) * 7 + 3);
}

/* Writes what the socket takes now of p's n bytes; returns how many. */
static size_t write_some(int fd, const unsigned char *p, size_t n)
{
    ssize_t k = write(fd, p, n);
    return k > 0 ? (size_t)k : 0;
}

static void test_bytes_through_pipe(void **state)
{
    (void)state;
    int up[2], down[2]; /* server → lb, lb → client */
    tcp_pair(up);
    tcp_pair(down);
    struct lb_pipe_cache cache;
    lb_pipe_cache_init(&cache, 1, 1);
    struct lb_pipe *pipe = lb_pipe_take(&cache);
    assert_non_null(pipe);

    enum { TOTAL = 3 * 1024 * 1024 + 4321 };
    static unsigned char src[TOTAL], dst[TOTAL];
    fill_pattern(src, TOTAL, 0);
    size_t sent = 0, spliced_in = 0, got = 0;
    bool eof = false;
    for (int rounds = 0; rounds < 200000 && got < TOTAL; rounds++) {
        if (sent < TOTAL) {
            sent += write_some(up[0], src + sent, TOTAL - sent);
            if (sent == TOTAL)
                shutdown(up[0], SHUT_WR);
        }
        size_t moved;
        size_t before = pipe->len;
        enum lb_io r = lb_splice_in(up[1], pipe, TOTAL - spliced_in + 1, &moved);
        if (r == LB_IO_OK) {
            assert_true(moved > 0);
            assert_int_equal(pipe->len, before + moved);
            assert_true(pipe->len <= pipe->cap);
            spliced_in += moved;
        } else if (r == LB_IO_EOF) {
            eof = true;
        } else {
            assert_int_equal(r, LB_IO_AGAIN);
        }
        r = lb_splice_out(pipe, down[1], &moved);
        assert_true(r == LB_IO_OK || r == LB_IO_AGAIN);
        ssize_t k = read(down[0], dst + got, TOTAL - got);
        if (k > 0)
            got += (size_t)k;
    }
    assert_int_equal(spliced_in, TOTAL);
    assert_int_equal(got, TOTAL);
    assert_memory_equal(src, dst, TOTAL);
    /* the sender's close shows once its bytes are in */
    size_t moved;
    for (int i = 0; i < 1000 && !eof; i++)
        eof = lb_splice_in(up[1], pipe, 100, &moved) == LB_IO_EOF;
    assert_true(eof);
    assert_int_equal(pipe->len, 0);
    lb_pipe_give(&cache, pipe);
    lb_pipe_cache_destroy(&cache);
    for (int i = 0; i < 2; i++) {
        close(up[i]);
        close(down[i]);
    }
}

static void test_room_and_max_respected(void **state)
{
    (void)state;
    int up[2];
    tcp_pair(up);
    struct lb_pipe_cache cache;
    lb_pipe_cache_init(&cache, 1, 1);
    struct lb_pipe *pipe = lb_pipe_take(&cache);
    static unsigned char block[256 * 1024];
    fill_pattern(block, sizeof(block), 0);
    size_t moved;
    assert_int_equal(write_some(up[0], block, 1000), 1000);
    usleep(20000);
    /* never more than asked: the rest of the body belongs to no one yet */
    assert_int_equal(lb_splice_in(up[1], pipe, 300, &moved), LB_IO_OK);
    assert_int_equal(moved, 300);
    /* a full pipe takes nothing and says so */
    size_t cap = pipe->cap;
    pipe->len = cap;
    assert_int_equal(lb_splice_in(up[1], pipe, 300, &moved), LB_IO_AGAIN);
    assert_int_equal(moved, 0);
    pipe->len = 300;
    /* the rest, then nothing waiting */
    assert_int_equal(lb_splice_in(up[1], pipe, 1000, &moved), LB_IO_OK);
    assert_int_equal(moved, 700);
    assert_int_equal(lb_splice_in(up[1], pipe, 1000, &moved), LB_IO_AGAIN);
    lb_pipe_give(&cache, pipe); /* holds bytes: closed */
    assert_int_equal(cache.n_spares, 0);
    lb_pipe_cache_destroy(&cache);
    close(up[0]);
    close(up[1]);
}

/* A pipe counts slots, not bytes: many small pieces fill it long before its
 * byte capacity. lb_splice_in must then say so (pipe->full) instead of
 * leaving lb to poll a readable socket it cannot take from. */
static void test_slots_run_out(void **state)
{
    (void)state;
    int up[2], down[2];
    tcp_pair(up);
    tcp_pair(down);
    int one = 1;
    setsockopt(up[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct lb_pipe_cache cache;
    lb_pipe_cache_init(&cache, 1, 1);
    struct lb_pipe *pipe = lb_pipe_take(&cache);
    unsigned char piece[100];
    fill_pattern(piece, sizeof(piece), 0);
    size_t moved, total = 0;
    bool full = false;
    for (int i = 0; i < 100000 && !full; i++) {
        /* one small piece at a time, each taken as its own splice */
        assert_int_equal(write_some(up[0], piece, sizeof(piece)), sizeof(piece));
        for (int tries = 0; tries < 1000; tries++) {
            enum lb_io r = lb_splice_in(up[1], pipe, SIZE_MAX, &moved);
            if (r == LB_IO_OK) {
                total += moved;
                break;
            }
            assert_int_equal(r, LB_IO_AGAIN);
            if ((full = pipe->full))
                break;
        }
    }
    assert_true(full);
    assert_true(pipe->len < pipe->cap / 4); /* far from its byte capacity */
    assert_false(lb_pipe_has_room(pipe));
    assert_int_equal(lb_splice_in(up[1], pipe, SIZE_MAX, &moved), LB_IO_AGAIN);
    assert_int_equal(lb_splice_out(pipe, down[1], &moved), LB_IO_OK); /* slots free again */
    assert_false(pipe->full);
    assert_true(lb_pipe_has_room(pipe));
    lb_pipe_give(&cache, pipe);
    lb_pipe_cache_destroy(&cache);
    for (int i = 0; i < 2; i++) {
        close(up[i]);
        close(down[i]);
    }
}

static void test_socket_quiet(void **state)
{
    (void)state;
    int up[2];
    tcp_pair(up);
    assert_true(lb_splice_socket_quiet(up[1]));
    assert_int_equal(write_some(up[0], (const unsigned char *)"x", 1), 1);
    usleep(20000);
    assert_false(lb_splice_socket_quiet(up[1])); /* a byte past the body */
    char b;
    assert_int_equal(read(up[1], &b, 1), 1);
    assert_true(lb_splice_socket_quiet(up[1]));
    shutdown(up[0], SHUT_WR);
    usleep(20000);
    assert_false(lb_splice_socket_quiet(up[1])); /* the server closed */
    close(up[0]);
    close(up[1]);
}

static void test_lowat(void **state)
{
    (void)state;
    int up[2];
    tcp_pair(up);
    int current = 1, v;
    socklen_t len = sizeof(v);
    /* (the kernel caps the mark at half the receive buffer's maximum) */
    lb_splice_set_lowat(up[1], 16 * 1024, &current);
    assert_int_equal(current, 16 * 1024);
    assert_int_equal(getsockopt(up[1], SOL_SOCKET, SO_RCVLOWAT, &v, &len), 0);
    assert_int_equal(v, 16 * 1024);
    lb_splice_set_lowat(up[1], 0, &current); /* never below 1 */
    assert_int_equal(current, 1);
    assert_int_equal(getsockopt(up[1], SOL_SOCKET, SO_RCVLOWAT, &v, &len), 0);
    assert_int_equal(v, 1);
    close(up[0]);
    close(up[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cache_limit_and_reuse),
        cmocka_unit_test(test_bytes_through_pipe),
        cmocka_unit_test(test_room_and_max_respected),
        cmocka_unit_test(test_slots_run_out),
        cmocka_unit_test(test_socket_quiet),
        cmocka_unit_test(test_lowat),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
