/* lb: command line, signals, and the start and stop of the workers and of
 * the health thread. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "config.h"
#include "health.h"
#include "listener.h"
#include "log.h"
#include "splice.h"
#include "stats_server.h"
#include "worker.h"

#define DEFAULT_CONFIG "config/lb.yaml"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: lb [-c FILE] [-t] [-v] [-h]\n"
            "  -c FILE  configuration file (default " DEFAULT_CONFIG ")\n"
            "  -t       check the configuration and exit: 0 when valid, 1 with\n"
            "           'file:line: message' when not\n"
            "  -v       print the version and exit\n"
            "  -h       print this help and exit\n"
            "Signals: SIGTERM or SIGINT stop accepting, finish requests in flight\n"
            "(at most timeouts.drain) and exit 0.\n");
}

/* Waits for every worker to end, at most `seconds`. Returns how many ended. */
static unsigned join_workers(struct lb_worker *workers, unsigned n, double seconds)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += (time_t)seconds;
    deadline.tv_nsec += (long)((seconds - (double)(time_t)seconds) * 1e9);
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    unsigned ended = 0;
    for (unsigned i = 0; i < n; i++)
        if (pthread_timedjoin_np(workers[i].thread, NULL, &deadline) == 0)
            ended++;
    return ended;
}

/* Each client connection may hold two descriptors (client and server), each
 * worker up to two per pipe for spliced bodies, and the stats endpoint one
 * per scrape: raise the soft limit as far as the hard limit allows. */
static void raise_fd_limit(const struct lb_config *cfg)
{
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) < 0)
        return;
    rlim_t want = (rlim_t)cfg->limits.max_connections * 2 +
                  (rlim_t)cfg->workers * (LB_PIPES_MAX + LB_PIPES_SPARE) * 2 +
                  (cfg->stats.enabled ? LB_STATS_MAX_CONNS + 1 : 0) + 64;
    if (lim.rlim_cur >= want)
        return;
    lim.rlim_cur = lim.rlim_max == RLIM_INFINITY || lim.rlim_max > want ? want : lim.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < cfg->limits.max_connections + 64)
        lb_log_info("open files limited to %llu: fewer than max_connections",
                    (unsigned long long)lim.rlim_cur);
}

static int run(struct lb_config *cfg)
{
    raise_fd_limit(cfg);
    int rc = 1;
    if (lb_log_open(cfg->access_log) < 0) {
        lb_log_error("access log %s: %s", cfg->access_log, strerror(errno));
        return 1;
    }
    /* Workers inherit a mask without the stop signals: only this thread,
     * in sigwait(), receives them. */
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* Started before the workers (it inherits the mask above), stopped after
     * they ended: a worker may always read and report server health. */
    if (lb_health_start(cfg) < 0)
        return 1;
    static struct lb_shared shared;
    struct lb_worker *workers = calloc(cfg->workers, sizeof(*workers));
    if (!workers) {
        lb_health_stop();
        return 1;
    }
    unsigned started = 0;
    struct lb_worker_stats **counters = NULL;
    struct lb_stats_server *stats = NULL;
    for (size_t i = 0; i < cfg->n_listens; i++)
        if (lb_listener_check_free(&cfg->listens[i]) < 0)
            goto stop;
    for (unsigned i = 0; i < cfg->workers; i++) {
        if (lb_worker_init(&workers[i], i, cfg, &shared) < 0)
            goto stop;
    }
    counters = calloc(cfg->workers, sizeof(*counters));
    if (!counters)
        goto stop;
    for (unsigned i = 0; i < cfg->workers; i++)
        counters[i] = &workers[i].stats;
    if (cfg->stats.enabled &&
        !(stats = lb_stats_server_start(cfg, counters, cfg->workers, &shared.connections)))
        goto stop;
    for (; started < cfg->workers; started++)
        if (lb_worker_start(&workers[started]) < 0)
            goto stop;
    for (size_t i = 0; i < cfg->n_listens; i++)
        lb_log_info("listening on %s with %u workers", cfg->listens[i].address.text, cfg->workers);
    int sig = 0;
    sigwait(&stop_signals, &sig);
    lb_log_info("signal %d: draining (at most %.1fs)", sig, cfg->timeouts.drain);
    rc = 0;
stop:
    for (unsigned i = 0; i < started; i++)
        lb_worker_drain(&workers[i]);
    if (join_workers(workers, started, cfg->timeouts.drain) < started) {
        lb_log_info("drain timeout: closing the remaining connections");
        _exit(rc); /* threads still own connections: end them with the process */
    }
    lb_stats_server_stop(stats); /* before the counters it reads go */
    free(counters);
    for (unsigned i = 0; i < cfg->workers; i++)
        lb_worker_destroy(&workers[i]);
    free(workers);
    lb_health_stop();
    lb_log_close();
    if (rc == 0)
        lb_log_info("stopped");
    return rc;
}

int main(int argc, char **argv)
{
    const char *path = DEFAULT_CONFIG;
    bool test_only = false;
    int opt;
    while ((opt = getopt(argc, argv, "c:tvh")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = true;
            break;
        case 'v':
            printf("lb %s\n", LB_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 1;
    }
    char err[512];
    struct lb_config *cfg = lb_config_load(path, err, sizeof(err));
    if (!cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only) {
        printf("%s: configuration is valid\n", path);
        lb_config_free(cfg);
        return 0;
    }
    int rc = run(cfg);
    lb_config_free(cfg);
    return rc;
}
