/* YAML -> struct lb_config. libyaml loads the whole file as a node tree
 * (every node carries its line); the tree is then walked with one table of
 * known keys per mapping, so an unknown key, a repeated key or a value of the
 * wrong type is caught at the node that holds it. The first error stops the
 * walk; the partly built config is freed by the one destructor. */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <yaml.h>

#include "balance.h"

#define MAX_WORKERS 256
#define MAX_CONFIG_BYTES (16u << 20)
#define DURATION_MAX (365.0 * 86400.0) /* anything longer is a typo */
#define DURATION_MAX_DIGITS 15         /* exact in a double */
#define MAX_QUEUE 1000000              /* max_conns and queue lengths */

struct parser {
    yaml_document_t doc;
    const char *name; /* the file name in messages */
    char *err;
    size_t err_len;
    struct lb_config *cfg;
    yaml_node_t *backends; /* the top-level mapping, once seen */
    yaml_node_t *routes;   /* parsed last: routes name backends */
    yaml_node_t *stats;    /* the stats mapping, for errors found at the end */
};

/* One known key of a mapping: how to parse its value into obj + offset. */
struct field {
    const char *key;
    int (*parse)(struct parser *p, const struct field *f, yaml_node_t *value, void *obj);
    size_t offset;           /* of the destination inside obj */
    uint64_t min, max;       /* accepted range, where the parser uses one */
    const struct field *sub; /* field_map: the nested mapping's keys */
};
#define FIELD(key, parse, type, member, min, max)                                                  \
    {                                                                                              \
        key, parse, offsetof(type, member), min, max, NULL                                         \
    }

/* ---- errors and node access ---------------------------------------------- */

static int line_of(const yaml_node_t *node)
{
    return node ? (int)node->start_mark.line + 1 : 1;
}

/* Writes "file:line: message" into p->err. Returns -1, for `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static int fail(struct parser *p, const yaml_node_t *node,
                                                      const char *fmt, ...)
{
    if (p->err_len == 0)
        return -1;
    int n = snprintf(p->err, p->err_len, "%s:%d: ", p->name, line_of(node));
    if (n >= 0 && (size_t)n < p->err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err + n, p->err_len - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static bool is_null(const yaml_node_t *node)
{
    return node->type == YAML_SCALAR_NODE && node->data.scalar.length == 0 &&
           node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

static const char *type_name(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_MAPPING_NODE:
        return "a mapping";
    case YAML_SEQUENCE_NODE:
        return "a list";
    default:
        return is_null(node) ? "nothing" : "a scalar";
    }
}

static int expect(struct parser *p, const yaml_node_t *node, yaml_node_type_t type,
                  const char *what)
{
    if (node->type == type)
        return 0;
    const char *want = type == YAML_MAPPING_NODE    ? "a mapping"
                       : type == YAML_SEQUENCE_NODE ? "a list"
                                                    : "a value";
    return fail(p, node, "%s: expected %s, got %s", what, want, type_name(node));
}

/* The text of a scalar node, or NULL (error written) when it is not a
 * non-empty scalar without NUL bytes. */
static const char *scalar(struct parser *p, const yaml_node_t *node, const char *what)
{
    if (expect(p, node, YAML_SCALAR_NODE, what) < 0)
        return NULL;
    const char *text = (const char *)node->data.scalar.value;
    if (node->data.scalar.length == 0) {
        fail(p, node, "%s: missing value", what);
        return NULL;
    }
    if (strlen(text) != node->data.scalar.length) {
        fail(p, node, "%s: value contains a NUL byte", what);
        return NULL;
    }
    return text;
}

static yaml_node_t *node_at(struct parser *p, int id)
{
    return yaml_document_get_node(&p->doc, id);
}

static bool same_scalar(const yaml_node_t *a, const yaml_node_t *b)
{
    return a->type == YAML_SCALAR_NODE && b->type == YAML_SCALAR_NODE &&
           a->data.scalar.length == b->data.scalar.length &&
           memcmp(a->data.scalar.value, b->data.scalar.value, a->data.scalar.length) == 0;
}

/* The key of `pair` in `map` as text, after checking it is a scalar that no
 * earlier pair repeats. */
static const char *map_key(struct parser *p, yaml_node_t *map, yaml_node_pair_t *pair,
                           const char *what)
{
    yaml_node_t *key = node_at(p, pair->key);
    if (key->type != YAML_SCALAR_NODE) {
        fail(p, key, "a key must be a plain name, got %s", type_name(key));
        return NULL;
    }
    for (yaml_node_pair_t *prev = map->data.mapping.pairs.start; prev < pair; prev++) {
        yaml_node_t *other = node_at(p, prev->key);
        if (same_scalar(key, other)) {
            fail(p, key, "duplicate %s '%.64s' (first on line %d)", what,
                 (const char *)key->data.scalar.value, line_of(other));
            return NULL;
        }
    }
    return scalar(p, key, what);
}

/* Parses every pair of `map` with the matching entry of `fields` (ended by a
 * NULL key) into obj. Returns 0, or -1 with the error written. */
static int walk_map(struct parser *p, yaml_node_t *map, const char *what,
                    const struct field *fields, void *obj)
{
    if (expect(p, map, YAML_MAPPING_NODE, what) < 0)
        return -1;
    for (yaml_node_pair_t *pair = map->data.mapping.pairs.start; pair < map->data.mapping.pairs.top;
         pair++) {
        const char *key = map_key(p, map, pair, "key");
        if (!key)
            return -1;
        const struct field *f = fields;
        while (f->key && strcmp(f->key, key) != 0)
            f++;
        if (!f->key) {
            char known[256] = "";
            for (f = fields; f->key; f++) {
                size_t used = strlen(known);
                snprintf(known + used, sizeof known - used, "%s%s", used ? ", " : "", f->key);
            }
            return fail(p, node_at(p, pair->key), "unknown key '%.64s' in %s (known: %s)", key,
                        what, known);
        }
        if (f->parse(p, f, node_at(p, pair->value), obj) < 0)
            return -1;
    }
    return 0;
}

