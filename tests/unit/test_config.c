/* config.c through its public API: tables of good and bad YAML (every error
 * names its exact line), defaults, value syntax, routing. Runs under ASan, so
 * every parse, good or bad, also checks that nothing leaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "balance.h"
#include "config.h"

#define ONE_BACKEND "backends:\n  app:\n    servers:\n      - address: 127.0.0.1:9001\n"

static struct lb_config *parse(const char *yaml, char *err, size_t err_len)
{
    return lb_config_parse(yaml, strlen(yaml), "t.yaml", err, err_len);
}

static struct lb_config *parse_ok(const char *yaml)
{
    char err[256];
    struct lb_config *cfg = parse(yaml, err, sizeof err);
    if (!cfg)
        fail_msg("unexpected error: %s\n--- yaml:\n%s", err, yaml);
    return cfg;
}

static uint16_t port_of(const struct lb_address *a)
{
    if (a->sa.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
}

/* ---- bad configs: each error at its line -------------------------------- */

struct bad_case {
    const char *yaml;
    int line;
    const char *message; /* a part of the message after "t.yaml:LINE: " */
};

static const struct bad_case bad_cases[] = {
    /* header rules */
    {"headers:\n  x_forwarded_for: bogus\n", 2, "x_forwarded_for: expected replace or append"},
    {"headers: { underscores: yes }\n", 1, "underscores: expected allow or drop"},
    {"headers:\n  via: off\n", 2, "unknown key 'via' in"},
    {"timeouts: { tunnel: 0s }\n", 1, "tunnel"},
    /* the stats endpoint */
    {ONE_BACKEND "stats: {}\n", 5, "stats: 'listen' is required"},
    {ONE_BACKEND "stats:\n  listen: 127.0.0.1:99999\n", 6, "listen: bad address"},
    {ONE_BACKEND "stats:\n  listen: 127.0.0.1:9100\n  path: /x\n", 7, "unknown key 'path' in stats"},
    {"listen:\n  - address: 127.0.0.1:9100\n" ONE_BACKEND "stats:\n  listen: 127.0.0.1:9100\n", 8,
     "stats: 127.0.0.1:9100 overlaps the listen address 127.0.0.1:9100"},
    {ONE_BACKEND "stats: { listen: 127.0.0.1:8080 }\n", 5,
     "overlaps the listen address 127.0.0.1:8080"}, /* the default listen address */
    {"listen:\n  - address: 0.0.0.0:9100\n" ONE_BACKEND "stats:\n  listen: 127.0.0.1:9100\n", 8,
     "stats: 127.0.0.1:9100 overlaps the listen address 0.0.0.0:9100"},
    {"listen:\n  - address: \"[::1]:9100\"\n" ONE_BACKEND "stats:\n  listen: \"[::]:9100\"\n", 8,
     "overlaps the listen address [::1]:9100"},
    /* unknown keys, at every level */
    {"bogus: 1\n", 1, "unknown key 'bogus' in the top level"},
    {"workers: 2\n\nwrokers: 3\n", 3, "unknown key 'wrokers'"},
    {"log: { access: stdout, error: x }\n", 1, "unknown key 'error' in log"},
    {"timeouts:\n  connect: 1s\n  conect: 2s\n", 3, "unknown key 'conect' in timeouts"},
    {"limits:\n  max_conns: 5\n", 2, "unknown key 'max_conns' in limits"},
    {"listen:\n  - address: 127.0.0.1:80\n    tls: on\n", 3, "unknown key 'tls' in listen entry"},
    {"backends:\n  app:\n    balanse: roundrobin\n", 3, "unknown key 'balanse' in backend 'app'"},
    {"backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001, wieght: 2 }\n", 4,
     "unknown key 'wieght' in server (known: address, weight, id, max_conns)"},
    {ONE_BACKEND "routes:\n  - { backend: app, prefix: /x }\n", 6, "unknown key 'prefix' in route"},
    /* duplicate keys */
    {"workers: 1\nworkers: 2\n", 2, "duplicate key 'workers' (first on line 1)"},
    {"timeouts: { connect: 1s, connect: 2s }\n", 1, "duplicate key 'connect'"},
    /* wrong types */
    {"timeouts: 5s\n", 1, "timeouts: expected a mapping, got a scalar"},
    {"limits:\n  - max_connections: 5\n", 2, "limits: expected a mapping, got a list"},
    {"listen:\n  address: 127.0.0.1:80\n", 2, "listen: expected a list, got a mapping"},
    {"listen:\n", 1, "listen: expected a list, got nothing"},
    {"listen: [ 127.0.0.1:80 ]\n", 1, "listen entry: expected a mapping, got a scalar"},
    {"workers: [ 1 ]\n", 1, "workers: expected a value, got a list"},
    {"log:\n  access:\n", 2, "access: missing value"},
    {"log: { access: \"\" }\n", 1, "access: missing value"},
    {"backends:\n  - app\n", 2, "backends: expected a mapping, got a list"},
    {"backends:\n  app: 127.0.0.1:9001\n", 2, "backend 'app': expected a mapping, got a scalar"},
    {"backends:\n  app:\n    servers:\n      address: 127.0.0.1:9001\n", 4,
     "servers: expected a list, got a mapping"},
    {"backends:\n  app:\n    servers:\n      - { address: [ 127.0.0.1:9001 ] }\n", 4,
     "address: expected a value, got a list"},
    {"backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001, weight: { a: 1 } }\n", 4,
     "weight: expected a value, got a mapping"},
    {ONE_BACKEND "routes:\n  backend: app\n", 6, "routes: expected a list, got a mapping"},
    {"? [a, b]\n: 1\n", 1, "a key must be a plain name, got a list"},
    {"[ 1, 2 ]\n", 1, "the top level: expected a mapping, got a list"},
    {"just text\n", 1, "the top level: expected a mapping"},
    /* workers */
    {"workers: 0\n", 1, "workers: expected 'auto' or a number from 1 to 256, got '0'"},
    {"workers: 257\n", 1, "workers: expected 'auto'"},
    {"workers: many\n", 1, "workers: expected 'auto'"},
    {"workers: -1\n", 1, "workers: expected 'auto'"},
    /* durations */
    {"timeouts:\n  connect: 5 s\n", 2, "connect: bad duration '5 s'"},
    {"timeouts:\n  server: -1s\n", 2, "server: bad duration '-1s'"},
    {"timeouts:\n  drain: 10sec\n", 2, "drain: bad duration"},
    {"timeouts:\n  client_idle: 0s\n", 2, "client_idle: must be more than 0"},
    {"timeouts:\n  client_header: 0\n", 2, "client_header: must be more than 0"},
    {"timeouts:\n  connect: 99999999999999999999s\n", 2, "connect: bad duration"},
    /* sizes and numbers */
    {"limits:\n  max_header_size: 512\n", 2, "max_header_size: must be between 1024 and 1048576"},
    {"limits:\n  max_header_size: 2m\n", 2, "max_header_size: must be between"},
    {"limits:\n  max_header_size: 16 k\n", 2, "max_header_size: bad size '16 k'"},
    {"limits:\n  max_uri_size: 8kb\n", 2, "max_uri_size: bad size '8kb'"},
    {"limits:\n  max_body_size: 99999999999g\n", 2, "max_body_size: bad size"},
    {"limits:\n  max_connections: 10k\n", 2, "max_connections: expected a number, got '10k'"},
    {"limits:\n  max_connections: 0\n", 2, "max_connections: must be between 1 and"},
    {"limits:\n  max_connections: 99999999999999999999999\n", 2,
     "max_connections: expected a number"},
    /* addresses */
    {"listen: []\n", 1, "listen: at least one address is required"},
    {"listen:\n  - address: 127.0.0.1\n", 2, "address: bad address '127.0.0.1': missing port"},
    {"listen:\n  - address: 127.0.0.1:0\n", 2, "port must be a number from 1 to 65535"},
    {"listen:\n  - address: 127.0.0.1:65536\n", 2, "port must be a number from 1 to 65535"},
    {"listen:\n  - address: \"[::1]\"\n", 2, "bad address '[::1]': missing port"},
    {"listen:\n  - address: \"::1:80\"\n", 2, "is written [address]:port"},
    {"listen:\n  - address: \"[nope]:80\"\n", 2, "not an IPv6 address"},
    {"listen:\n  - address: :80\n", 2, "missing host"},
    {"listen:\n  - {}\n", 2, "listen: 'address' is required"},
    {"listen:\n  - address: 127.0.0.1:80\n  - address: 127.0.0.1:80\n", 3,
     "listen: 127.0.0.1:80 is already listed on line 2"},
    /* log */
    {"log: stdout\n", 1, "log: expected a mapping, got a scalar"},
    /* backends and servers */
    {"workers: 2\n", 1, "backends: at least one backend is required"},
    {"workers: 2\nbackends: {}\n", 2, "backends: at least one backend is required"},
    {"backends:\n  app:\n    balance: roundrobin\n", 2, "backend 'app': 'servers' is required"},
    {"backends:\n  app:\n    servers: []\n", 3, "servers: at least one server is required"},
    {"backends:\n  app:\n    balance: random\n", 3, "balance: unknown algorithm 'random'"},
    {"backends:\n  app:\n    servers:\n      - { weight: 2 }\n", 4,
     "server: 'address' is required"},
    {"backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001, weight: 0 }\n", 4,
     "weight: must be between 1 and 1000"},
    {"backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001, weight: 1001 }\n", 4,
     "weight: must be between 1 and 1000"},
    {"backends:\n  app:\n    servers:\n      - address: 127.0.0.1:9001\n        weight: x\n", 5,
     "weight: expected a number, got 'x'"},
    {"backends:\n  app:\n    keepalive: -1\n", 3, "keepalive: expected a number"},
    {"backends:\n  app:\n    keepalive_timeout: 0s\n", 3, "keepalive_timeout: must be more"},
    {ONE_BACKEND "  app:\n    servers:\n      - address: 127.0.0.1:9002\n", 5,
     "duplicate backend 'app' (first on line 2)"},
    {"backends:\n  \"my app\":\n    servers: []\n", 2, "must be printable ASCII without spaces"},
    {"backends:\n  app:\n    servers:\n      - address: 127.0.0.1:9001\n"
     "      - address: 127.0.0.1:9001\n",
     5, "server id '127.0.0.1:9001' is already used on line 4 in backend 'app'"},
    {"backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001, id: a }\n"
     "      - { address: 127.0.0.1:9002, id: a }\n",
     5, "server id 'a' is already used on line 4"},
    {"backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001, id: \"\" }\n", 4,
     "id: missing value"},
    /* health, passive detection, retries, queues */
    {ONE_BACKEND "    health: { type: udp }\n", 5, "type: expected http or tcp, got 'udp'"},
    {ONE_BACKEND "    health: { path: health }\n", 5, "path: 'health' must start with '/'"},
    {ONE_BACKEND "    health: { path: \"/a b\" }\n", 5,
     "path: '/a b' must be printable ASCII without spaces"},
    {ONE_BACKEND "    health:\n      host: \"a\\r\\nX-Evil: 1\"\n", 6,
     "host: 'a\r\nX-Evil: 1' must be printable ASCII without spaces"},
    {ONE_BACKEND "    health:\n      interval: 0s\n", 6, "interval: must be more than 0"},
    {ONE_BACKEND "    health:\n      timeout: 0\n", 6, "timeout: must be more than 0"},
    {ONE_BACKEND "    health:\n      timeout: soon\n", 6, "timeout: bad duration 'soon'"},
    {ONE_BACKEND "    health: { rise: 0 }\n", 5, "rise: must be between 1 and 100"},
    {ONE_BACKEND "    health: { fall: 101 }\n", 5, "fall: must be between 1 and 100"},
    {ONE_BACKEND "    health: { expect: 99 }\n", 5, "expect: must be between 100 and 599"},
    {ONE_BACKEND "    health: { expect: 2xx }\n", 5, "expect: expected a number, got '2xx'"},
    {ONE_BACKEND "    health: { initial: maybe }\n", 5,
     "initial: expected up or down, got 'maybe'"},
    {ONE_BACKEND "    health:\n      path: /h\n      interva: 1s\n", 7,
     "unknown key 'interva' in health (known: type, path, host, interval, timeout, rise, fall, "
     "expect, initial)"},
    {ONE_BACKEND "    health: /health\n", 5, "health: expected a mapping, got a scalar"},
    {ONE_BACKEND "    health:\n", 5, "health: expected a mapping, got nothing"},
    {ONE_BACKEND "    health: { path: /a, path: /b }\n", 5, "duplicate key 'path'"},
    {ONE_BACKEND "    slow_start: -1s\n", 5, "slow_start: bad duration '-1s'"},
    {ONE_BACKEND "    passive: { failures: -1 }\n", 5, "failures: expected a number, got '-1'"},
    {ONE_BACKEND "    passive: { failures: 1001 }\n", 5, "failures: must be between 0 and 1000"},
    {ONE_BACKEND "    passive:\n      base_ejection: 0s\n", 6,
     "base_ejection: must be more than 0"},
    {ONE_BACKEND "    passive:\n      base_ejection: 1m\n      max_ejection: 30s\n", 6,
     "passive: max_ejection (30s) is shorter than base_ejection (60s)"},
    {ONE_BACKEND "    passive: { max_ejected_percent: 101 }\n", 5,
     "max_ejected_percent: must be between 0 and 100"},
    {ONE_BACKEND "    passive: { on_5xx: yes }\n", 5, "on_5xx: expected true or false, got 'yes'"},
    {ONE_BACKEND "    passive: { failure: 3 }\n", 5, "unknown key 'failure' in passive"},
    {ONE_BACKEND "    retries: 8\n", 5, "retries: must be between 0 and 7"},
    {ONE_BACKEND "    retries: two\n", 5, "retries: expected a number, got 'two'"},
    {ONE_BACKEND "    retry_budget: { percent: 101 }\n", 5, "percent: must be between 0 and 100"},
    {ONE_BACKEND "    retry_budget: { burst: 1 }\n", 5, "unknown key 'burst' in retry_budget"},
    {ONE_BACKEND "    retry_budget: 20\n", 5, "retry_budget: expected a mapping, got a scalar"},
    {ONE_BACKEND "    queue: -5\n", 5, "queue: expected a number, got '-5'"},
    {ONE_BACKEND "    queue: 1000001\n", 5, "queue: must be between 0 and 1000000"},
    {"backends:\n  app:\n    servers:\n      - { address: 127.0.0.1:9001, max_conns: x }\n", 4,
     "max_conns: expected a number, got 'x'"},
    {"timeouts: { queue: 0s }\n", 1, "queue: must be more than 0"},
    /* routes */
    {ONE_BACKEND "routes:\n  - { path_prefix: /, backend: web }\n", 6,
     "backend: no backend is named 'web'"},
    {ONE_BACKEND "routes:\n  - { path_prefix: /api }\n", 6, "route: 'backend' is required"},
    {ONE_BACKEND "routes:\n  - { path_prefix: api, backend: app }\n", 6,
     "path_prefix: 'api' must start with '/'"},
    {ONE_BACKEND "routes:\n  - { host: example.com:80, backend: app }\n", 6,
     "host: 'example.com:80' must not carry a port"},
    {ONE_BACKEND "  web:\n    servers:\n      - address: 127.0.0.1:9002\n", 5,
     "routes: required when there is more than one backend"},
    {ONE_BACKEND "  web:\n    servers:\n      - address: 127.0.0.1:9002\nroutes: []\n", 8,
     "routes: required when there is more than one backend"},
    /* routes naming a backend are checked even when written first */
    {"routes:\n  - backend: nope\n" ONE_BACKEND, 2, "no backend is named 'nope'"},
    /* YAML itself */
    {"", 1, "the configuration is empty"},
    {"# only a comment\n", 1, "the configuration is empty"},
    {"workers: 1\nlisten: [\n", 3, "did not find expected node content"},
    {"workers: 1\nlog: { access: stdout\n", 3, "did not find expected ',' or '}'"},
    {"workers: 1\ntimeouts: connect: 2s\n", 2, "mapping values are not allowed"},
    {"workers: 1\n\tlisten: []\n", 2, "found a tab character that violates indentation"},
    {"workers: 1\nlisten: *nowhere\n", 2, "found undefined alias"},
    {"workers: 1\n---\nworkers: 2\n", 3, "only one YAML document is allowed"},
    {"workers: 1\n\"unterminated\n", 3, "found unexpected end of stream"},
    {"workers: 1\nlog: { access: \xff }\n", 2, "invalid leading UTF-8 octet"},
    {"workers: 1\n\nlog: { access: \"\xc3\x28\" }\n", 3, "invalid trailing UTF-8 octet"},
};

