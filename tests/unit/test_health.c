/* health.c through its public API: the rise/fall rule as tables and
 * sequences, usability and slow start, passive ejection (back-off, cap,
 * threads), and the health thread against small servers in this process:
 * state changes, the request it sends, tcp checks, timeouts, local errors
 * (EMFILE) that never count, and no fd leak over 10,000 checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "health.h"

/* ---- the rise/fall rule ---------------------------------------------------- */

#define UP LB_HEALTH_UP
#define DOWN LB_HEALTH_DOWN

static void test_next_table(void **state)
{
    (void)state;
    static const struct {
        enum lb_health_state state;
        unsigned streak;
        bool ok;
        unsigned rise, fall;
        enum lb_health_state want_state;
        unsigned want_streak;
        bool changed;
    } cases[] = {
        /* up: successes keep it there and clear the failures */
        {UP, 0, true, 2, 3, UP, 0, false},
        {UP, 2, true, 2, 3, UP, 0, false},
        /* up: failures count up to fall */
        {UP, 0, false, 2, 3, UP, 1, false},
        {UP, 1, false, 2, 3, UP, 2, false},
        {UP, 2, false, 2, 3, DOWN, 0, true},
        {UP, 0, false, 2, 1, DOWN, 0, true},
        {UP, 0, false, 9, 0, DOWN, 0, true}, /* fall 0 counts as 1 */
        /* down: failures keep it there and clear the successes */
        {DOWN, 0, false, 2, 3, DOWN, 0, false},
        {DOWN, 1, false, 2, 3, DOWN, 0, false},
        /* down: successes count up to rise */
        {DOWN, 0, true, 2, 3, DOWN, 1, false},
        {DOWN, 1, true, 2, 3, UP, 0, true},
        {DOWN, 0, true, 1, 3, UP, 0, true},
        {DOWN, 0, true, 0, 3, UP, 0, true}, /* rise 0 counts as 1 */
        {DOWN, 98, true, 100, 3, DOWN, 99, false},
        {DOWN, 99, true, 100, 3, UP, 0, true},
        /* a streak already past the threshold (rise lowered): changes now */
        {DOWN, 5, true, 2, 3, UP, 0, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct lb_health_counters c = {cases[i].state, cases[i].streak};
        struct lb_health_step got = lb_health_next(c, cases[i].ok, cases[i].rise, cases[i].fall);
        if (got.counters.state != cases[i].want_state ||
            got.counters.streak != cases[i].want_streak || got.changed != cases[i].changed)
            fail_msg("case %zu: got state %d streak %u changed %d", i, got.counters.state,
                     got.counters.streak, got.changed);
    }
}

/* Runs a string of checks ('+' ok, '-' failed) from `start`; returns the
 * states after each check as a string of 'U'/'D', and counts changes. */
static unsigned run_checks(enum lb_health_state start, const char *checks, unsigned rise,
                           unsigned fall, char *states)
{
    struct lb_health_counters c = {start, 0};
    unsigned changes = 0;
    for (size_t i = 0; checks[i]; i++) {
        struct lb_health_step step = lb_health_next(c, checks[i] == '+', rise, fall);
        changes += step.changed;
        c = step.counters;
        states[i] = c.state == UP ? 'U' : 'D';
        states[i + 1] = '\0';
    }
    return changes;
}

static void test_next_sequences(void **state)
{
    (void)state;
    static const struct {
        enum lb_health_state start;
        const char *checks;
        unsigned rise, fall;
        const char *want;
    } cases[] = {
        /* fall 3: the third failure in a row, not the third in all */
        {UP, "---", 2, 3, "UUD"},
        {UP, "--+--+--+---", 2, 3, "UUUUUUUUUUUD"},
        /* rise 2 brings it back after two successes in a row */
        {DOWN, "+-+-++", 2, 3, "DDDDDU"},
        {UP, "---++", 2, 3, "UUDDU"},
        {UP, "---+-++", 2, 3, "UUDDDDU"},
        /* a server that starts down (initial: down) needs rise successes */
        {DOWN, "+++", 3, 3, "DDU"},
        /* rise 1 / fall 1 follow every check */
        {UP, "-+-+", 1, 1, "DUDU"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char got[64];
        run_checks(cases[i].start, cases[i].checks, cases[i].rise, cases[i].fall, got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("case %zu (%s): got %s, want %s", i, cases[i].checks, got, cases[i].want);
    }
}

/* A check result that flips every time never changes the state with rise 2
 * and fall 3, from either state, whichever result comes first. */
static void test_next_flapping(void **state)
{
    (void)state;
    char checks[1001], states[1002];
    for (int first = 0; first < 2; first++) {
        for (int i = 0; i < 1000; i++)
            checks[i] = (i + first) % 2 ? '+' : '-';
        checks[1000] = '\0';
        assert_int_equal(run_checks(UP, checks, 2, 3, states), 0);
        assert_int_equal(run_checks(DOWN, checks, 2, 3, states), 0);
    }
    /* Two in a row either way is also not enough for rise 3 / fall 3. */
    assert_int_equal(run_checks(UP, "--++--++--++--++", 3, 3, states), 0);
    assert_int_equal(run_checks(DOWN, "++--++--++--++--", 3, 3, states), 0);
}

/* ---- usable, clock ----------------------------------------------------------- */

static void server_init(struct lb_server *s, const char *id, bool up)
{
    memset(s, 0, sizeof *s);
    snprintf(s->id, sizeof s->id, "%s", id);
    snprintf(s->address.text, sizeof s->address.text, "127.0.0.1:1");
    s->weight = 1;
    atomic_init(&s->up, up);
}

static void test_usable(void **state)
{
    (void)state;
    static const struct {
        bool up;
        uint64_t ejected_until, now;
        bool want;
    } cases[] = {
        {true, 0, 1000, true},        {false, 0, 1000, false}, {true, 1001, 1000, false},
        {true, 1000, 1000, true},     {true, 999, 1000, true}, {false, 999, 1000, false},
        {true, UINT64_MAX, 5, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct lb_server s;
        server_init(&s, "a", cases[i].up);
        atomic_store(&s.ejected_until_ms, cases[i].ejected_until);
        if (lb_health_usable(&s, cases[i].now) != cases[i].want)
            fail_msg("case %zu", i);
    }
    uint64_t a = lb_now_ms();
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    uint64_t b = lb_now_ms();
    assert_true(a > 0);
    assert_true(b >= a + 19 && b < a + 1000);
}

/* ---- passive detection ------------------------------------------------------- */

static void test_ejection_ms(void **state)
{
    (void)state;
    static const struct {
        double base, max;
        unsigned times;
        uint64_t want;
    } cases[] = {
        {10, 300, 0, 10000},  {10, 300, 1, 20000},
        {10, 300, 2, 40000},  {10, 300, 3, 80000},
        {10, 300, 4, 160000}, {10, 300, 5, 300000},
        {10, 300, 6, 300000}, {10, 300, 1000, 300000},
        {0.5, 0.5, 0, 500},   {0.5, 0.5, 7, 500},
        {1, 5, 2, 4000},      {1, 5, 3, 5000},
        {0.001, 1, 0, 1},     {0.001, 1, 9, 512},
        {0.001, 1, 10, 1000}, {10, 300, UINT32_MAX, 300000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct lb_passive_config p = {.failures = 5,
                                      .base_ejection = cases[i].base,
                                      .max_ejection = cases[i].max,
                                      .max_ejected_percent = 50};
        uint64_t got = lb_health_ejection_ms(&p, cases[i].times);
        if (got != cases[i].want)
            fail_msg("case %zu: base %g max %g times %u: %llu, want %llu", i, cases[i].base,
                     cases[i].max, cases[i].times, (unsigned long long)got,
                     (unsigned long long)cases[i].want);
    }
}

#define MAX_SERVERS 8

struct pool {
    struct lb_backend backend;
    struct lb_server servers[MAX_SERVERS];
};

static void pool_init(struct pool *p, size_t n, unsigned failures, unsigned percent)
{
    memset(p, 0, sizeof *p);
    snprintf(p->backend.name, sizeof p->backend.name, "test");
    p->backend.servers = p->servers;
    p->backend.n_servers = n;
    p->backend.passive = (struct lb_passive_config){.failures = failures,
                                                    .base_ejection = 10,
                                                    .max_ejection = 300,
                                                    .max_ejected_percent = percent};
    for (size_t i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "s%zu", i);
        server_init(&p->servers[i], id, true);
    }
}

static void report_n(struct pool *p, size_t i, enum lb_outcome o, unsigned n, uint64_t now)
{
    for (unsigned k = 0; k < n; k++)
        lb_health_report(&p->servers[i], &p->backend, o, now);
}

static uint64_t until(const struct pool *p, size_t i)
{
    return atomic_load(&p->servers[i].ejected_until_ms);
}

static void test_report_ejects(void **state)
{
    (void)state;
    struct pool p;
    pool_init(&p, 4, 3, 50);
    uint64_t now = 1000000;

    /* Two failures, then an OK: the count starts over. */
    report_n(&p, 0, LB_OUTCOME_CONNECT_FAILED, 2, now);
    assert_int_equal(atomic_load(&p.servers[0].passive_failures), 2);
    report_n(&p, 0, LB_OUTCOME_OK, 1, now);
    assert_int_equal(atomic_load(&p.servers[0].passive_failures), 0);
    report_n(&p, 0, LB_OUTCOME_RESET, 2, now);
    assert_int_equal(until(&p, 0), 0);
    assert_true(lb_health_usable(&p.servers[0], now));

    /* The third in a row, of any kind: ejected for base_ejection. */
    report_n(&p, 0, LB_OUTCOME_TIMEOUT, 1, now);
    assert_int_equal(until(&p, 0), now + 10000);
    assert_int_equal(atomic_load(&p.servers[0].ejections), 1);
    assert_int_equal(atomic_load(&p.servers[0].passive_failures), 0);
    assert_false(lb_health_usable(&p.servers[0], now));
    assert_false(lb_health_usable(&p.servers[0], now + 9999));
    assert_true(lb_health_usable(&p.servers[0], now + 10000));

    /* Failures while ejected (requests that were in flight) are not counted. */
    report_n(&p, 0, LB_OUTCOME_CONNECT_FAILED, 10, now + 5000);
    assert_int_equal(until(&p, 0), now + 10000);
    assert_int_equal(atomic_load(&p.servers[0].passive_failures), 0);

    /* Back, and failing again: twice as long, then 4x, 8x ... up to max. */
    static const uint64_t lengths[] = {20000, 40000, 80000, 160000, 300000, 300000};
    now += 10000;
    for (size_t k = 0; k < sizeof lengths / sizeof lengths[0]; k++) {
        report_n(&p, 0, LB_OUTCOME_CONNECT_FAILED, 3, now);
        assert_int_equal(until(&p, 0), now + lengths[k]);
        now += lengths[k];
    }
    assert_int_equal(atomic_load(&p.servers[0].ejections), 7);

    /* 5xx does not count without on_5xx, and resets the count. */
    report_n(&p, 1, LB_OUTCOME_CONNECT_FAILED, 2, now);
    report_n(&p, 1, LB_OUTCOME_5XX, 10, now);
    assert_int_equal(atomic_load(&p.servers[1].passive_failures), 0);
    report_n(&p, 1, LB_OUTCOME_CONNECT_FAILED, 2, now);
    assert_int_equal(until(&p, 1), 0);
    /* With on_5xx it is a failure like any other. */
    p.backend.passive.on_5xx = true;
    report_n(&p, 2, LB_OUTCOME_5XX, 3, now);
    assert_int_equal(until(&p, 2), now + 10000);

    /* failures: 0 turns it off. */
    p.backend.passive.failures = 0;
    report_n(&p, 3, LB_OUTCOME_CONNECT_FAILED, 100, now);
    assert_int_equal(until(&p, 3), 0);
    assert_int_equal(atomic_load(&p.servers[3].passive_failures), 0);
}

/* Never more than max_ejected_percent of a backend ejected at once. */
static void test_report_cap(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        unsigned percent;
        unsigned max_ejected;
    } cases[] = {
        {4, 50, 2}, {4, 49, 1}, {4, 100, 4}, {4, 0, 0},  {1, 50, 0}, {1, 100, 1},
        {3, 50, 1}, {3, 67, 2}, {8, 10, 0},  {8, 13, 1}, {2, 50, 1},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        struct pool p;
        pool_init(&p, cases[c].n, 1, cases[c].percent);
        uint64_t now = 5000;
        for (size_t i = 0; i < cases[c].n; i++)
            report_n(&p, i, LB_OUTCOME_CONNECT_FAILED, 3, now);
        unsigned ejected = 0;
        for (size_t i = 0; i < cases[c].n; i++)
            ejected += !lb_health_usable(&p.servers[i], now);
        if (ejected != cases[c].max_ejected)
            fail_msg("case %zu: %zu servers, %u%%: %u ejected, want %u", c, cases[c].n,
                     cases[c].percent, ejected, cases[c].max_ejected);
    }

    /* A server held back by the cap is ejected at its next failure once an
     * ejection ends, without a whole new series of failures. */
    struct pool p;
    pool_init(&p, 2, 3, 50);
    report_n(&p, 0, LB_OUTCOME_CONNECT_FAILED, 3, 1000);
    report_n(&p, 1, LB_OUTCOME_CONNECT_FAILED, 3, 1000);
    assert_int_equal(until(&p, 0), 11000);
    assert_int_equal(until(&p, 1), 0);
    assert_int_equal(atomic_load(&p.servers[1].passive_failures), 3);
    report_n(&p, 1, LB_OUTCOME_CONNECT_FAILED, 1, 11000);
    assert_int_equal(until(&p, 1), 21000);
    /* and server 0, back at 11000, cannot be ejected while 1 is */
    report_n(&p, 0, LB_OUTCOME_CONNECT_FAILED, 5, 12000);
    assert_int_equal(until(&p, 0), 11000);
}

/* Workers report at once: the cap holds under concurrency. */
struct hammer {
    struct pool *p;
    unsigned seed;
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    for (int k = 0; k < 20000; k++) {
        size_t i = (size_t)(rand_r(&h->seed) % MAX_SERVERS);
        enum lb_outcome o = rand_r(&h->seed) % 8 ? LB_OUTCOME_CONNECT_FAILED : LB_OUTCOME_OK;
        lb_health_report(&h->p->servers[i], &h->p->backend, o, 1000);
    }
    return NULL;
}

static void test_report_threads(void **state)
{
    (void)state;
    static struct pool p;
    pool_init(&p, MAX_SERVERS, 3, 25); /* at most 2 of 8 */
    pthread_t t[4];
    struct hammer h[4];
    for (unsigned i = 0; i < 4; i++) {
        h[i] = (struct hammer){&p, i + 1};
        assert_int_equal(pthread_create(&t[i], NULL, hammer_main, &h[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    unsigned ejected = 0;
    for (size_t i = 0; i < MAX_SERVERS; i++)
        ejected += !lb_health_usable(&p.servers[i], 1000);
    assert_int_equal(ejected, 2);
}

/* ---- servers for the health thread -------------------------------------------- */

enum mode {
    MODE_STATUS,  /* answers `status` (keeps reading the request first) */
    MODE_FLIP,    /* answers 200 and 503 in turn */
    MODE_SILENT,  /* accepts and never answers */
    MODE_CLOSE,   /* accepts and closes at once */
    MODE_GARBAGE, /* answers bytes that are not HTTP */
    MODE_INTERIM, /* answers 103 Early Hints, then `status` with a body */
};

#define HELD_MAX 32

struct test_server {
    int lfd;
    uint16_t port;
    pthread_t thread;
    atomic_bool stop;
    atomic_int mode;
    atomic_int status;
    atomic_uint requests;
    pthread_mutex_t lock;
    char last_request[512];
    int held[HELD_MAX]; /* MODE_SILENT connections, oldest closed first */
    unsigned n_held;
};

static void read_request(int fd, struct test_server *ts)
{
    char buf[512];
    size_t len = 0;
    struct pollfd pfd = {fd, POLLIN, 0};
    while (len < sizeof buf - 1 && poll(&pfd, 1, 1000) == 1) {
        ssize_t n = read(fd, buf + len, sizeof buf - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        buf[len] = '\0';
        if (strstr(buf, "\r\n\r\n"))
            break;
    }
    buf[len] = '\0';
    if (len == 0)
        return; /* a check cut short (lb_health_stop closes the one in flight) */
    pthread_mutex_lock(&ts->lock);
    memcpy(ts->last_request, buf, len + 1);
    pthread_mutex_unlock(&ts->lock);
}

static void answer(int fd, const char *text)
{
    ssize_t n = send(fd, text, strlen(text), MSG_NOSIGNAL);
    (void)n;
}

static void serve_one(struct test_server *ts, int fd)
{
    char resp[256];
    enum mode mode = (enum mode)atomic_load(&ts->mode);
    int status = atomic_load(&ts->status);
    unsigned nth = atomic_fetch_add(&ts->requests, 1);
    switch (mode) {
    case MODE_SILENT:
        if (ts->n_held == HELD_MAX) {
            close(ts->held[0]);
            memmove(ts->held, ts->held + 1, (HELD_MAX - 1) * sizeof ts->held[0]);
            ts->n_held--;
        }
        ts->held[ts->n_held++] = fd;
        return;
    case MODE_CLOSE:
        break;
    case MODE_GARBAGE:
        read_request(fd, ts);
        answer(fd, "SSH-2.0-OpenSSH_9.2\r\n\r\n");
        break;
    case MODE_FLIP:
        status = nth % 2 ? 503 : 200;
        /* fall through */
    case MODE_STATUS:
        read_request(fd, ts);
        snprintf(resp, sizeof resp, "HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\nhello", status);
        answer(fd, resp);
        break;
    case MODE_INTERIM:
        read_request(fd, ts);
        snprintf(resp, sizeof resp,
                 "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                 "HTTP/1.1 %d OK\r\nContent-Length: 2\r\n\r\nok",
                 status);
        answer(fd, resp);
        break;
    }
    close(fd);
}

static void *server_main(void *arg)
{
    struct test_server *ts = arg;
    struct pollfd pfd = {ts->lfd, POLLIN, 0};
    while (!atomic_load(&ts->stop)) {
        if (poll(&pfd, 1, 10) != 1)
            continue;
        int fd = accept4(ts->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            serve_one(ts, fd);
    }
    return NULL;
}

static uint16_t bound_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof sin;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

static int listen_any(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = 0};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    assert_int_equal(listen(fd, 512), 0);
    return fd;
}

static void server_start(struct test_server *ts, enum mode mode, int status)
{
    memset(ts, 0, sizeof *ts);
    pthread_mutex_init(&ts->lock, NULL);
    atomic_init(&ts->mode, mode);
    atomic_init(&ts->status, status);
    ts->lfd = listen_any();
    ts->port = bound_port(ts->lfd);
    assert_int_equal(pthread_create(&ts->thread, NULL, server_main, ts), 0);
}

static void server_stop(struct test_server *ts)
{
    atomic_store(&ts->stop, true);
    pthread_join(ts->thread, NULL);
    for (unsigned i = 0; i < ts->n_held; i++)
        close(ts->held[i]);
    close(ts->lfd);
    pthread_mutex_destroy(&ts->lock);
}

/* A loopback port nobody listens on (bound, then closed). */
static uint16_t refused_port(void)
{
    int fd = listen_any();
    uint16_t port = bound_port(fd);
    close(fd);
    return port;
}

static unsigned fd_count(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    unsigned n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n; /* includes ".", ".." and the DIR's own fd: the same every time */
}

static struct lb_config *config(const char *yaml)
{
    char err[256];
    struct lb_config *cfg = lb_config_parse(yaml, strlen(yaml), "t.yaml", err, sizeof err);
    if (!cfg)
        fail_msg("%s\n--- yaml:\n%s", err, yaml);
    return cfg;
}

/* Polls `cond` every millisecond for at most `seconds`. */
#define WAIT_FOR(cond, seconds)                                                                    \
    do {                                                                                           \
        struct timespec ts_ = {0, 1000000};                                                        \
        uint64_t end_ = lb_now_ms() + (uint64_t)((seconds)*1000);                                  \
        while (!(cond) && lb_now_ms() < end_)                                                      \
            nanosleep(&ts_, NULL);                                                                 \
        if (!(cond))                                                                               \
            fail_msg("timed out after %gs waiting for %s", (double)(seconds), #cond);              \
    } while (0)

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static bool is_up(const struct lb_config *cfg, size_t b, size_t s)
{
    return atomic_load(&cfg->backends[b].servers[s].up);
}

/* ---- the health thread ------------------------------------------------------------ */

/* initial: down needs rise successes; a 503 takes it down after fall
 * failures; up again after rise; up_since moves; the request is as specified. */
static void test_thread_http_transitions(void **state)
{
    (void)state;
    struct test_server ts;
    server_start(&ts, MODE_STATUS, 200);
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "backends:\n  app:\n    servers:\n      - address: 127.0.0.1:%u\n"
             "    health: { interval: 20ms, timeout: 500ms, rise: 3, fall: 2, initial: down }\n",
             ts.port);
    struct lb_config *cfg = config(yaml);
    const struct lb_server *s = &cfg->backends[0].servers[0];
    assert_false(is_up(cfg, 0, 0));
    assert_int_equal(lb_health_start(cfg), 0);
    assert_int_equal(lb_health_start(cfg), -1); /* one thread per process */

    WAIT_FOR(is_up(cfg, 0, 0), 5);
    /* not before the third success */
    assert_true(atomic_load(&ts.requests) >= 3);
    uint64_t since = atomic_load(&s->up_since_ms);
    assert_true(since > 0 && since <= lb_now_ms());

    char want[256];
    snprintf(want, sizeof want,
             "GET /health HTTP/1.1\r\nHost: 127.0.0.1:%u\r\nConnection: close\r\n"
             "User-Agent: lb-health\r\n\r\n",
             ts.port);
    pthread_mutex_lock(&ts.lock);
    assert_string_equal(ts.last_request, want);
    pthread_mutex_unlock(&ts.lock);

    atomic_store(&ts.status, 503);
    unsigned before = atomic_load(&ts.requests);
    WAIT_FOR(!is_up(cfg, 0, 0), 5);
    assert_true(atomic_load(&ts.requests) - before >= 2);

    atomic_store(&ts.status, 200);
    WAIT_FOR(is_up(cfg, 0, 0), 5);
    assert_true(atomic_load(&s->up_since_ms) > since);

    lb_health_stop();
    lb_health_stop(); /* twice is fine */
    server_stop(&ts);
    lb_config_free(cfg);
}

/* Each way a server can fail takes it down; tcp checks only connect; a
 * custom Host and path are sent; expect other than 200; interim 1xx skipped. */
static void test_thread_failures(void **state)
{
    (void)state;
    struct test_server silent, closing, garbage, ok204, interim, plain, custom;
    server_start(&silent, MODE_SILENT, 0);
    server_start(&closing, MODE_CLOSE, 0);
    server_start(&garbage, MODE_GARBAGE, 0);
    server_start(&ok204, MODE_STATUS, 204);
    server_start(&interim, MODE_INTERIM, 200);
    server_start(&plain, MODE_CLOSE, 0); /* fine for tcp: the connect succeeds */
    server_start(&custom, MODE_STATUS, 204);
    uint16_t refused = refused_port();
    char yaml[2048];
    snprintf(yaml, sizeof yaml,
             "backends:\n"
             "  http:\n"
             "    health: { interval: 10ms, timeout: 300ms, rise: 1, fall: 3 }\n"
             "    passive: { failures: 0 }\n"
             "    servers:\n"
             "      - { address: 127.0.0.1:%u, id: refused }\n"
             "      - { address: 127.0.0.1:%u, id: silent }\n"
             "      - { address: 127.0.0.1:%u, id: closing }\n"
             "      - { address: 127.0.0.1:%u, id: garbage }\n"
             "      - { address: 127.0.0.1:%u, id: ok204 }\n"
             "      - { address: 127.0.0.1:%u, id: interim }\n"
             "  custom:\n"
             "    health: { interval: 10ms, rise: 1, fall: 3, expect: 204, path: /hc?x=1, "
             "host: app.example }\n"
             "    servers: [ { address: 127.0.0.1:%u } ]\n"
             "  tcp:\n"
             "    health: { type: tcp, interval: 10ms, rise: 1, fall: 3 }\n"
             "    servers:\n"
             "      - { address: 127.0.0.1:%u, id: up }\n"
             "      - { address: 127.0.0.1:%u, id: refused }\n"
             "routes:\n  - { backend: http }\n",
             refused, silent.port, closing.port, garbage.port, ok204.port, interim.port,
             custom.port, plain.port, refused);
    struct lb_config *cfg = config(yaml);
    /* fall 3 for the servers that must stay up: one check delayed past its
     * timeout on a loaded machine must not fail the test. */
    assert_int_equal(lb_health_start(cfg), 0);
    WAIT_FOR(!is_up(cfg, 0, 0) && !is_up(cfg, 0, 1) && !is_up(cfg, 0, 2) && !is_up(cfg, 0, 3) &&
                 !is_up(cfg, 0, 4) && !is_up(cfg, 2, 1),
             5);
    /* Let many more checks run: the good ones stay up all along. */
    for (int k = 0; k < 50; k++) {
        assert_true(is_up(cfg, 0, 5)); /* 103 then 200 */
        assert_true(is_up(cfg, 1, 0)); /* 204 expected */
        assert_true(is_up(cfg, 2, 0)); /* tcp connect */
        sleep_ms(5);
    }
    assert_false(is_up(cfg, 0, 4)); /* 204 when 200 is expected */
    lb_health_stop();

    pthread_mutex_lock(&custom.lock);
    assert_string_equal(custom.last_request, "GET /hc?x=1 HTTP/1.1\r\nHost: app.example\r\n"
                                             "Connection: close\r\nUser-Agent: lb-health\r\n\r\n");
    pthread_mutex_unlock(&custom.lock);
    struct lb_health_totals t;
    lb_health_get_totals(&t);
    assert_int_equal(t.open_fds, 0);
    server_stop(&silent);
    server_stop(&closing);
    server_stop(&garbage);
    server_stop(&ok204);
    server_stop(&interim);
    server_stop(&plain);
    server_stop(&custom);
    lb_config_free(cfg);
}

/* A /health that flips every check never changes the state (rise 2, fall 3). */
static void test_thread_flapping(void **state)
{
    (void)state;
    struct test_server ts;
    server_start(&ts, MODE_FLIP, 0);
    char yaml[512];
    struct lb_config *cfg;
    struct lb_health_totals before, after;
    /* One checked server, so that its checks see every other answer; once
     * starting up, once starting down. */
    snprintf(yaml, sizeof yaml,
             "backends:\n  app:\n    servers:\n      - address: 127.0.0.1:%u\n"
             "    health: { interval: 5ms, timeout: 500ms, rise: 2, fall: 3 }\n",
             ts.port);
    for (int initial = 1; initial >= 0; initial--) {
        cfg = config(yaml);
        atomic_store(&cfg->backends[0].servers[0].up, initial);
        lb_health_get_totals(&before);
        assert_int_equal(lb_health_start(cfg), 0);
        for (int k = 0; k < 200; k++) {
            assert_int_equal(is_up(cfg, 0, 0), initial);
            sleep_ms(2);
        }
        lb_health_get_totals(&after);
        lb_health_stop();
        assert_true(after.checks - before.checks >= 40);
        assert_int_equal(is_up(cfg, 0, 0), initial);
        lb_config_free(cfg);
    }
    server_stop(&ts);
}

/* Every check connection is closed, on every path: the process has the same
 * fds after 10,000 checks, and at most one per server during them. */
static void test_thread_no_fd_leak(void **state)
{
    (void)state;
    unsigned fds_before = fd_count();
    struct test_server ok, bad, silent, garbage, closing;
    server_start(&ok, MODE_STATUS, 200);
    server_start(&bad, MODE_STATUS, 503);
    server_start(&silent, MODE_SILENT, 0);
    server_start(&garbage, MODE_GARBAGE, 0);
    server_start(&closing, MODE_CLOSE, 0);
    uint16_t refused = refused_port();
    char yaml[1024];
    snprintf(yaml, sizeof yaml,
             "backends:\n"
             "  app:\n"
             "    health: { interval: 1ms, timeout: 20ms }\n"
             "    servers:\n"
             "      - { address: 127.0.0.1:%u, id: a }\n"
             "      - { address: 127.0.0.1:%u, id: b }\n"
             "      - { address: 127.0.0.1:%u, id: c }\n"
             "      - { address: 127.0.0.1:%u, id: d }\n"
             "      - { address: 127.0.0.1:%u, id: e }\n"
             "      - { address: 127.0.0.1:%u, id: f }\n"
             "  tcp:\n"
             "    health: { type: tcp, interval: 1ms, timeout: 20ms }\n"
             "    servers: [ { address: 127.0.0.1:%u }, { address: 127.0.0.1:%u } ]\n"
             "routes:\n  - { backend: app }\n",
             ok.port, bad.port, silent.port, garbage.port, closing.port, refused, ok.port, refused);
    struct lb_config *cfg = config(yaml);
    struct lb_health_totals before, t;
    lb_health_get_totals(&before);
    unsigned fds_servers = fd_count();
    assert_int_equal(lb_health_start(cfg), 0);
    unsigned max_open = 0;
    do {
        sleep_ms(5);
        lb_health_get_totals(&t);
        if (t.open_fds > max_open)
            max_open = (unsigned)t.open_fds;
        /* our servers hold at most HELD_MAX silent connections plus one each */
        assert_true(fd_count() <= fds_servers + 8 + 2 + HELD_MAX + 5);
    } while (t.checks + t.local_errors - before.checks - before.local_errors < 10000);
    lb_health_stop();
    lb_health_get_totals(&t);
    assert_int_equal(t.open_fds, 0);
    assert_true(max_open <= 8);
    assert_int_equal(t.local_errors, before.local_errors);
    assert_true(t.ok - before.ok > 1000);
    assert_true(t.failed - before.failed > 1000);
    server_stop(&ok);
    server_stop(&bad);
    server_stop(&silent);
    server_stop(&garbage);
    server_stop(&closing);
    lb_config_free(cfg);
    assert_int_equal(fd_count(), fds_before);
}

/* EMFILE on lb's side is a local error: no check result, no state change,
 * even with fall 1. The target is a listening socket nobody accepts on, so a
 * tcp check that does get an fd succeeds without the server needing one. */
static void test_thread_emfile_not_counted(void **state)
{
    (void)state;
    int lfd = listen_any();
    char yaml[512];
    snprintf(yaml, sizeof yaml,
             "backends:\n  app:\n    servers:\n      - address: 127.0.0.1:%u\n"
             "    health: { type: tcp, interval: 2ms, timeout: 100ms, rise: 1, fall: 1 }\n",
             bound_port(lfd));
    struct lb_config *cfg = config(yaml);
    struct rlimit saved, low;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &saved), 0);
    struct lb_health_totals before, t;
    lb_health_get_totals(&before);
    assert_int_equal(lb_health_start(cfg), 0);

    /* Fill every fd slot below a low limit. */
    low = saved;
    low.rlim_cur = fd_count() + 16;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    static int fill[64];
    unsigned n_fill = 0;
    for (int fd; n_fill < 64 && (fd = dup(0)) >= 0;)
        fill[n_fill++] = fd;
    assert_int_equal(errno, EMFILE);
    struct lb_health_totals filled;
    lb_health_get_totals(&filled);

    WAIT_FOR((lb_health_get_totals(&t), t.local_errors - filled.local_errors >= 50), 5);
    assert_true(is_up(cfg, 0, 0));
    assert_int_equal(t.failed, before.failed);
    assert_int_equal(t.checks, filled.checks); /* no verdict while out of fds */

    for (unsigned i = 0; i < n_fill; i++)
        close(fill[i]);
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &saved), 0);
    /* Checks run again, and pass. */
    WAIT_FOR((lb_health_get_totals(&t), t.ok - filled.ok >= 5), 5);
    lb_health_stop();
    lb_health_get_totals(&t);
    assert_int_equal(t.failed, before.failed);
    assert_true(is_up(cfg, 0, 0));
    close(lfd);
    lb_config_free(cfg);
}

/* Ejections end by time alone; the sweep of the health thread notices,
 * logs the return and clears ejected_until_ms, and the ejection count
 * decays by one for every base_ejection spent without one. */
static void test_thread_ejection_return(void **state)
{
    (void)state;
    struct lb_config *cfg = config("backends:\n  app:\n    servers:\n"
                                   "      - address: 127.0.0.1:9\n"
                                   "      - address: 127.0.0.1:10\n"
                                   "    passive: { failures: 2, base_ejection: 200ms, "
                                   "max_ejection: 1s, max_ejected_percent: 50 }\n");
    struct lb_server *s = &cfg->backends[0].servers[0];
    const struct lb_backend *b = &cfg->backends[0];
    assert_int_equal(lb_health_start(cfg), 0);
    uint64_t t0 = lb_now_ms();
    lb_health_report(s, b, LB_OUTCOME_CONNECT_FAILED, t0);
    lb_health_report(s, b, LB_OUTCOME_CONNECT_FAILED, t0);
    assert_int_equal(atomic_load(&s->ejected_until_ms), t0 + 200);
    assert_false(lb_health_usable(s, lb_now_ms()));
    WAIT_FOR(atomic_load(&s->ejected_until_ms) == 0, 2);
    assert_true(lb_now_ms() >= t0 + 200);
    /* the return is when slow start begins */
    assert_int_equal(atomic_load(&s->up_since_ms), t0 + 200);
    assert_true(lb_health_usable(s, lb_now_ms()));
    assert_int_equal(atomic_load(&s->ejections), 1);
    WAIT_FOR(atomic_load(&s->ejections) == 0, 2);
    lb_health_stop();
    lb_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_next_table),
        cmocka_unit_test(test_next_sequences),
        cmocka_unit_test(test_next_flapping),
        cmocka_unit_test(test_usable),
        cmocka_unit_test(test_ejection_ms),
        cmocka_unit_test(test_report_ejects),
        cmocka_unit_test(test_report_cap),
        cmocka_unit_test(test_report_threads),
        cmocka_unit_test(test_thread_http_transitions),
        cmocka_unit_test(test_thread_failures),
        cmocka_unit_test(test_thread_flapping),
        cmocka_unit_test(test_thread_no_fd_leak),
        cmocka_unit_test(test_thread_emfile_not_counted),
        cmocka_unit_test(test_thread_ejection_return),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