/* The items of a list node and their count. Returns 0, or -1 (error
 * written) when it is not a list. */
static int list_items(struct parser *p, yaml_node_t *node, const char *what,
                      yaml_node_item_t **items, size_t *count)
{
    if (expect(p, node, YAML_SEQUENCE_NODE, what) < 0)
        return -1;
    *items = node->data.sequence.items.start;
    *count = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    return 0;
}

/* ---- value syntax ----------------------------------------------------- */

int lb_parse_duration(const char *text, double *seconds)
{
    double mantissa = 0, divisor = 1;
    int digits = 0;
    const char *s = text;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++, digits++)
        mantissa = mantissa * 10 + (*s - '0');
    if (*s == '.') {
        if (*++s < '0' || *s > '9')
            return -1;
        for (; *s >= '0' && *s <= '9'; s++, digits++) {
            mantissa = mantissa * 10 + (*s - '0');
            divisor *= 10;
        }
    }
    if (digits > DURATION_MAX_DIGITS)
        return -1;
    double unit = 1; /* ms divides, so that 1ms is exactly the double nearest 0.001 */
    if (strcmp(s, "ms") == 0)
        divisor *= 1000;
    else if (strcmp(s, "m") == 0)
        unit = 60;
    else if (strcmp(s, "h") == 0)
        unit = 3600;
    else if (strcmp(s, "s") != 0 && *s != '\0')
        return -1;
    double value = mantissa * unit / divisor;
    if (!(value <= DURATION_MAX))
        return -1;
    *seconds = value;
    return 0;
}

/* Decimal digits only, no sign, no overflow. Returns 0, or -1. */
static int parse_uint(const char *text, const char **end, uint64_t *value)
{
    uint64_t v = 0;
    const char *s = text;
    if (*s < '0' || *s > '9')
        return -1;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *end = s;
    *value = v;
    return 0;
}

int lb_parse_size(const char *text, uint64_t *bytes)
{
    uint64_t v, unit = 1;
    const char *s;
    if (parse_uint(text, &s, &v) < 0)
        return -1;
    if (*s) { /* one suffix letter, a power of 1024 */
        static const char suffixes[] = "kKmMgG";
        const char *suffix = strchr(suffixes, *s);
        if (!suffix || s[1] != '\0')
            return -1;
        unit = 1ull << (10 * ((suffix - suffixes) / 2 + 1));
    }
    if (v > UINT64_MAX / unit)
        return -1;
    *bytes = v * unit;
    return 0;
}

/* lb_parse_address with a reason: NULL on success, else why it failed. */
static const char *parse_address(const char *text, struct lb_address *addr)
{
    char host[sizeof addr->text];
    const char *port, *host_start = text;
    size_t host_len, len = strlen(text);
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};

    if (len >= sizeof addr->text)
        return "address too long";
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close)
            return "missing ']' after an IPv6 address";
        if (close[1] != ':')
            return "missing port (expected [v6]:port)";
        host_start = text + 1;
        host_len = (size_t)(close - host_start);
        port = close + 2;
        hints.ai_family = AF_INET6;
        hints.ai_flags |= AI_NUMERICHOST;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon)
            return "missing port (expected host:port)";
        if (memchr(text, ':', (size_t)(colon - text)))
            return "an IPv6 address is written [address]:port";
        host_len = (size_t)(colon - text);
        port = colon + 1;
    }
    if (host_len == 0)
        return "missing host";
    uint64_t port_num;
    const char *end;
    if (parse_uint(port, &end, &port_num) < 0 || *end || port_num < 1 || port_num > 65535)
        return "port must be a number from 1 to 65535";
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';

    struct addrinfo *res;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
        return hints.ai_family ? "not an IPv6 address" : "cannot resolve host";
    const struct addrinfo *use = res; /* "localhost" means 127.0.0.1 rather than ::1 */
    while (use && use->ai_family != AF_INET)
        use = use->ai_next;
    use = use ? use : res;
    memset(addr, 0, sizeof *addr);
    memcpy(&addr->sa, use->ai_addr, use->ai_addrlen);
    addr->len = use->ai_addrlen;
    memcpy(addr->text, text, len + 1);
    freeaddrinfo(res);
    return NULL;
}

int lb_parse_address(const char *text, struct lb_address *addr)
{
    return parse_address(text, addr) ? -1 : 0;
}

/* ---- generic fields ----------------------------------------------------- */

static void *dest(const struct field *f, void *obj)
{
    return (char *)obj + f->offset;
}

/* Replaces the string at f->offset with a copy of text. */
static int set_string(struct parser *p, const struct field *f, yaml_node_t *value, void *obj,
                      const char *text)
{
    char **slot = dest(f, obj);
    free(*slot);
    if (!(*slot = strdup(text)))
        return fail(p, value, "out of memory");
    return 0;
}

static int field_map(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    return walk_map(p, value, f->key, f->sub, dest(f, obj));
}

/* A duration; min 1 means it must be more than zero. */
static int field_duration(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    const char *text = scalar(p, value, f->key);
    double seconds;
    if (!text)
        return -1;
    if (lb_parse_duration(text, &seconds) < 0)
        return fail(p, value, "%s: bad duration '%.64s' (examples: 500ms, 2s, 1.5m, 1h)", f->key,
                    text);
    if (f->min && seconds <= 0)
        return fail(p, value, "%s: must be more than 0", f->key);
    *(double *)dest(f, obj) = seconds;
    return 0;
}

