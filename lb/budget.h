/* The retry budget of a backend: retries may add at most `percent` of its
 * requests over the last two one-second windows, plus `min_per_second`, so a
 * sick cluster is not buried under a retry storm. Shared by every worker
 * (atomics only); approximate at window edges, which is all a budget needs. */
#ifndef LB_BUDGET_H
#define LB_BUDGET_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* Counts one request (not a retry) sent to the backend. */
void lb_budget_count_request(struct lb_backend *b, uint64_t now_ms);

/* Takes one retry from the budget. Returns false when the budget is spent
 * (the caller then answers with the failure instead of retrying). */
bool lb_budget_take_retry(struct lb_backend *b, uint64_t now_ms);

#endif
