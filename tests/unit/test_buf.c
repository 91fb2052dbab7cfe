/* Byte buffers: scripted tables of append/consume/compact/printf steps, each
 * checked against the live bytes and the room left afterwards. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "buf.h"

enum op {
    OP_END,     /* end of a script */
    OP_APPEND,  /* lb_buf_append(text) */
    OP_PRINTF,  /* lb_buf_printf("%s", text) */
    OP_PRINTFN, /* lb_buf_printf("%s=%d;", text, num) */
    OP_CONSUME, /* lb_buf_consume(num) */
    OP_COMPACT, /* lb_buf_compact() */
    OP_PRODUCE, /* copy text to lb_buf_end(), lb_buf_produce(strlen) — a read() */
};

struct step {
    enum op op;
    const char *text;
    int num;
    int rc;           /* expected return, where there is one */
    const char *want; /* live bytes afterwards */
    long room;        /* lb_buf_room() afterwards; -1: do not check */
};

struct script {
    const char *name;
    size_t cap;
    struct step steps[12];
};

/* Every script starts from a fresh buffer of `cap` bytes. */
static const struct script scripts[] = {
    {"append fills exactly",
     8,
     {{OP_APPEND, "abcd", 0, 0, "abcd", 4},
      {OP_APPEND, "efgh", 0, 0, "abcdefgh", 0},
      {OP_APPEND, "", 0, 0, "abcdefgh", 0},
      {OP_APPEND, "i", 0, -1, "abcdefgh", 0}}},
    {"append too big for an empty buffer",
     4,
     {{OP_APPEND, "abcde", 0, -1, "", 4}, {OP_APPEND, "abcd", 0, 0, "abcd", 0}}},
    {"append compacts when the tail is full",
     8,
     {{OP_APPEND, "abcdef", 0, 0, "abcdef", 2},
      {OP_CONSUME, NULL, 4, 0, "ef", 2},
      {OP_APPEND, "wxyz", 0, 0, "efwxyz", 2},
      {OP_APPEND, "12", 0, 0, "efwxyz12", 0}}},
    {"append that fits only after compaction, then not at all",
     8,
     {{OP_APPEND, "abcdefgh", 0, 0, "abcdefgh", 0},
      {OP_CONSUME, NULL, 3, 0, "defgh", 0},
      {OP_APPEND, "1234", 0, -1, "defgh", -1},
      {OP_APPEND, "123", 0, 0, "defgh123", 0}}},
    {"no compaction while the tail has room",
     8,
     {{OP_APPEND, "abcd", 0, 0, "abcd", 4},
      {OP_CONSUME, NULL, 2, 0, "cd", 4},
      {OP_APPEND, "ef", 0, 0, "cdef", 2}}},
    {"consume everything rewinds",
     8,
     {{OP_APPEND, "abcdef", 0, 0, "abcdef", 2},
      {OP_CONSUME, NULL, 6, 0, "", 8},
      {OP_APPEND, "12345678", 0, 0, "12345678", 0}}},
    {"consume zero and consume in steps",
     8,
     {{OP_APPEND, "abc", 0, 0, "abc", 5},
      {OP_CONSUME, NULL, 0, 0, "abc", 5},
      {OP_CONSUME, NULL, 1, 0, "bc", 5},
      {OP_CONSUME, NULL, 1, 0, "c", 5},
      {OP_CONSUME, NULL, 1, 0, "", 8}}},
    {"compact",
     8,
     {{OP_COMPACT, NULL, 0, 0, "", 8},
      {OP_APPEND, "abcdefg", 0, 0, "abcdefg", 1},
      {OP_COMPACT, NULL, 0, 0, "abcdefg", 1},
      {OP_CONSUME, NULL, 5, 0, "fg", 1},
      {OP_COMPACT, NULL, 0, 0, "fg", 6},
      {OP_COMPACT, NULL, 0, 0, "fg", 6}}},
    {"produce after a read into the end",
     8,
     {{OP_PRODUCE, "abc", 0, 0, "abc", 5},
      {OP_CONSUME, NULL, 1, 0, "bc", 5},
      {OP_PRODUCE, "de", 0, 0, "bcde", 3}}},
    {"printf",
     16,
     {{OP_PRINTF, "GET ", 0, 0, "GET ", 12},
      {OP_PRINTFN, "n", 42, 0, "GET n=42;", 7},
      {OP_PRINTFN, "x", -1, 0, "GET n=42;x=-1;", 2},
      {OP_PRINTF, "", 0, 0, "GET n=42;x=-1;", 2}}},
    {"printf too big writes nothing",
     8,
     {{OP_PRINTF, "abcd", 0, 0, "abcd", 4},
      {OP_PRINTF, "efghijkl", 0, -1, "abcd", -1},
      {OP_PRINTFN, "long", 123456, -1, "abcd", -1},
      {OP_APPEND, "ef", 0, 0, "abcdef", 2}}},
    {"printf too big for an empty buffer",
     4,
     {{OP_PRINTF, "abcdefgh", 0, -1, "", 4}, {OP_PRINTF, "abc", 0, 0, "abc", 1}}},
    {"printf compacts when the tail is full",
     8,
     {{OP_APPEND, "abcdef", 0, 0, "abcdef", 2},
      {OP_CONSUME, NULL, 5, 0, "f", 2},
      {OP_PRINTFN, "k", 7, 0, "fk=7;", 3}}},
    {"printf that does not fit even after compaction",
     8,
     {{OP_APPEND, "abcdef", 0, 0, "abcdef", 2},
      {OP_CONSUME, NULL, 2, 0, "cdef", 2},
      {OP_PRINTF, "123456", 0, -1, "cdef", -1},
      {OP_CONSUME, NULL, 4, 0, "", 8}}},
};