static int field_size(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    const char *text = scalar(p, value, f->key);
    uint64_t bytes;
    if (!text)
        return -1;
    if (lb_parse_size(text, &bytes) < 0)
        return fail(p, value, "%s: bad size '%.64s' (examples: 512, 16k, 1m, 2g)", f->key, text);
    if (bytes < f->min || bytes > f->max)
        return fail(p, value, "%s: must be between %llu and %llu bytes", f->key,
                    (unsigned long long)f->min, (unsigned long long)f->max);
    *(uint64_t *)dest(f, obj) = bytes;
    return 0;
}

/* A plain number in [f->min, f->max]. */
static int parse_number(struct parser *p, const struct field *f, yaml_node_t *value,
                        uint64_t *number)
{
    const char *text = scalar(p, value, f->key);
    const char *end;
    if (!text)
        return -1;
    if (parse_uint(text, &end, number) < 0 || *end)
        return fail(p, value, "%s: expected a number, got '%.64s'", f->key, text);
    if (*number < f->min || *number > f->max)
        return fail(p, value, "%s: must be between %llu and %llu", f->key,
                    (unsigned long long)f->min, (unsigned long long)f->max);
    return 0;
}

static int field_u64(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    return parse_number(p, f, value, (uint64_t *)dest(f, obj));
}

static int field_unsigned(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    uint64_t number;
    if (parse_number(p, f, value, &number) < 0)
        return -1;
    *(unsigned *)dest(f, obj) = (unsigned)number;
    return 0;
}

static int field_address(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    const char *why = parse_address(text, dest(f, obj));
    if (why)
        return fail(p, value, "%s: bad address '%.64s': %s", f->key, text, why);
    return 0;
}

/* A name for logs and statistics, copied into a char[64] at f->offset:
 * printable ASCII without spaces. */
static int check_name(struct parser *p, const char *what, yaml_node_t *node, const char *text)
{
    if (strlen(text) >= 64)
        return fail(p, node, "%s: '%.64s...' is longer than 63 characters", what, text);
    for (const char *c = text; *c; c++)
        if (*c <= ' ' || *c > '~')
            return fail(p, node, "%s: '%s' must be printable ASCII without spaces", what, text);
    return 0;
}

static int field_name(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    const char *text = scalar(p, value, f->key);
    if (!text || check_name(p, f->key, value, text) < 0)
        return -1;
    strcpy(dest(f, obj), text);
    return 0;
}

/* ---- top level: workers, log, timeouts, limits, listen ------------------ */

static unsigned online_cores(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    return cores < 1 ? 1 : cores > MAX_WORKERS ? MAX_WORKERS : (unsigned)cores;
}

static int field_workers(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_config *cfg = obj;
    const char *text = scalar(p, value, f->key);
    uint64_t n;
    const char *end;
    if (!text)
        return -1;
    if (strcmp(text, "auto") == 0)
        n = online_cores();
    else if (parse_uint(text, &end, &n) < 0 || *end || n < 1 || n > MAX_WORKERS)
        return fail(p, value, "workers: expected 'auto' or a number from 1 to %d, got '%.64s'",
                    MAX_WORKERS, text);
    cfg->workers = (unsigned)n;
    return 0;
}

static int field_access_log(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_config *cfg = obj;
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    free(cfg->access_log);
    cfg->access_log = strcmp(text, "off") == 0 ? NULL : strdup(text);
    if (strcmp(text, "off") != 0 && !cfg->access_log)
        return fail(p, value, "out of memory");
    return 0;
}

static const struct field log_fields[] = {
    {"access", field_access_log, 0, 0, 0, NULL},
    {0},
};

static const struct field timeout_fields[] = {
    FIELD("connect", field_duration, struct lb_timeouts, connect, 1, 0),
    FIELD("client_header", field_duration, struct lb_timeouts, client_header, 1, 0),
    FIELD("client_idle", field_duration, struct lb_timeouts, client_idle, 1, 0),
    FIELD("server", field_duration, struct lb_timeouts, server, 1, 0),
    FIELD("drain", field_duration, struct lb_timeouts, drain, 0, 0),
    FIELD("queue", field_duration, struct lb_timeouts, queue, 1, 0),
    FIELD("tunnel", field_duration, struct lb_timeouts, tunnel, 1, 0),
    {0},
};

static int parse_choice(struct parser *p, const struct field *f, yaml_node_t *value, void *obj,
                        const char *yes, const char *no);

static int field_xff_mode(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    return parse_choice(p, f, value, obj, "replace", "append");
}

static int field_underscores(struct parser *p, const struct field *f, yaml_node_t *value,
                             void *obj)
{
    return parse_choice(p, f, value, obj, "allow", "drop");
}

static const struct field header_fields[] = {
    FIELD("x_forwarded_for", field_xff_mode, struct lb_header_rules, xff_replace, 0, 0),
    FIELD("underscores", field_underscores, struct lb_header_rules, allow_underscores, 0, 0),
    {0},
};

static const struct field limit_fields[] = {
    FIELD("max_connections", field_u64, struct lb_limits, max_connections, 1, 10000000),
    FIELD("max_header_size", field_size, struct lb_limits, max_header_size, 1 << 10, 1 << 20),
    FIELD("max_uri_size", field_size, struct lb_limits, max_uri_size, 1, 1 << 20),
    FIELD("max_body_size", field_size, struct lb_limits, max_body_size, 0, UINT64_MAX),
    {0},
};

static const struct field listen_fields[] = {
    FIELD("address", field_address, struct lb_listen, address, 0, 0),
    {0},
};

