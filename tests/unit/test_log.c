/* The access log: line format and escaping, and the per-thread buffering:
 * nothing is written before lb_log_flush() unless the buffer is full, every
 * write holds whole lines and at most 4 KiB (atomic on a pipe), and closing
 * the log writes what waits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

static const struct lb_access_entry entry = {
    .client = "10.0.0.9",
    .method = "GET",
    .method_len = 3,
    .target = "/a\"b\x01",
    .target_len = 5,
    .status = 200,
    .bytes = 16,
    .server = "127.0.0.1:9001",
    .connect_time = 0.001,
    .response_time = -1,
    .total_time = 0.25,
};

static void test_format(void **state)
{
    (void)state;
    char line[512];
    size_t len = lb_log_format(line, sizeof(line), &entry);
    line[len] = '\0';
    assert_int_equal(line[len - 1], '\n');
    /* "10.0.0.9 YYYY-MM-DDTHH:MM:SSZ "..." ..." */
    assert_memory_equal(line, "10.0.0.9 ", 9);
    assert_int_equal(line[9 + 20 - 1], 'Z');
    assert_non_null(strstr(line, " \"GET /a\\x22b\\x01\" 200 16 127.0.0.1:9001 0.001 - 0.250\n"));
}

static off_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void test_buffered_whole_lines(void **state)
{
    (void)state;
    char path[] = "/tmp/lb-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(lb_log_open(path), 0);
    char line[512];
    size_t one = lb_log_format(line, sizeof(line), &entry);

    lb_log_access(&entry);
    lb_log_access(&entry);
    assert_int_equal(file_size(path), 0); /* waiting for the flush */
    lb_log_flush();
    assert_int_equal(file_size(path), 2 * one);

    /* many lines: the buffer writes itself out before it overflows, whole
     * lines at a time, never more than 4 KiB in one go */
    off_t last = file_size(path);
    for (int i = 0; i < 200; i++) {
        lb_log_access(&entry);
        off_t now = file_size(path);
        if (now != last) {
            assert_true(now - last <= 4096);
            assert_int_equal((now - 2 * (off_t)one) % (off_t)one, 0);
            last = now;
        }
    }
    assert_true(last > 2 * (off_t)one); /* it did write before the flush */
    lb_log_close(); /* writes what waits */
    assert_int_equal(file_size(path), 202 * one);
    lb_log_flush(); /* closed: nothing more, nothing breaks */
    assert_int_equal(file_size(path), 202 * one);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_buffered_whole_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