static void test_bad_configs(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const struct bad_case *c = &bad_cases[i];
        char err[512] = "", prefix[32];
        struct lb_config *cfg = parse(c->yaml, err, sizeof err);
        snprintf(prefix, sizeof prefix, "t.yaml:%d: ", c->line);
        if (cfg || strncmp(err, prefix, strlen(prefix)) != 0 ||
            !strstr(err + strlen(prefix), c->message)) {
            lb_config_free(cfg);
            fail_msg("case %zu: want \"%s%s\"\n got \"%s\"\n--- yaml:\n%s", i, prefix, c->message,
                     cfg ? "(accepted)" : err, c->yaml);
        }
    }
}

/* A too small error buffer truncates the message, never overflows. */
static void test_small_error_buffer(void **state)
{
    (void)state;
    char err[8];
    memset(err, 'x', sizeof err);
    assert_null(parse("bogus: 1\n", err, sizeof err));
    assert_string_equal(err, "t.yaml:");
    assert_null(parse("bogus: 1\n", NULL, 0));
    assert_null(parse("[\n", err, 4));
    assert_string_equal(err, "t.y");
}

/* ---- good configs ----------------------------------------------------- */

static void test_defaults(void **state)
{
    (void)state;
    struct lb_config *cfg = parse_ok(ONE_BACKEND);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    assert_string_equal(cfg->path, "t.yaml");
    assert_int_equal(cfg->workers, cores < 1 ? 1 : cores > 256 ? 256 : cores);
    assert_string_equal(cfg->access_log, "stdout");
    assert_true(cfg->timeouts.connect == 2);
    assert_true(cfg->timeouts.client_header == 10);
    assert_true(cfg->timeouts.client_idle == 60);
    assert_true(cfg->timeouts.server == 30);
    assert_true(cfg->timeouts.drain == 10);
    assert_true(cfg->timeouts.tunnel == 3600);
    assert_false(cfg->headers.xff_replace);
    assert_false(cfg->headers.allow_underscores);
    assert_int_equal(cfg->limits.max_connections, 10000);
    assert_int_equal(cfg->limits.max_header_size, 16384);
    assert_int_equal(cfg->limits.max_uri_size, 8192);
    assert_int_equal(cfg->limits.max_body_size, 0);

    assert_int_equal(cfg->n_listens, 1);
    assert_string_equal(cfg->listens[0].address.text, "127.0.0.1:8080");
    assert_int_equal(cfg->listens[0].address.sa.ss_family, AF_INET);
    assert_int_equal(port_of(&cfg->listens[0].address), 8080);

    assert_int_equal(cfg->n_backends, 1);
    const struct lb_backend *b = &cfg->backends[0];
    assert_string_equal(b->name, "app");
    assert_int_equal(b->line, 2);
    assert_ptr_equal(b->balance, lb_balancer_find("roundrobin"));
    assert_non_null(b->balance);
    assert_int_equal(b->keepalive, 1024);
    assert_true(b->keepalive_timeout == 60);
    assert_int_equal(b->n_servers, 1);
    assert_string_equal(b->servers[0].id, "127.0.0.1:9001");
    assert_int_equal(b->servers[0].weight, 1);
    assert_int_equal(b->servers[0].index, 0);
    assert_int_equal(b->servers[0].line, 4);
    assert_int_equal(atomic_load(&b->servers[0].active), 0);
    assert_int_equal(port_of(&b->servers[0].address), 9001);
    assert_int_equal(cfg->n_routes, 0);

    /* health and fault tolerance: no active checks, servers up */
    assert_true(cfg->timeouts.queue == 2);
    assert_int_equal(b->health.type, LB_HEALTH_NONE);
    assert_null(b->health.path);
    assert_null(b->health.host);
    assert_true(b->slow_start == 0);
    assert_int_equal(b->passive.failures, 5);
    assert_true(b->passive.base_ejection == 10);
    assert_true(b->passive.max_ejection == 300);
    assert_int_equal(b->passive.max_ejected_percent, 50);
    assert_false(b->passive.on_5xx);
    assert_int_equal(b->retries, 2);
    assert_int_equal(b->retry_budget.percent, 20);
    assert_int_equal(b->retry_budget.min_per_second, 3);
    assert_int_equal(b->queue, 100);
    assert_int_equal(b->servers[0].max_conns, 0);
    assert_true(atomic_load(&b->servers[0].up));
    assert_int_equal(atomic_load(&b->servers[0].up_since_ms), 0);
    assert_int_equal(atomic_load(&b->servers[0].ejected_until_ms), 0);
    assert_int_equal(atomic_load(&b->servers[0].passive_failures), 0);
    assert_int_equal(atomic_load(&b->servers[0].ejections), 0);
    lb_config_free(cfg);
}