static int field_listen(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_config *cfg = obj;
    size_t n;
    yaml_node_item_t *items;
    if (list_items(p, value, f->key, &items, &n) < 0)
        return -1;
    if (n == 0)
        return fail(p, value, "listen: at least one address is required");
    free(cfg->listens);
    cfg->n_listens = 0;
    if (!(cfg->listens = calloc(n, sizeof *cfg->listens)))
        return fail(p, value, "out of memory");
    cfg->n_listens = n;
    for (size_t i = 0; i < n; i++) {
        struct lb_listen *l = &cfg->listens[i];
        yaml_node_t *item = node_at(p, items[i]);
        l->line = line_of(item);
        if (walk_map(p, item, "listen entry", listen_fields, l) < 0)
            return -1;
        if (l->address.len == 0)
            return fail(p, item, "listen: 'address' is required");
        for (size_t j = 0; j < i; j++)
            if (cfg->listens[j].address.len == l->address.len &&
                memcmp(&cfg->listens[j].address.sa, &l->address.sa, l->address.len) == 0)
                return fail(p, item, "listen: %s is already listed on line %d", l->address.text,
                            cfg->listens[j].line);
    }
    return 0;
}

/* ---- backends ----------------------------------------------------------- */

static const struct field server_fields[] = {
    FIELD("address", field_address, struct lb_server, address, 0, 0),
    FIELD("weight", field_unsigned, struct lb_server, weight, 1, 1000),
    FIELD("id", field_name, struct lb_server, id, 0, 0),
    FIELD("max_conns", field_unsigned, struct lb_server, max_conns, 0, MAX_QUEUE),
    {0},
};

static int parse_server(struct parser *p, struct lb_backend *b, size_t pos, yaml_node_t *node)
{
    struct lb_server *s = &b->servers[pos];
    s->weight = 1;
    s->index = (unsigned)pos;
    s->line = line_of(node);
    atomic_init(&s->active, 0);
    atomic_init(&s->up, true);
    atomic_init(&s->up_since_ms, 0);
    atomic_init(&s->ejected_until_ms, 0);
    atomic_init(&s->passive_failures, 0);
    atomic_init(&s->ejections, 0);
    atomic_init(&s->passive_logged_ms, 0);
    if (walk_map(p, node, "server", server_fields, s) < 0)
        return -1;
    if (s->address.len == 0)
        return fail(p, node, "server: 'address' is required");
    if (s->id[0] == '\0') {
        if (check_name(p, "server id", node, s->address.text) < 0)
            return -1;
        strcpy(s->id, s->address.text);
    }
    for (size_t j = 0; j < pos; j++)
        if (strcmp(b->servers[j].id, s->id) == 0)
            return fail(p, node, "server id '%s' is already used on line %d in backend '%s'", s->id,
                        b->servers[j].line, b->name);
    return 0;
}

static int field_servers(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_backend *b = obj;
    size_t n;
    yaml_node_item_t *items;
    if (list_items(p, value, f->key, &items, &n) < 0)
        return -1;
    if (n == 0)
        return fail(p, value, "backend '%s': servers: at least one server is required", b->name);
    if (!(b->servers = calloc(n, sizeof *b->servers)))
        return fail(p, value, "out of memory");
    b->n_servers = n;
    for (size_t i = 0; i < n; i++)
        if (parse_server(p, b, i, node_at(p, items[i])) < 0)
            return -1;
    return 0;
}

static int field_balance(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_backend *b = obj;
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    if (!(b->balance = lb_balancer_find(text)))
        return fail(p, value, "balance: unknown algorithm '%.64s' (known: roundrobin, leastconn)",
                    text);
    return 0;
}

/* ---- health, passive detection, retries -------------------------------- */

/* Text that goes into a request line or a header: printable ASCII without
 * spaces, so a config can never inject a header or split the request. */
static int check_header_text(struct parser *p, const struct field *f, yaml_node_t *node,
                             const char *text, size_t max_len)
{
    if (strlen(text) > max_len)
        return fail(p, node, "%s: longer than %zu characters", f->key, max_len);
    for (const char *c = text; *c; c++)
        if (*c <= ' ' || *c > '~')
            return fail(p, node, "%s: '%.64s' must be printable ASCII without spaces", f->key,
                        text);
    return 0;
}

static int field_health_path(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    const char *text = scalar(p, value, f->key);
    if (!text || check_header_text(p, f, value, text, LB_HEALTH_MAX_PATH) < 0)
        return -1;
    if (text[0] != '/')
        return fail(p, value, "path: '%.64s' must start with '/'", text);
    return set_string(p, f, value, obj, text);
}

static int field_health_host(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    const char *text = scalar(p, value, f->key);
    if (!text || check_header_text(p, f, value, text, LB_HEALTH_MAX_HOST) < 0)
        return -1;
    return set_string(p, f, value, obj, text);
}

/* One of two words: *(bool *)dest = (text == yes). */
static int parse_choice(struct parser *p, const struct field *f, yaml_node_t *value, void *obj,
                        const char *yes, const char *no)
{
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    if (strcmp(text, yes) != 0 && strcmp(text, no) != 0)
        return fail(p, value, "%s: expected %s or %s, got '%.64s'", f->key, yes, no, text);
    *(bool *)dest(f, obj) = strcmp(text, yes) == 0;
    return 0;
}

static int field_bool(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    return parse_choice(p, f, value, obj, "true", "false");
}

static int field_health_initial(struct parser *p, const struct field *f, yaml_node_t *value,
                                void *obj)
{
    return parse_choice(p, f, value, obj, "up", "down");
}

static int field_health_type(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_health_config *h = obj;
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    if (strcmp(text, "http") == 0)
        h->type = LB_HEALTH_HTTP;
    else if (strcmp(text, "tcp") == 0)
        h->type = LB_HEALTH_TCP;
    else
        return fail(p, value, "type: expected http or tcp, got '%.64s'", text);
    return 0;
}

