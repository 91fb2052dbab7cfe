/* Server health: active checks, the rise/fall rule, passive ejection, slow
 * start. The only writer of a server's health fields (up, up_since_ms,
 * ejected_until_ms and the passive counters of struct lb_server); every worker
 * reads them through lb_health_usable() and lb_health_weight().
 *
 * - Active checks run in ONE thread for the whole process, with its own libev
 *   loop (lb_health_start/lb_health_stop): per server of a backend with a
 *   `health` key, every `interval` a non-blocking connect (tcp) plus, for
 *   http, "GET path" whose status must equal `expect`, all within `timeout`.
 *   Results go through lb_health_next(); a change is one atomic store that all
 *   workers see at once, and one log line with the reason.
 * - Passive detection: workers report the outcome of real exchanges with
 *   lb_health_report(); consecutive failures eject a server for a back-off
 *   that doubles with each ejection, capped, never ejecting more than
 *   max_ejected_percent of a backend.
 *
 * This header is pure (no libev): balancers include it. */
#ifndef LB_HEALTH_H
#define LB_HEALTH_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* ---- the rise/fall rule (pure) ------------------------------------------ */

enum lb_health_state {
    LB_HEALTH_DOWN, /* failing its checks: not picked */
    LB_HEALTH_UP,   /* passing its checks */
};

/* What the rule remembers between checks of one server. */
struct lb_health_counters {
    enum lb_health_state state;
    /* Consecutive checks that disagree with `state`: failures while UP,
     * successes while DOWN. A check that agrees resets it to 0. */
    unsigned streak;
};

struct lb_health_step {
    struct lb_health_counters counters; /* after the check */
    bool changed;                       /* state differs from before */
};

/* The counters after one check: UP turns DOWN at the `fall`-th consecutive
 * failure, DOWN turns UP at the `rise`-th consecutive success; the streak is
 * 0 after a change. rise and fall of 0 count as 1. Pure. */
struct lb_health_step lb_health_next(struct lb_health_counters c, bool check_ok, unsigned rise,
                                     unsigned fall);

/* ---- what balancers read ------------------------------------------------ */

/* Weights from lb_health_weight() are in 1/LB_WEIGHT_SCALE of a configured
 * weight unit, so a weight-1 server can ramp from 10% in small steps. */
#define LB_WEIGHT_SCALE 1000u

/* Fraction of the full weight a server gets the moment it comes up, in
 * 1/LB_WEIGHT_SCALE (slow start ramps linearly from there to full). */
#define LB_SLOW_START_FLOOR 100u

/* Monotonic clock in milliseconds (never 0). */
uint64_t lb_now_ms(void);

/* True when requests may go to `s` at `now_ms`: it is up and not ejected.
 * Any thread; two relaxed atomic loads. */
bool lb_health_usable(const struct lb_server *s, uint64_t now_ms);

/* The effective weight of `s` at `now_ms`, in units of 1/LB_WEIGHT_SCALE:
 * weight * LB_WEIGHT_SCALE, except during the first `b->slow_start` seconds
 * after it came up (up_since_ms) or returned from an ejection, when it grows
 * linearly from LB_SLOW_START_FLOOR/LB_WEIGHT_SCALE (10%) of that to all of
 * it. Never 0 (a weight of 0 counts as 1). Servers up since lb started and
 * never ejected do not ramp. b may be NULL (no slow start). */
uint64_t lb_health_weight(const struct lb_server *s, const struct lb_backend *b, uint64_t now_ms);

/* ---- passive detection --------------------------------------------------- */

enum lb_outcome {
    LB_OUTCOME_OK,             /* a response head arrived (any status below 500) */
    LB_OUTCOME_CONNECT_FAILED, /* refused, unreachable, or connect timed out */
    LB_OUTCOME_RESET,          /* the server reset or closed before a complete response */
    LB_OUTCOME_TIMEOUT,        /* the server sent nothing for timeouts.server */
    LB_OUTCOME_5XX,            /* a 5xx response: a failure only with passive.on_5xx */
};

/* Reports how an exchange with server `s` of backend `b` ended, from any
 * worker thread. Only failures the server caused may be reported: a local
 * error (EMFILE, ENOMEM, no free port on lb's side) or a client that went
 * away is not an outcome. OK (and 5XX without on_5xx) resets the server's
 * consecutive-failure count; the `b->passive.failures`-th consecutive failure
 * ejects it until now_ms + base_ejection * 2^(ejections so far), at most
 * max_ejection, unless that would make more than max_ejected_percent of the
 * backend's servers ejected at once (the server then stays, and the next
 * failure tries again). Failures while ejected are ignored. An ejection is
 * logged with its reason; the return is logged by the health thread. Does
 * nothing when passive.failures is 0. */
void lb_health_report(struct lb_server *s, const struct lb_backend *b, enum lb_outcome outcome,
                      uint64_t now_ms);

/* The ejection length in ms after `times` earlier ejections: base * 2^times,
 * capped at max (both in seconds). Pure; exposed for tests. */
uint64_t lb_health_ejection_ms(const struct lb_passive_config *p, unsigned times);

/* ---- the health thread --------------------------------------------------- */

/* Starts the health thread for cfg: active checks of every server whose
 * backend has a `health` key, and the sweep that logs returns from ejection
 * and lets the ejection count decay. cfg must outlive lb_health_stop().
 * Returns 0, or -1 with a message logged (no thread then). Call once. */
int lb_health_start(const struct lb_config *cfg);

/* Stops the thread: closes every check connection and frees everything.
 * Safe to call when not started, and twice. */
void lb_health_stop(void);

/* Counters of active checks since start, for tests and statistics. */
struct lb_health_totals {
    uint64_t checks;       /* checks that reached a verdict */
    uint64_t ok;           /* of which succeeded */
    uint64_t failed;       /* of which failed */
    uint64_t local_errors; /* checks skipped for a local error (no verdict) */
    uint64_t open_fds;     /* check connections open right now */
};
void lb_health_get_totals(struct lb_health_totals *out);

#endif