/* Every health and fault-tolerance key, block style, and the defaults that
 * a bare `health: {}` gets. */
static void test_health_keys(void **state)
{
    (void)state;
    static const char yaml[] = "timeouts:\n"
                               "  queue: 750ms\n"
                               "backends:\n"
                               "  app:\n"
                               "    servers:\n"
                               "      - address: 127.0.0.1:9001\n"
                               "        max_conns: 64\n"
                               "      - { address: 127.0.0.1:9002 }\n"
                               "    health:\n"
                               "      type: http\n"
                               "      path: /healthz?full=1\n"
                               "      interval: 200ms\n"
                               "      timeout: 150ms\n"
                               "      rise: 4\n"
                               "      fall: 1\n"
                               "      expect: 204\n"
                               "      host: app.internal\n"
                               "      initial: down\n"
                               "    slow_start: 30s\n"
                               "    passive:\n"
                               "      failures: 0\n"
                               "      base_ejection: 500ms\n"
                               "      max_ejection: 500ms\n"
                               "      max_ejected_percent: 100\n"
                               "      on_5xx: true\n"
                               "    retries: 0\n"
                               "    retry_budget: { percent: 0, min_per_second: 0 }\n"
                               "    queue: 0\n"
                               "  tcp:\n"
                               "    health: { type: tcp, initial: up }\n"
                               "    servers: [ { address: 127.0.0.1:9003 } ]\n"
                               "  plain:\n"
                               "    health: {}\n"
                               "    servers: [ { address: 127.0.0.1:9004 } ]\n"
                               "routes:\n"
                               "  - { backend: app }\n";
    struct lb_config *cfg = parse_ok(yaml);
    assert_true(cfg->timeouts.queue == 0.75);
    const struct lb_backend *app = &cfg->backends[0], *tcp = &cfg->backends[1],
                            *plain = &cfg->backends[2];
    assert_int_equal(app->health.type, LB_HEALTH_HTTP);
    assert_string_equal(app->health.path, "/healthz?full=1");
    assert_string_equal(app->health.host, "app.internal");
    assert_true(app->health.interval == 0.2);
    assert_true(app->health.timeout == 0.15);
    assert_int_equal(app->health.rise, 4);
    assert_int_equal(app->health.fall, 1);
    assert_int_equal(app->health.expect, 204);
    assert_false(app->health.initial_up);
    /* initial: down holds for every server of the backend, whichever key
     * came first */
    assert_false(atomic_load(&app->servers[0].up));
    assert_false(atomic_load(&app->servers[1].up));
    assert_int_equal(app->servers[0].max_conns, 64);
    assert_int_equal(app->servers[1].max_conns, 0);
    assert_true(app->slow_start == 30);
    assert_int_equal(app->passive.failures, 0);
    assert_true(app->passive.base_ejection == 0.5);
    assert_true(app->passive.max_ejection == 0.5);
    assert_int_equal(app->passive.max_ejected_percent, 100);
    assert_true(app->passive.on_5xx);
    assert_int_equal(app->retries, 0);
    assert_int_equal(app->retry_budget.percent, 0);
    assert_int_equal(app->retry_budget.min_per_second, 0);
    assert_int_equal(app->queue, 0);

    assert_int_equal(tcp->health.type, LB_HEALTH_TCP);
    assert_true(tcp->health.initial_up);
    assert_true(atomic_load(&tcp->servers[0].up));

    assert_int_equal(plain->health.type, LB_HEALTH_HTTP);
    assert_string_equal(plain->health.path, "/health");
    assert_null(plain->health.host);
    assert_true(plain->health.interval == 1);
    assert_true(plain->health.timeout == 0.5);
    assert_int_equal(plain->health.rise, 2);
    assert_int_equal(plain->health.fall, 3);
    assert_int_equal(plain->health.expect, 200);
    assert_true(plain->health.initial_up);
    assert_true(atomic_load(&plain->servers[0].up));
    lb_config_free(cfg);

    /* a path of the longest length passes, one more fails */
    char long_yaml[LB_HEALTH_MAX_PATH + 256], err[256];
    char path[LB_HEALTH_MAX_PATH + 2];
    memset(path, 'p', sizeof path);
    path[0] = '/';
    path[LB_HEALTH_MAX_PATH] = '\0';
    snprintf(long_yaml, sizeof long_yaml, ONE_BACKEND "    health: { path: %s }\n", path);
    cfg = parse_ok(long_yaml);
    assert_int_equal(strlen(cfg->backends[0].health.path), LB_HEALTH_MAX_PATH);
    lb_config_free(cfg);
    path[LB_HEALTH_MAX_PATH] = 'p';
    path[LB_HEALTH_MAX_PATH + 1] = '\0';
    snprintf(long_yaml, sizeof long_yaml, ONE_BACKEND "    health: { path: %s }\n", path);
    assert_null(parse(long_yaml, err, sizeof err));
    assert_non_null(strstr(err, "t.yaml:5: path: longer than 1024 characters"));
}