static const struct field health_fields[] = {
    {"type", field_health_type, 0, 0, 0, NULL},
    FIELD("path", field_health_path, struct lb_health_config, path, 0, 0),
    FIELD("host", field_health_host, struct lb_health_config, host, 0, 0),
    FIELD("interval", field_duration, struct lb_health_config, interval, 1, 0),
    FIELD("timeout", field_duration, struct lb_health_config, timeout, 1, 0),
    FIELD("rise", field_unsigned, struct lb_health_config, rise, 1, 100),
    FIELD("fall", field_unsigned, struct lb_health_config, fall, 1, 100),
    FIELD("expect", field_unsigned, struct lb_health_config, expect, 100, 599),
    FIELD("initial", field_health_initial, struct lb_health_config, initial_up, 0, 0),
    {0},
};

/* `health` present turns active checks on (http unless `type` says tcp). */
static int field_health(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_backend *b = obj;
    struct lb_health_config *h = &b->health;
    h->type = LB_HEALTH_HTTP;
    if (walk_map(p, value, f->key, health_fields, h) < 0)
        return -1;
    if (!h->path && !(h->path = strdup("/health")))
        return fail(p, value, "out of memory");
    return 0;
}

static const struct field passive_fields[] = {
    FIELD("failures", field_unsigned, struct lb_passive_config, failures, 0, 1000),
    FIELD("base_ejection", field_duration, struct lb_passive_config, base_ejection, 1, 0),
    FIELD("max_ejection", field_duration, struct lb_passive_config, max_ejection, 1, 0),
    FIELD("max_ejected_percent", field_unsigned, struct lb_passive_config, max_ejected_percent, 0,
          100),
    FIELD("on_5xx", field_bool, struct lb_passive_config, on_5xx, 0, 0),
    {0},
};

static int field_passive(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_backend *b = obj;
    if (walk_map(p, value, f->key, passive_fields, &b->passive) < 0)
        return -1;
    if (b->passive.max_ejection < b->passive.base_ejection)
        return fail(p, value, "passive: max_ejection (%gs) is shorter than base_ejection (%gs)",
                    b->passive.max_ejection, b->passive.base_ejection);
    return 0;
}

static const struct field retry_budget_fields[] = {
    FIELD("percent", field_unsigned, struct lb_retry_budget, percent, 0, 100),
    FIELD("min_per_second", field_unsigned, struct lb_retry_budget, min_per_second, 0, 1000000),
    {0},
};

