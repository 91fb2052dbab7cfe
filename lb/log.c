#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int access_fd = -1;
static int access_owned;

/* Access log lines wait in a per-thread buffer (only workers write them) and
 * go out in one write() per loop iteration (lb_log_flush, from the worker's
 * ev_prepare), or before a line that would not fit. A write holds whole
 * lines and at most PIPE_BUF bytes, so it stays atomic on a pipe and lines
 * of several workers never mix. */
#define PENDING_MAX 4096 /* PIPE_BUF on Linux */
#define LINE_MAX_LEN 2048
static _Thread_local char pending[PENDING_MAX];
static _Thread_local size_t pending_len;

int lb_log_open(const char *where)
{
    lb_log_close();
    if (!where)
        return 0;
    if (strcmp(where, "stdout") == 0) {
        access_fd = STDOUT_FILENO;
        return 0;
    }
    access_fd = open(where, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (access_fd < 0)
        return -1;
    access_owned = 1;
    return 0;
}

void lb_log_close(void)
{
    lb_log_flush(); /* lines of connections the main thread closed last */
    if (access_owned)
        close(access_fd);
    access_fd = -1;
    access_owned = 0;
}

/* Appends s, escaping what could forge a log line or break its quoting. */
static size_t put_escaped(char *dst, size_t pos, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len && pos + 4 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch >= 0x7f || ch == '"' || ch == '\\') {
            dst[pos++] = '\\';
            dst[pos++] = 'x';
            dst[pos++] = hex[ch >> 4];
            dst[pos++] = hex[ch & 15];
        } else {
            dst[pos++] = (char)ch;
        }
    }
    return pos;
}

static size_t put_text(char *dst, size_t pos, size_t cap, const char *fmt, ...)
{
    if (pos >= cap)
        return pos;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst + pos, cap - pos, fmt, ap);
    va_end(ap);
    if (n < 0)
        return pos;
    return (size_t)n < cap - pos ? pos + (size_t)n : cap - 1;
}

/* The time field, formatted once per second per thread. */
static const char *utc_now(void)
{
    static _Thread_local time_t cached = -1;
    static _Thread_local char when[32];
    time_t now = time(NULL);
    if (now != cached) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
        cached = now;
    }
    return when;
}

size_t lb_log_format(char *dst, size_t cap, const struct lb_access_entry *e)
{
    const char *when = utc_now();

    size_t pos = put_text(dst, 0, cap - 1, "%s %s \"", e->client, when);
    if (e->method) {
        pos = put_escaped(dst, pos, cap - 1, e->method, e->method_len);
        pos = put_text(dst, pos, cap - 1, " ");
        pos = put_escaped(dst, pos, cap - 1, e->target, e->target_len);
    } else {
        pos = put_text(dst, pos, cap - 1, "-");
    }
    pos = put_text(dst, pos, cap - 1, "\" %d %llu %s", e->status, (unsigned long long)e->bytes,
                   e->server ? e->server : "-");
    pos = put_text(dst, pos, cap - 1, e->connect_time >= 0 ? " %.3f" : " -", e->connect_time);
    pos = put_text(dst, pos, cap - 1, e->response_time >= 0 ? " %.3f" : " -", e->response_time);
    pos = put_text(dst, pos, cap - 1, " %.3f", e->total_time);
    dst[pos++] = '\n';
    return pos;
}

void lb_log_access(const struct lb_access_entry *e)
{
    if (access_fd < 0)
        return;
    if (PENDING_MAX - pending_len < LINE_MAX_LEN)
        lb_log_flush();
    pending_len += lb_log_format(pending + pending_len, LINE_MAX_LEN, e);
}

void lb_log_flush(void)
{
    if (pending_len > 0 && access_fd >= 0) {
        ssize_t n = write(access_fd, pending, pending_len);
        (void)n;
    }
    pending_len = 0;
}

static void log_event(const char *level, const char *fmt, va_list ap)
{
    char line[1024];
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm);
    int n = snprintf(line, sizeof(line), "lb: %s %s: ", when, level);
    if (n < 0 || (size_t)n >= sizeof(line))
        return;
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    if (m < 0)
        return;
    size_t len = (size_t)n + ((size_t)m < sizeof(line) - (size_t)n - 1 ? (size_t)m
                                                                       : sizeof(line) - (size_t)n - 2);
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void lb_log_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_event("error", fmt, ap);
    va_end(ap);
}

void lb_log_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_event("info", fmt, ap);
    va_end(ap);
}