/* The schema of the issue, flow style, every key set. */
static const char full_flow[] =
    "workers: 4\n"
    "listen:\n"
    "  - address: 127.0.0.1:8080\n"
    "  - address: \"[::1]:8081\"\n"
    "log: { access: /var/log/lb/access.log }\n"
    "timeouts: { connect: 500ms, client_header: 1.5s, client_idle: 1m, server: 1h, drain: 0 }\n"
    "limits: { max_connections: 500, max_header_size: 1m, max_uri_size: 2k, "
    "max_body_size: 2g }\n"
    "backends:\n"
    "  app:\n"
    "    balance: leastconn\n"
    "    keepalive: 0\n"
    "    keepalive_timeout: 5s\n"
    "    servers:\n"
    "      - { address: 127.0.0.1:9001, weight: 1 }\n"
    "      - { address: 127.0.0.1:9002, weight: 1000, id: b }\n"
    "      - { address: \"[::1]:9003\", id: c }\n"
    "  static:\n"
    "    servers: [ { address: localhost:9100 } ]\n"
    "routes:\n"
    "  - { host: example.com, path_prefix: /, backend: app }\n"
    "  - { path_prefix: /static/, backend: static }\n"
    "  - { backend: app }\n";

/* The same, block style. */
static const char full_block[] = "workers: 4\n"
                                 "listen:\n"
                                 "  - address: 127.0.0.1:8080\n"
                                 "  - address: '[::1]:8081'\n"
                                 "log:\n"
                                 "  access: /var/log/lb/access.log\n"
                                 "timeouts:\n"
                                 "  connect: 500ms\n"
                                 "  client_header: 1.5s\n"
                                 "  client_idle: 1m\n"
                                 "  server: 1h\n"
                                 "  drain: 0\n"
                                 "limits:\n"
                                 "  max_connections: 500\n"
                                 "  max_header_size: 1M\n"
                                 "  max_uri_size: 2K\n"
                                 "  max_body_size: 2G\n"
                                 "backends:\n"
                                 "  app:\n"
                                 "    balance: leastconn\n"
                                 "    keepalive: 0\n"
                                 "    keepalive_timeout: 5\n"
                                 "    servers:\n"
                                 "      - address: 127.0.0.1:9001\n"
                                 "        weight: 1\n"
                                 "      - address: 127.0.0.1:9002\n"
                                 "        weight: 1000\n"
                                 "        id: b\n"
                                 "      - address: '[::1]:9003'\n"
                                 "        id: c\n"
                                 "  static:\n"
                                 "    servers:\n"
                                 "      - address: localhost:9100\n"
                                 "routes:\n"
                                 "  - host: example.com\n"
                                 "    path_prefix: /\n"
                                 "    backend: app\n"
                                 "  - path_prefix: /static/\n"
                                 "    backend: static\n"
                                 "  - backend: app\n";