static void check_contents(const struct script *s, size_t k, const struct lb_buf *buf,
                           const struct step *st)
{
    size_t want_len = strlen(st->want);
    size_t len = lb_buf_len(buf);
    if (len != want_len || memcmp(lb_buf_start(buf), st->want, len) != 0)
        fail_msg("%s, step %zu: holds \"%.*s\", want \"%s\"", s->name, k, (int)len,
                 lb_buf_start(buf), st->want);
    if (st->room >= 0 && lb_buf_room(buf) != (size_t)st->room)
        fail_msg("%s, step %zu: room %zu, want %ld", s->name, k, lb_buf_room(buf), st->room);
    /* The invariants every step must keep. */
    assert_true(buf->head <= buf->tail);
    assert_true(buf->tail <= buf->cap);
    assert_int_equal(lb_buf_room(buf) + buf->tail, buf->cap);
    if (len == 0)
        assert_int_equal(buf->head, 0);
}

static int run_step(struct lb_buf *buf, const struct step *st)
{
    switch (st->op) {
    case OP_APPEND:
        return lb_buf_append(buf, st->text, strlen(st->text));
    case OP_PRINTF:
        return lb_buf_printf(buf, "%s", st->text);
    case OP_PRINTFN:
        return lb_buf_printf(buf, "%s=%d;", st->text, st->num);
    case OP_CONSUME:
        lb_buf_consume(buf, (size_t)st->num);
        return 0;
    case OP_COMPACT:
        lb_buf_compact(buf);
        return 0;
    case OP_PRODUCE: {
        size_t n = strlen(st->text);
        assert_true(lb_buf_room(buf) >= n);
        memcpy(lb_buf_end(buf), st->text, n);
        lb_buf_produce(buf, n);
        return 0;
    }
    case OP_END:
        break;
    }
    fail_msg("bad op");
    return -1;
}

static void test_scripts(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(scripts) / sizeof(scripts[0]); i++) {
        const struct script *s = &scripts[i];
        struct lb_buf buf;
        assert_int_equal(lb_buf_init(&buf, s->cap), 0);
        assert_int_equal(buf.cap, s->cap);
        assert_int_equal(lb_buf_len(&buf), 0);
        assert_int_equal(lb_buf_room(&buf), s->cap);
        for (size_t k = 0; k < sizeof(s->steps) / sizeof(s->steps[0]); k++) {
            const struct step *st = &s->steps[k];
            if (st->op == OP_END)
                break;
            int rc = run_step(&buf, st);
            if (rc != st->rc)
                fail_msg("%s, step %zu: returned %d, want %d", s->name, k, rc, st->rc);
            check_contents(s, k, &buf, st);
        }
        lb_buf_free(&buf);
    }
}

/* A failed append or printf leaves the live bytes exactly as they were,
 * whatever the mix of head offset and fill. */