static int field_cookie_name(struct parser *p, const struct field *f, yaml_node_t *value,
                             void *obj)
{
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    if (!*text || strlen(text) > 63)
        return fail(p, value, "%s: a cookie name of 1 to 63 characters", f->key);
    for (const char *c = text; *c; c++)
        if (*c <= ' ' || *c >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", *c))
            return fail(p, value, "%s: '%.64s' is not a valid cookie name", f->key, text);
    return set_string(p, f, value, obj, text);
}

static int field_secret(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    if (strlen(text) < 16)
        return fail(p, value, "%s: at least 16 characters (it keys the HMAC of the cookie)",
                    f->key);
    return set_string(p, f, value, obj, text);
}

static const struct field affinity_fields[] = {
    FIELD("cookie", field_cookie_name, struct lb_affinity_config, cookie, 0, 0),
    FIELD("secret", field_secret, struct lb_affinity_config, secret, 0, 0),
    FIELD("max_age", field_duration, struct lb_affinity_config, max_age, 0, 0),
    {0},
};

/* "source", "uri", "header:NAME", "cookie:NAME" or "query:NAME". */
static int field_hash_key(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_backend *b = obj;
    const char *text = scalar(p, value, f->key);
    static const struct {
        const char *prefix;
        enum lb_hash_key kind;
    } named[] = {{"header:", LB_HASH_KEY_HEADER},
                 {"cookie:", LB_HASH_KEY_COOKIE},
                 {"query:", LB_HASH_KEY_QUERY}};
    if (!text)
        return -1;
    b->hash_key_name[0] = '\0';
    if (strcmp(text, "source") == 0) {
        b->hash_key = LB_HASH_KEY_SOURCE;
        return 0;
    }
    if (strcmp(text, "uri") == 0) {
        b->hash_key = LB_HASH_KEY_URI;
        return 0;
    }
    for (size_t i = 0; i < sizeof(named) / sizeof(named[0]); i++) {
        size_t len = strlen(named[i].prefix);
        if (strncmp(text, named[i].prefix, len) != 0)
            continue;
        const char *name = text + len;
        if (!*name || strlen(name) > 63)
            return fail(p, value, "%s: '%.64s' needs a name of 1 to 63 characters", f->key, text);
        for (const char *c = name; *c; c++)
            if (*c <= ' ' || *c >= 0x7f)
                return fail(p, value, "%s: '%.64s' has a bad name", f->key, text);
        b->hash_key = named[i].kind;
        strcpy(b->hash_key_name, name);
        return 0;
    }
    return fail(p, value,
                "%s: expected source, uri, header:NAME, cookie:NAME or query:NAME, got '%.64s'",
                f->key, text);
}

static int field_factor(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    const char *text = scalar(p, value, f->key);
    char *end;
    if (!text)
        return -1;
    double factor = strtod(text, &end);
    if (end == text || *end || !(factor == 0 || (factor >= 1 && factor <= 100)))
        return fail(p, value, "%s: expected 0 (no bound) or a number from 1 to 100, got '%.64s'",
                    f->key, text);
    *(double *)dest(f, obj) = factor;
    return 0;
}

static const struct field backend_fields[] = {
    {"affinity", field_map, offsetof(struct lb_backend, affinity), 0, 0, affinity_fields},
    {"hash_key", field_hash_key, 0, 0, 0, NULL},
    FIELD("hash_balance_factor", field_factor, struct lb_backend, hash_balance_factor, 0, 0),
    {"balance", field_balance, 0, 0, 0, NULL},
    {"servers", field_servers, 0, 0, 0, NULL},
    FIELD("keepalive", field_unsigned, struct lb_backend, keepalive, 0, 65536),
    FIELD("keepalive_timeout", field_duration, struct lb_backend, keepalive_timeout, 1, 0),
    {"health", field_health, 0, 0, 0, NULL},
    FIELD("slow_start", field_duration, struct lb_backend, slow_start, 0, 0),
    {"passive", field_passive, 0, 0, 0, NULL},
    FIELD("retries", field_unsigned, struct lb_backend, retries, 0, LB_MAX_TRIED - 1),
    {"retry_budget", field_map, offsetof(struct lb_backend, retry_budget), 0, 0,
     retry_budget_fields},
    FIELD("queue", field_unsigned, struct lb_backend, queue, 0, MAX_QUEUE),
    {0},
};

/* Defaults of a backend before its keys are read. */
static void backend_defaults(struct lb_backend *b)
{
    b->balance = lb_balancer_find("roundrobin");
    b->keepalive = 1024;
    b->keepalive_timeout = 60;
    b->health = (struct lb_health_config){.type = LB_HEALTH_NONE,
                                          .interval = 1,
                                          .timeout = 0.5,
                                          .rise = 2,
                                          .fall = 3,
                                          .expect = 200,
                                          .initial_up = true};
    b->slow_start = 0;
    b->passive = (struct lb_passive_config){.failures = 5,
                                            .base_ejection = 10,
                                            .max_ejection = 300,
                                            .max_ejected_percent = 50,
                                            .on_5xx = false};
    b->retries = 2;
    b->retry_budget = (struct lb_retry_budget){.percent = 20, .min_per_second = 3};
    b->queue = 100;
    b->hash_key = LB_HASH_KEY_SOURCE;
    b->hash_balance_factor = 1.25;
}

/* The affinity key of a backend: both cookie and secret, and every server's
 * token computed once. */
static int finish_affinity(struct parser *p, yaml_node_t *node, struct lb_backend *b)
{
    struct lb_affinity_config *a = &b->affinity;
    if (!a->cookie && !a->secret)
        return 0;
    if (!a->cookie || !a->secret)
        return fail(p, node, "backend '%s': affinity needs both 'cookie' and 'secret'", b->name);
    const char *ids[b->n_servers > 0 ? b->n_servers : 1];
    for (size_t k = 0; k < b->n_servers; k++)
        ids[k] = b->servers[k].id;
    if (lb_affinity_table_build(&b->affinity_tokens, a->secret, strlen(a->secret), ids,
                                b->n_servers) < 0)
        return fail(p, node, "backend '%s': out of memory", b->name);
    return 0;
}

static int field_backends(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_config *cfg = obj;
    p->backends = value;
    if (expect(p, value, YAML_MAPPING_NODE, f->key) < 0)
        return -1;
    yaml_node_pair_t *pairs = value->data.mapping.pairs.start;
    size_t n = (size_t)(value->data.mapping.pairs.top - pairs);
    if (n == 0)
        return fail(p, value, "backends: at least one backend is required");
    if (!(cfg->backends = calloc(n, sizeof *cfg->backends)))
        return fail(p, value, "out of memory");
    cfg->n_backends = n;
    for (size_t i = 0; i < n; i++) {
        struct lb_backend *b = &cfg->backends[i];
        yaml_node_t *name = node_at(p, pairs[i].key), *body = node_at(p, pairs[i].value);
        const char *text = map_key(p, value, &pairs[i], "backend");
        if (!text || check_name(p, "backend name", name, text) < 0)
            return -1;
        strcpy(b->name, text);
        b->line = line_of(name);
        backend_defaults(b);
        char what[80];
        snprintf(what, sizeof what, "backend '%s'", b->name);
        if (walk_map(p, body, what, backend_fields, b) < 0)
            return -1;
        if (!b->servers)
            return fail(p, name, "backend '%s': 'servers' is required", b->name);
        if (finish_affinity(p, name, b) < 0)
            return -1;
        /* Without active checks nothing could ever bring a server up. */
        bool up = b->health.type == LB_HEALTH_NONE || b->health.initial_up;
        for (size_t k = 0; k < b->n_servers; k++)
            atomic_store(&b->servers[k].up, up);
    }
    return 0;
}

/* ---- routes ------------------------------------------------------------- */

static int field_route_host(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    if (text[0] != '[' && strchr(text, ':'))
        return fail(p, value, "host: '%.64s' must not carry a port (ports are ignored)", text);
    return set_string(p, f, value, obj, text);
}

static int field_route_prefix(struct parser *p, const struct field *f, yaml_node_t *value,
                              void *obj)
{
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    if (text[0] != '/')
        return fail(p, value, "path_prefix: '%.64s' must start with '/'", text);
    return set_string(p, f, value, obj, text);
}

static int field_route_backend(struct parser *p, const struct field *f, yaml_node_t *value,
                               void *obj)
{
    struct lb_route *r = obj;
    const char *text = scalar(p, value, f->key);
    if (!text)
        return -1;
    for (size_t i = 0; i < p->cfg->n_backends; i++)
        if (strcmp(p->cfg->backends[i].name, text) == 0) {
            r->backend = &p->cfg->backends[i];
            return 0;
        }
    return fail(p, value, "backend: no backend is named '%.64s'", text);
}

static const struct field route_fields[] = {
    FIELD("host", field_route_host, struct lb_route, host, 0, 0),
    FIELD("path_prefix", field_route_prefix, struct lb_route, path_prefix, 0, 0),
    {"backend", field_route_backend, 0, 0, 0, NULL},
    {0},
};

static int parse_routes(struct parser *p, yaml_node_t *value)
{
    struct lb_config *cfg = p->cfg;
    size_t n;
    yaml_node_item_t *items;
    if (list_items(p, value, "routes", &items, &n) < 0)
        return -1;
    if (n > 0 && !(cfg->routes = calloc(n, sizeof *cfg->routes)))
        return fail(p, value, "out of memory");
    cfg->n_routes = n;
    for (size_t i = 0; i < n; i++) {
        struct lb_route *r = &cfg->routes[i];
        yaml_node_t *item = node_at(p, items[i]);
        r->line = line_of(item);
        if (walk_map(p, item, "route", route_fields, r) < 0)
            return -1;
        if (!r->backend)
            return fail(p, item, "route: 'backend' is required");
        if (!r->path_prefix && !(r->path_prefix = strdup("/")))
            return fail(p, item, "out of memory");
    }
    return 0;
}

static const struct field stats_fields[] = {
    FIELD("listen", field_address, struct lb_stats_config, address, 0, 0),
    {0},
};

static int field_stats(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    struct lb_config *cfg = obj;
    cfg->stats.enabled = true;
    cfg->stats.line = line_of(value);
    p->stats = value;
    if (walk_map(p, value, f->key, stats_fields, &cfg->stats) < 0)
        return -1;
    if (cfg->stats.address.len == 0)
        return fail(p, value, "stats: 'listen' is required");
    return 0;
}

/* Routes are only remembered here: they name backends, which may come later. */
static int field_routes(struct parser *p, const struct field *f, yaml_node_t *value, void *obj)
{
    (void)f;
    (void)obj;
    p->routes = value;
    return 0;
}

static const struct field top_fields[] = {
    {"workers", field_workers, 0, 0, 0, NULL},
    {"listen", field_listen, 0, 0, 0, NULL},
    {"log", field_map, 0, 0, 0, log_fields},
    {"timeouts", field_map, offsetof(struct lb_config, timeouts), 0, 0, timeout_fields},
    {"limits", field_map, offsetof(struct lb_config, limits), 0, 0, limit_fields},
    {"headers", field_map, offsetof(struct lb_config, headers), 0, 0, header_fields},
    {"backends", field_backends, 0, 0, 0, NULL},
    {"routes", field_routes, 0, 0, 0, NULL},
    {"stats", field_stats, 0, 0, 0, NULL},
    {0},
};

/* ---- loading ------------------------------------------------------------ */

static struct lb_config *config_new(const char *name)
{
    struct lb_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return NULL;
    cfg->workers = online_cores();
    cfg->timeouts = (struct lb_timeouts){.connect = 2,
                                         .client_header = 10,
                                         .client_idle = 60,
                                         .server = 30,
                                         .drain = 10,
                                         .queue = 2,
                                         .tunnel = 3600};
    cfg->limits = (struct lb_limits){.max_connections = 10000,
                                     .max_header_size = 16u << 10,
                                     .max_uri_size = 8u << 10,
                                     .max_body_size = 0};
    cfg->path = strdup(name);
    cfg->access_log = strdup("stdout");
    if (!cfg->path || !cfg->access_log) {
        lb_config_free(cfg);
        return NULL;
    }
    return cfg;
}

/* Writes libyaml's error as "file:line: message". Returns -1. */
static int syntax_error(struct parser *p, const yaml_parser_t *yp, const char *yaml, size_t len)
{
    size_t line = yp->problem_mark.line + 1;
    if (yp->error == YAML_READER_ERROR) { /* reader errors carry an offset, not a mark */
        line = 1;
        for (size_t i = 0; i < yp->problem_offset && i < len; i++)
            line += yaml[i] == '\n';
    }
    if (yp->error == YAML_MEMORY_ERROR)
        snprintf(p->err, p->err_len, "%s: out of memory", p->name);
    else
        snprintf(p->err, p->err_len, "%s:%zu: %s%s%s%s", p->name, line,
                 yp->problem ? yp->problem : "invalid YAML", yp->context ? " (" : "",
                 yp->context ? yp->context : "", yp->context ? ")" : "");
    return -1;
}

static uint16_t port_of(const struct lb_address *a)
{
    if (a->sa.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->sa)->sin6_port);
    return ntohs(((const struct sockaddr_in *)&a->sa)->sin_port);
}