static void check_full(const struct lb_config *cfg)
{
    assert_int_equal(cfg->workers, 4);
    assert_int_equal(cfg->n_listens, 2);
    assert_int_equal(cfg->listens[1].address.sa.ss_family, AF_INET6);
    assert_int_equal(port_of(&cfg->listens[1].address), 8081);
    assert_string_equal(cfg->listens[1].address.text, "[::1]:8081");
    assert_int_equal(cfg->listens[1].line, 4);
    assert_string_equal(cfg->access_log, "/var/log/lb/access.log");
    assert_true(cfg->timeouts.connect == 0.5);
    assert_true(cfg->timeouts.client_header == 1.5);
    assert_true(cfg->timeouts.client_idle == 60);
    assert_true(cfg->timeouts.server == 3600);
    assert_true(cfg->timeouts.drain == 0);
    assert_int_equal(cfg->limits.max_connections, 500);
    assert_int_equal(cfg->limits.max_header_size, 1 << 20);
    assert_int_equal(cfg->limits.max_uri_size, 2048);
    assert_int_equal(cfg->limits.max_body_size, 2ull << 30);

    assert_int_equal(cfg->n_backends, 2);
    const struct lb_backend *app = &cfg->backends[0], *st = &cfg->backends[1];
    assert_string_equal(app->name, "app");
    assert_ptr_equal(app->balance, lb_balancer_find("leastconn"));
    assert_non_null(app->balance);
    assert_int_equal(app->keepalive, 0);
    assert_true(app->keepalive_timeout == 5);
    assert_int_equal(app->n_servers, 3);
    const char *ids[] = {"127.0.0.1:9001", "b", "c"};
    const unsigned weights[] = {1, 1000, 1};
    for (unsigned i = 0; i < 3; i++) {
        assert_string_equal(app->servers[i].id, ids[i]);
        assert_int_equal(app->servers[i].weight, weights[i]);
        assert_int_equal(app->servers[i].index, i);
    }
    assert_int_equal(app->servers[2].address.sa.ss_family, AF_INET6);
    assert_string_equal(st->name, "static");
    assert_string_equal(st->servers[0].id, "localhost:9100");
    assert_int_equal(port_of(&st->servers[0].address), 9100);

    assert_int_equal(cfg->n_routes, 3);
    assert_string_equal(cfg->routes[0].host, "example.com");
    assert_string_equal(cfg->routes[0].path_prefix, "/");
    assert_ptr_equal(cfg->routes[0].backend, app);
    assert_null(cfg->routes[1].host);
    assert_ptr_equal(cfg->routes[1].backend, st);
    assert_null(cfg->routes[2].host);
    assert_string_equal(cfg->routes[2].path_prefix, "/");
    assert_ptr_equal(cfg->routes[2].backend, app);
}

