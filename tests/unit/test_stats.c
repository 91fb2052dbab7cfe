/* Statistics: responses counted by status class, and the Prometheus text
 * rendered from workers' counters and the config's shared server state
 * (values, one line per worker and per server, label escaping). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "stats.h"

static struct lb_config *parse_ok(const char *yaml)
{
    char err[256];
    struct lb_config *cfg = lb_config_parse(yaml, strlen(yaml), "t.yaml", err, sizeof err);
    if (!cfg)
        fail_msg("unexpected error: %s", err);
    return cfg;
}

/* The text must hold `line` as a whole line. */
static void has_line(const char *text, const char *line)
{
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)); p++)
        if ((p == text || p[-1] == '\n') && p[n] == '\n')
            return;
    fail_msg("no line \"%s\" in:\n%s", line, text);
}

static void test_count_response(void **state)
{
    (void)state;
    struct lb_worker_stats s = {0};
    static const int statuses[] = {0, 99, 101, 200, 204, 302, 404, 431, 502, 503, 599, 600};
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        lb_stats_count_response(&s, statuses[i]);
    static const uint64_t want[6] = {3, 1, 2, 1, 2, 3}; /* none: 0, 99, 600 */
    for (size_t c = 0; c < 6; c++)
        assert_int_equal(atomic_load(&s.responses[c]), want[c]);
}

static void test_render(void **state)
{
    (void)state;
    struct lb_config *cfg = parse_ok(
        "limits: { max_connections: 500 }\n"
        "backends:\n"
        "  web:\n"
        "    servers:\n"
        "      - { address: 127.0.0.1:9001, id: a\"b\\c, weight: 3 }\n"
        "      - { address: 127.0.0.1:9002 }\n"
        "  api:\n"
        "    servers:\n"
        "      - { address: 127.0.0.1:9003, id: api1 }\n"
        "routes:\n"
        "  - { path_prefix: /api, backend: api }\n"
        "  - { backend: web }\n");
    struct lb_worker_stats w0 = {0}, w1 = {0};
    atomic_store(&w0.accepted, 10);
    atomic_store(&w1.accepted, 12);
    atomic_store(&w1.accept_eagain, 1);
    atomic_store(&w0.open, 4);
    lb_stats_count_response(&w0, 200);
    lb_stats_count_response(&w1, 503);
    lb_stats_count_response(&w1, 0);
    atomic_store(&w1.spliced_bodies, 7);
    struct lb_server *a = &cfg->backends[0].servers[0];
    struct lb_server *api1 = &cfg->backends[1].servers[0];
    atomic_store(&a->up, false);
    atomic_store(&a->active, 2);
    atomic_store(&api1->ejected_until_ms, 5000);
    atomic_store(&cfg->backends[1].queued, 3);
    struct lb_worker_stats *workers[] = {&w0, &w1};

    size_t len = 0;
    char *text = lb_stats_render(cfg, workers, 2, 9, 4000, &len);
    assert_non_null(text);
    assert_int_equal(strlen(text), len);
    has_line(text, "lb_connections_open 9");
    has_line(text, "lb_connections_max 500");
    has_line(text, "# TYPE lb_worker_connections_accepted_total counter");
    has_line(text, "lb_worker_connections_accepted_total{worker=\"0\"} 10");
    has_line(text, "lb_worker_connections_accepted_total{worker=\"1\"} 12");
    has_line(text, "lb_worker_accept_eagain_total{worker=\"0\"} 0");
    has_line(text, "lb_worker_accept_eagain_total{worker=\"1\"} 1");
    has_line(text, "lb_worker_connections_open{worker=\"0\"} 4");
    has_line(text, "lb_worker_responses_total{worker=\"0\",code=\"2xx\"} 1");
    has_line(text, "lb_worker_responses_total{worker=\"1\",code=\"5xx\"} 1");
    has_line(text, "lb_worker_responses_total{worker=\"1\",code=\"none\"} 1");
    has_line(text, "lb_worker_responses_total{worker=\"1\",code=\"2xx\"} 0");
    has_line(text, "lb_worker_spliced_bodies_total{worker=\"1\"} 7");
    has_line(text, "# TYPE lb_server_up gauge");
    has_line(text, "lb_server_up{backend=\"web\",server=\"a\\\"b\\\\c\"} 0"); /* escaped */
    has_line(text, "lb_server_up{backend=\"web\",server=\"127.0.0.1:9002\"} 1");
    has_line(text, "lb_server_requests_in_flight{backend=\"web\",server=\"a\\\"b\\\\c\"} 2");
    has_line(text, "lb_server_weight{backend=\"web\",server=\"a\\\"b\\\\c\"} 3");
    has_line(text, "lb_server_ejected{backend=\"api\",server=\"api1\"} 1");
    has_line(text, "lb_server_ejected{backend=\"web\",server=\"127.0.0.1:9002\"} 0");
    has_line(text, "lb_backend_queued_requests{backend=\"api\"} 3");
    has_line(text, "lb_backend_queued_requests{backend=\"web\"} 0");
    free(text);

    /* an ejection that has ended is not one */
    text = lb_stats_render(cfg, workers, 2, 0, 5000, &len);
    has_line(text, "lb_server_ejected{backend=\"api\",server=\"api1\"} 0");
    /* every sample line is "name{labels} value" or "name value" */
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (line[0] == '#')
            continue;
        char *space = strrchr(line, ' ');
        assert_non_null(space);
        char *end;
        strtoull(space + 1, &end, 10);
        assert_true(*end == '\0' && end > space + 1);
    }
    free(text);
    lb_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_count_response),
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