static bool is_wildcard(const struct lb_address *a)
{
    if (a->sa.ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->sa)->sin6_addr);
    return ((const struct sockaddr_in *)&a->sa)->sin_addr.s_addr == htonl(INADDR_ANY);
}

/* Two sockets on these addresses could not both listen: the same family and
 * port, and the same address or either one a wildcard (0.0.0.0, [::]). IPv6
 * sockets are v6-only in lb, so [::] does not take IPv4's port. */
static bool addresses_overlap(const struct lb_address *a, const struct lb_address *b)
{
    if (a->sa.ss_family != b->sa.ss_family || port_of(a) != port_of(b))
        return false;
    if (is_wildcard(a) || is_wildcard(b))
        return true;
    return a->len == b->len && memcmp(&a->sa, &b->sa, a->len) == 0;
}

/* Checks of the whole, once every key has been read. */
static int validate(struct parser *p, yaml_node_t *root)
{
    struct lb_config *cfg = p->cfg;
    if (cfg->n_backends == 0)
        return fail(p, root, "backends: at least one backend is required");
    if (p->routes && parse_routes(p, p->routes) < 0)
        return -1;
    if (cfg->n_routes == 0 && cfg->n_backends > 1) /* at the backend that made it ambiguous */
        return fail(
            p, p->routes ? p->routes : node_at(p, p->backends->data.mapping.pairs.start[1].key),
            "routes: required when there is more than one backend");
    if (cfg->n_listens == 0) {
        if (!(cfg->listens = calloc(1, sizeof *cfg->listens)))
            return fail(p, root, "out of memory");
        cfg->n_listens = 1;
        if (lb_parse_address("127.0.0.1:8080", &cfg->listens[0].address) < 0)
            return fail(p, root, "cannot use the default listen address 127.0.0.1:8080");
    }
    for (size_t i = 0; cfg->stats.enabled && i < cfg->n_listens; i++) {
        const struct lb_address *a = &cfg->listens[i].address;
        if (addresses_overlap(a, &cfg->stats.address))
            return fail(p, p->stats, "stats: %s overlaps the listen address %s",
                        cfg->stats.address.text, a->text);
    }
    return 0;
}