static void test_full_flow_and_block(void **state)
{
    (void)state;
    struct lb_config *flow = parse_ok(full_flow), *block = parse_ok(full_block);
    check_full(flow);
    check_full(block);
    /* lines are the ones of each file */
    assert_int_equal(flow->backends[0].servers[1].line, 15);
    assert_int_equal(block->backends[0].servers[1].line, 26);
    assert_int_equal(flow->routes[1].line, 21);
    assert_int_equal(block->routes[1].line, 38);
    assert_int_equal(block->backends[1].line, 31);
    lb_config_free(flow);
    lb_config_free(block);
}

static void test_small_variants(void **state)
{
    (void)state;
    struct lb_config *cfg = parse_ok("log: { access: off }\nworkers: auto\n" ONE_BACKEND);
    assert_null(cfg->access_log);
    assert_true(cfg->workers >= 1 && cfg->workers <= 256);
    lb_config_free(cfg);

    /* anchors and aliases are YAML, and work */
    cfg = parse_ok("timeouts: { connect: &t 3s, server: *t }\n" ONE_BACKEND);
    assert_true(cfg->timeouts.server == 3);
    lb_config_free(cfg);

    /* one backend and an explicit empty route list: the default route */
    cfg = parse_ok(ONE_BACKEND "routes: []\n");
    assert_int_equal(cfg->n_routes, 0);
    assert_ptr_equal(lb_config_route(cfg, NULL, 0, "/", 1), &cfg->backends[0]);
    lb_config_free(cfg);

    /* a document marker is fine; so is a CRLF file */
    cfg = parse_ok("---\nworkers: 1\r\n" ONE_BACKEND "...\n");
    assert_int_equal(cfg->workers, 1);
    lb_config_free(cfg);
}

static void test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/lb-test-config-XXXXXX", err[256];
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("workers: 3\n" ONE_BACKEND, f);
    fclose(f);
    struct lb_config *cfg = lb_config_load(path, err, sizeof err);
    assert_non_null(cfg);
    assert_string_equal(cfg->path, path);
    assert_int_equal(cfg->workers, 3);
    lb_config_free(cfg);

    f = fopen(path, "w");
    fputs("workers: 3\nwieght: 1\n", f);
    fclose(f);
    assert_null(lb_config_load(path, err, sizeof err));
    char want[128];
    snprintf(want, sizeof want, "%s:2: unknown key 'wieght'", path);
    assert_memory_equal(err, want, strlen(want));
    unlink(path);

    assert_null(lb_config_load(path, err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "No such file"));
}