static void test_overflow_writes_nothing(void **state)
{
    (void)state;
    static const char fill[] = "0123456789abcdef";
    static const char big[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (size_t used = 0; used <= 16; used++) {
        for (size_t consumed = 0; consumed <= used; consumed++) {
            struct lb_buf buf;
            assert_int_equal(lb_buf_init(&buf, 16), 0);
            assert_int_equal(lb_buf_append(&buf, fill, used), 0);
            lb_buf_consume(&buf, consumed);
            size_t live = used - consumed;
            size_t too_big = 16 - live + 1;

            char before[16];
            memcpy(before, lb_buf_start(&buf), live);

            assert_int_equal(lb_buf_append(&buf, big, too_big), -1);
            assert_int_equal(lb_buf_len(&buf), live);
            assert_memory_equal(lb_buf_start(&buf), before, live);

            assert_int_equal(lb_buf_printf(&buf, "%.*s", (int)too_big, big), -1);
            assert_int_equal(lb_buf_len(&buf), live);
            assert_memory_equal(lb_buf_start(&buf), before, live);

            /* What does fit still goes in after the failures (one byte
             * short of full, so this holds apart from the exact-fit case
             * below). */
            if (live < 16) {
                assert_int_equal(lb_buf_printf(&buf, "%.*s", (int)(16 - live - 1), big), 0);
                assert_int_equal(lb_buf_len(&buf), 15);
                assert_memory_equal(lb_buf_start(&buf), before, live);
                assert_memory_equal(lb_buf_start(&buf) + live, big, 16 - live - 1);
            }
            lb_buf_free(&buf);
        }
    }
}

/* Text exactly as long as the free space fits, as it does for append: the
 * buffer is bytes, not a C string, so it keeps no terminator. */
static void test_printf_exact_fit(void **state)
{
    (void)state;
    struct lb_buf buf;
    assert_int_equal(lb_buf_init(&buf, 8), 0);
    assert_int_equal(lb_buf_printf(&buf, "%s", "abcdefgh"), 0);
    assert_int_equal(lb_buf_len(&buf), 8);
    assert_memory_equal(lb_buf_start(&buf), "abcdefgh", 8);

    lb_buf_consume(&buf, 8);
    assert_int_equal(lb_buf_append(&buf, "xyz", 3), 0);
    lb_buf_consume(&buf, 1);
    assert_int_equal(lb_buf_printf(&buf, "%d", 123456), 0);
    assert_int_equal(lb_buf_len(&buf), 8);
    assert_memory_equal(lb_buf_start(&buf), "yz123456", 8);
    lb_buf_free(&buf);
}

static void test_free_twice(void **state)
{
    (void)state;
    struct lb_buf buf;
    assert_int_equal(lb_buf_init(&buf, 32), 0);
    assert_int_equal(lb_buf_append(&buf, "abc", 3), 0);
    lb_buf_free(&buf);
    assert_null(buf.data);
    assert_int_equal(buf.cap, 0);
    assert_int_equal(lb_buf_len(&buf), 0);
    assert_int_equal(lb_buf_room(&buf), 0);
    lb_buf_free(&buf);
    assert_null(buf.data);
}

/* A long stream through a small buffer: what comes out is what went in. */
static void test_stream(void **state)
{
    (void)state;
    struct lb_buf buf;
    assert_int_equal(lb_buf_init(&buf, 64), 0);
    unsigned next_in = 0, next_out = 0;
    for (int round = 0; round < 2000; round++) {
        char chunk[32];
        size_t n = (size_t)(round % 31) + 1;
        for (size_t i = 0; i < n; i++)
            chunk[i] = (char)(next_in + i);
        if (lb_buf_append(&buf, chunk, n) == 0)
            next_in += (unsigned)n;
        else
            assert_true(lb_buf_len(&buf) + n > 64);
        size_t take = lb_buf_len(&buf) / 2 + (size_t)(round % 3);
        if (take > lb_buf_len(&buf))
            take = lb_buf_len(&buf);
        for (size_t i = 0; i < take; i++)
            assert_int_equal((unsigned char)lb_buf_start(&buf)[i], (unsigned char)(next_out + i));
        lb_buf_consume(&buf, take);
        next_out += (unsigned)take;
    }
    assert_int_equal(next_in - next_out, lb_buf_len(&buf));
    assert_true(next_out > 10000);
    lb_buf_free(&buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scripts),          cmocka_unit_test(test_overflow_writes_nothing),
        cmocka_unit_test(test_printf_exact_fit), cmocka_unit_test(test_free_twice),
        cmocka_unit_test(test_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