struct lb_config *lb_config_parse(const char *yaml, size_t len, const char *name, char *err,
                                  size_t err_len)
{
    struct parser p = {.name = name ? name : "config", .err = err, .err_len = err_len};
    yaml_parser_t yp;
    yaml_document_t extra;
    bool have_doc = false;
    int rc = -1;

    if (err_len)
        err[0] = '\0';
    if (!yaml_parser_initialize(&yp)) {
        snprintf(err, err_len, "%s: out of memory", p.name);
        return NULL;
    }
    if (!(p.cfg = config_new(p.name))) {
        snprintf(err, err_len, "%s: out of memory", p.name);
        goto out;
    }
    yaml_parser_set_input_string(&yp, (const unsigned char *)yaml, len);
    if (!yaml_parser_load(&yp, &p.doc)) {
        syntax_error(&p, &yp, yaml, len);
        goto out;
    }
    have_doc = true;
    yaml_node_t *root = yaml_document_get_root_node(&p.doc);
    if (!root) {
        fail(&p, NULL, "the configuration is empty");
        goto out;
    }
    /* A second document, or a syntax error after the first, is refused too. */
    if (!yaml_parser_load(&yp, &extra)) {
        syntax_error(&p, &yp, yaml, len);
        goto out;
    }
    bool several = yaml_document_get_root_node(&extra) != NULL;
    if (several)
        fail(&p, yaml_document_get_root_node(&extra), "only one YAML document is allowed");
    yaml_document_delete(&extra);
    if (several)
        goto out;
    if (walk_map(&p, root, "the top level", top_fields, p.cfg) < 0 || validate(&p, root) < 0)
        goto out;
    rc = 0;
out:
    if (have_doc)
        yaml_document_delete(&p.doc);
    yaml_parser_delete(&yp);
    if (rc < 0) {
        lb_config_free(p.cfg);
        return NULL;
    }
    return p.cfg;
}

struct lb_config *lb_config_load(const char *path, char *err, size_t err_len)
{
    struct lb_config *cfg = NULL;
    char *text = NULL;
    size_t len = 0, cap = 0, n;
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return NULL;
    }
    do { /* not fstat: the file may be a pipe */
        if (len == cap) {
            char *bigger = cap < MAX_CONFIG_BYTES ? realloc(text, cap + (64u << 10)) : NULL;
            if (!bigger) {
                snprintf(err, err_len, "%s: %s", path,
                         cap < MAX_CONFIG_BYTES ? "out of memory" : "larger than 16 MB");
                goto out;
            }
            text = bigger;
            cap += 64u << 10;
        }
        n = fread(text + len, 1, cap - len, f);
        len += n;
    } while (n > 0);
    if (ferror(f)) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        goto out;
    }
    cfg = lb_config_parse(text, len, path, err, err_len);
out:
    free(text);
    fclose(f);
    return cfg;
}

void lb_config_free(struct lb_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_backends; i++) {
        free(cfg->backends[i].servers);
        free(cfg->backends[i].health.path);
        free(cfg->backends[i].health.host);
        free(cfg->backends[i].affinity.cookie);
        free(cfg->backends[i].affinity.secret);
        lb_affinity_table_free(&cfg->backends[i].affinity_tokens);
        lb_balance_hash_release(&cfg->backends[i]);
    }
    for (size_t i = 0; i < cfg->n_routes; i++) {
        free(cfg->routes[i].host);
        free(cfg->routes[i].path_prefix);
    }
    free(cfg->backends);
    free(cfg->routes);
    free(cfg->listens);
    free(cfg->access_log);
    free(cfg->path);
    free(cfg);
}

/* ---- routing ------------------------------------------------------------ */

static bool host_matches(const char *want, const char *host, size_t len)
{
    if (!host)
        return false;
    if (len > 0 && host[0] == '[') { /* "[v6]:port": keep the brackets, drop the port */
        const char *close = memchr(host, ']', len);
        if (close)
            len = (size_t)(close - host) + 1;
    } else {
        const char *colon = memchr(host, ':', len);
        if (colon)
            len = (size_t)(colon - host);
    }
    if (strlen(want) != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char a = (unsigned char)want[i], b = (unsigned char)host[i];
        if (a >= 'A' && a <= 'Z')
            a += 'a' - 'A';
        if (b >= 'A' && b <= 'Z')
            b += 'a' - 'A';
        if (a != b)
            return false;
    }
    return true;
}

const struct lb_backend *lb_config_route(const struct lb_config *cfg, const char *host,
                                         size_t host_len, const char *path, size_t path_len)
{
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct lb_route *r = &cfg->routes[i];
        size_t prefix_len = strlen(r->path_prefix);
        if (r->host && !host_matches(r->host, host, host_len))
            continue;
        if (path_len < prefix_len || (prefix_len && memcmp(path, r->path_prefix, prefix_len)))
            continue;
        return r->backend;
    }
    if (cfg->n_routes == 0 && cfg->n_backends == 1)
        return &cfg->backends[0];
    return NULL;
}