/* The demo config of the repository is valid and is what the README says. */
static void test_demo_config(void **state)
{
    (void)state;
    char err[256], path[512];
    /* the source tree, from this file's path (CMake compiles it by absolute path) */
    const char *tests = strstr(__FILE__, "tests/unit/");
    if (!tests)
        skip();
    snprintf(path, sizeof path, "%.*sconfig/lb.yaml", (int)(tests - __FILE__), __FILE__);
    struct lb_config *cfg = lb_config_load(path, err, sizeof err);
    if (!cfg)
        fail_msg("%s", err);
    assert_string_equal(cfg->listens[0].address.text, "127.0.0.1:8080");
    assert_string_equal(cfg->access_log, "stdout");
    assert_int_equal(cfg->n_backends, 1);
    assert_int_equal(cfg->backends[0].n_servers, 3);
    assert_ptr_equal(lb_config_route(cfg, "x", 1, "/", 1), &cfg->backends[0]);
    lb_config_free(cfg);
}

/* ---- value syntax --------------------------------------------------------- */

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        double seconds;
    } good[] = {
        {"500ms", 0.5},    {"2s", 2},      {"1m", 60},    {"1h", 3600},     {"1.5s", 1.5},
        {"0", 0},          {"10", 10},     {"0.25m", 15}, {"1.5", 1.5},     {"100ms", 0.1},
        {"0ms", 0},        {"24h", 86400}, {"007s", 7},   {"2.125h", 7650}, {"1ms", 0.001},
        {"1.5ms", 0.0015}, {"2.5h", 9000},
    };
    static const char *const bad[] = {
        "",     "-1s",  "5 s",  "s",     "1.s",
        ".5s",  "1x",   "1sec", "1e3",   "1.5.2s",
        " 1s",  "1s ",  "1S",   "+1s",   "1h1m",
        "inf",  "nan",  "0x10", "9999h", "99999999999999999999s",
        "1,5s", "1ms5",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        double s = -1;
        if (lb_parse_duration(good[i].text, &s) != 0 || s != good[i].seconds)
            fail_msg("'%s' gave %g", good[i].text, s);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        double s = -1;
        if (lb_parse_duration(bad[i], &s) == 0)
            fail_msg("'%s' accepted as %g", bad[i], s);
        assert_true(s == -1);
    }
}

static void test_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint64_t bytes;
    } good[] = {
        {"0", 0},
        {"512", 512},
        {"16k", 16384},
        {"16K", 16384},
        {"1m", 1 << 20},
        {"1M", 1 << 20},
        {"2g", 2ull << 30},
        {"2G", 2ull << 30},
        {"0k", 0},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183g", 17179869183ull << 30},
    };
    static const char *const bad[] = {
        "",
        "k",
        "-1",
        "1.5k",
        " 1k",
        "1k ",
        "1kb",
        "1 k",
        "1t",
        "1kk",
        "0x10",
        "+5",
        "18446744073709551616",
        "17179869184g",
        "99999999999999999999k",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        uint64_t n = 1;
        if (lb_parse_size(good[i].text, &n) != 0 || n != good[i].bytes)
            fail_msg("'%s' gave %llu", good[i].text, (unsigned long long)n);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint64_t n = 1;
        if (lb_parse_size(bad[i], &n) == 0)
            fail_msg("'%s' accepted as %llu", bad[i], (unsigned long long)n);
        assert_int_equal(n, 1);
    }
}

static void test_addresses(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int family; /* 0: either (a resolved name) */
        uint16_t port;
        const char *numeric;
    } good[] = {
        {"127.0.0.1:8080", AF_INET, 8080, "127.0.0.1"},
        {"0.0.0.0:1", AF_INET, 1, "0.0.0.0"},
        {"10.1.2.3:65535", AF_INET, 65535, "10.1.2.3"},
        {"[::1]:8080", AF_INET6, 8080, "::1"},
        {"[::]:443", AF_INET6, 443, "::"},
        {"[fe80::1:2]:80", AF_INET6, 80, "fe80::1:2"},
        {"localhost:9000", 0, 9000, NULL},
    };
    static const char *const bad[] = {
        "",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        ":80",
        "[::1]",
        "[::1]80",
        "[::1",
        "::1:80",
        "[]:80",
        "garbage",
        "127.0.0.1:http",
        "127.0.0.1:80x",
        "127.0.0.1:-1",
        "[127.0.0.1]:80",
        "127.0.0.1:99999999999999999999999",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct lb_address a;
        if (lb_parse_address(good[i].text, &a) != 0)
            fail_msg("'%s' refused", good[i].text);
        assert_string_equal(a.text, good[i].text);
        assert_int_equal(port_of(&a), good[i].port);
        if (good[i].family) {
            char buf[INET6_ADDRSTRLEN];
            const void *ip = good[i].family == AF_INET
                                 ? (const void *)&((struct sockaddr_in *)&a.sa)->sin_addr
                                 : (const void *)&((struct sockaddr_in6 *)&a.sa)->sin6_addr;
            assert_int_equal(a.sa.ss_family, good[i].family);
            assert_int_equal(a.len, good[i].family == AF_INET ? sizeof(struct sockaddr_in)
                                                              : sizeof(struct sockaddr_in6));
            assert_non_null(inet_ntop(good[i].family, ip, buf, sizeof buf));
            assert_string_equal(buf, good[i].numeric);
        } else {
            assert_true(a.sa.ss_family == AF_INET || a.sa.ss_family == AF_INET6);
        }
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct lb_address a;
        if (lb_parse_address(bad[i], &a) == 0)
            fail_msg("'%s' accepted", bad[i]);
    }
    char longer[200];
    memset(longer, 'a', sizeof longer - 4);
    strcpy(longer + sizeof longer - 4, ":80");
    struct lb_address a;
    assert_int_equal(lb_parse_address(longer, &a), -1);
}

/* ---- routing ------------------------------------------------------------ */

