/* Access log and error log. The access log is one line per request; a
 * worker's lines go out together, once per loop iteration, in writes of
 * whole lines small enough to be atomic, so lines from several workers never
 * interleave. */
#ifndef LB_LOG_H
#define LB_LOG_H

#include <stddef.h>
#include <stdint.h>

struct lb_access_entry {
    const char *client;      /* peer IP */
    const char *method;      /* may be NULL when the request did not parse */
    size_t method_len;
    const char *target;
    size_t target_len;
    int status;              /* what the client got; 0: nothing */
    uint64_t bytes;          /* bytes sent to the client for this response */
    const char *server;      /* backend server address, or "-" */
    double connect_time;     /* seconds, -1 when not connected */
    double response_time;    /* seconds to the response head, -1 when none */
    double total_time;       /* seconds from the first byte of the request */
};

/* Opens the access log: "stdout", a path (appended to), or NULL for off.
 * Returns 0, or -1 with errno. */
int lb_log_open(const char *where);

/* Closes the access log, if a file. */
void lb_log_close(void);

/* Adds one access log line to the calling thread's pending lines (no-op when
 * off); lb_log_flush() writes them. Control characters and quotes in
 * client-supplied fields are escaped as \xHH. */
void lb_log_access(const struct lb_access_entry *e);

/* Writes the calling thread's pending access log lines: a worker calls it
 * once per loop iteration and when it ends. */
void lb_log_flush(void);

/* Formats the line into dst (for tests). Returns its length, newline included. */
size_t lb_log_format(char *dst, size_t cap, const struct lb_access_entry *e);

/* Error/event log on stderr: "lb: <time> <level>: message". */
void lb_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void lb_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