static const char routed[] = "backends:\n"
                             "  api: { servers: [ { address: 127.0.0.1:9001 } ] }\n"
                             "  web: { servers: [ { address: 127.0.0.1:9002 } ] }\n"
                             "  static: { servers: [ { address: 127.0.0.1:9003 } ] }\n"
                             "  v6: { servers: [ { address: 127.0.0.1:9004 } ] }\n"
                             "routes:\n"
                             "  - { host: api.example.com, backend: api }\n"
                             "  - { host: \"[::1]\", backend: v6 }\n"
                             "  - { path_prefix: /static/, backend: static }\n"
                             "  - { host: Example.COM, path_prefix: /app, backend: web }\n";

static const char *route_name(const struct lb_config *cfg, const char *host, const char *path)
{
    const struct lb_backend *b =
        lb_config_route(cfg, host, host ? strlen(host) : 0, path, strlen(path));
    return b ? b->name : "(none)";
}

static void test_routing(void **state)
{
    (void)state;
    static const struct {
        const char *host, *path, *backend;
    } cases[] = {
        {"api.example.com", "/", "api"},
        {"API.Example.Com", "/x", "api"},
        {"api.example.com:8080", "/", "api"},
        {"api.example.com", "/static/x.css", "api"}, /* first match wins */
        {"other.org", "/static/x.css", "static"},
        {NULL, "/static/", "static"},
        {NULL, "/static", "(none)"}, /* a byte prefix: "/static/" is longer */
        {"example.com", "/app", "web"},
        {"EXAMPLE.com:80", "/application", "web"},
        {"example.com", "/ap", "(none)"},
        {"example.com", "/", "(none)"},
        {"www.example.com", "/app", "(none)"},
        {"api.example.com.evil", "/", "(none)"},
        {"api.example.co", "/", "(none)"},
        {"", "/app", "(none)"},
        {NULL, "/app", "(none)"},
        {"[::1]:8080", "/", "v6"},
        {"[::1]", "/x", "v6"},
        {"[::2]:8080", "/", "(none)"},
    };
    struct lb_config *cfg = parse_ok(routed);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *got = route_name(cfg, cases[i].host, cases[i].path);
        if (strcmp(got, cases[i].backend) != 0)
            fail_msg("host %s path %s: want %s, got %s", cases[i].host ? cases[i].host : "NULL",
                     cases[i].path, cases[i].backend, got);
    }
    /* host and path are lengths, not C strings */
    assert_string_equal(cfg->backends[0].name, "api");
    assert_ptr_equal(lb_config_route(cfg, "api.example.com/junk", 15, "/x", 2), &cfg->backends[0]);
    assert_ptr_equal(lb_config_route(cfg, "x", 1, "/static/abc", 8), &cfg->backends[2]);
    assert_null(lb_config_route(cfg, "x", 1, "/static/abc", 7));
    lb_config_free(cfg);
}

static void test_default_route(void **state)
{
    (void)state;
    struct lb_config *cfg = parse_ok(ONE_BACKEND);
    assert_ptr_equal(lb_config_route(cfg, NULL, 0, "/", 1), &cfg->backends[0]);
    assert_ptr_equal(lb_config_route(cfg, "any.host:81", 11, "/deep/path", 10), &cfg->backends[0]);
    assert_ptr_equal(lb_config_route(cfg, "h", 1, "", 0), &cfg->backends[0]);
    lb_config_free(cfg);

    /* with routes, nothing falls back to the only backend */
    cfg = parse_ok(ONE_BACKEND "routes:\n  - { path_prefix: /api, backend: app }\n");
    assert_ptr_equal(lb_config_route(cfg, NULL, 0, "/api/v1", 7), &cfg->backends[0]);
    assert_null(lb_config_route(cfg, NULL, 0, "/", 1));
    lb_config_free(cfg);

    /* a catch-all route */
    cfg = parse_ok(ONE_BACKEND "  b: { servers: [ { address: 127.0.0.1:9002 } ] }\n"
                               "routes:\n  - { path_prefix: /b/, backend: b }\n"
                               "  - { backend: app }\n");
    assert_string_equal(route_name(cfg, "h", "/b/1"), "b");
    assert_string_equal(route_name(cfg, "h", "/b"), "app");
    assert_string_equal(route_name(cfg, NULL, "/"), "app");
    lb_config_free(cfg);
}

/* Many loads and frees, good and bad; LeakSanitizer reports any leak. */
static void test_stats_key(void **state)
{
    (void)state;
    struct lb_config *cfg = parse_ok(ONE_BACKEND);
    assert_false(cfg->stats.enabled);
    lb_config_free(cfg);
    /* v6-only sockets: [::] does not take IPv4's port */
    lb_config_free(parse_ok("listen:\n  - address: 127.0.0.1:9100\n" ONE_BACKEND
                            "stats: { listen: \"[::]:9100\" }\n"));
    cfg = parse_ok(ONE_BACKEND "stats:\n  listen: 127.0.0.1:9100\n");
    assert_true(cfg->stats.enabled);
    assert_int_equal(port_of(&cfg->stats.address), 9100);
    assert_int_equal(cfg->stats.line, 6);
    lb_config_free(cfg);
}

static void test_load_free_many(void **state)
{
    (void)state;
    char err[256];
    lb_config_free(NULL);
    for (int i = 0; i < 50; i++) {
        lb_config_free(parse_ok(full_flow));
        assert_null(parse(full_flow + 1, err, sizeof err)); /* "orkers: 4" */
        for (size_t j = 0; j < sizeof bad_cases / sizeof bad_cases[0]; j += 7)
            assert_null(parse(bad_cases[j].yaml, err, sizeof err));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_configs),    cmocka_unit_test(test_small_error_buffer),
        cmocka_unit_test(test_defaults),       cmocka_unit_test(test_full_flow_and_block),
        cmocka_unit_test(test_small_variants), cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_demo_config),    cmocka_unit_test(test_durations),
        cmocka_unit_test(test_sizes),          cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_routing),        cmocka_unit_test(test_default_route),
        cmocka_unit_test(test_load_free_many), cmocka_unit_test(test_health_keys),
        cmocka_unit_test(test_stats_key),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
