/* sluiced — the daemon: a thin main over libsluice's sluice_engine_*.
 * Flags and an INI config file (--config, parsed with inih) set the same keys;
 * flags win. SIGTERM/SIGINT drain gracefully; exit 0 after a clean drain.
 *
 * Signals are never handled asynchronously (no handler runs in whatever thread
 * the kernel picks): main blocks them before the engine creates any thread, so
 * every thread inherits the mask, and then takes them one at a time with
 * sigtimedwait(), the way nginx's master and Redis's signal-safe shutdown do.
 * A SIGTERM during start-up (LMDB, log recovery) stays pending and is acted on
 * as soon as sluice_engine_start returns; the engine is never touched after
 * sluice_engine_wait has begun freeing it. */
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice.h"

static const char *const served[] = {"http",  "admin", "mqtt",   "https",
                                     "mqtts", "frame", "frames", "udp"};

struct ini_ctx {
    sluice_config *cfg;
    const char *file;
    int failed;
};

static int on_ini(void *user, const char *section, const char *key, const char *value)
{
    struct ini_ctx *c = user;
    char err[256];
    (void)section; /* keys may sit at top level or under [sluiced] */
    if (sluice_config_set(c->cfg, key, value, err, sizeof err)) {
        fprintf(stderr, "sluiced: %s: %s\n", c->file, err);
        c->failed = 1;
        return 0;
    }
    return 1;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sluiced [--help] [options]\n\n%s", sluice_config_help());
}

/* How often main looks whether the engine stopped by itself (a worker's fatal
 * error) while no signal comes; signals themselves are taken at once. */
#define SIGNAL_POLL_MS 200

/* The signals main takes synchronously. SIGPIPE is not among them: it is
 * ignored (SIG_IGN survives in every thread; a blocked one would only pile up
 * as pending). */
static void wait_set(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, SIGQUIT);
}

/* Waits up to ms for one signal of set; returns it, or 0 when none came. */
static int next_signal(const sigset_t *set, unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    int sig;
    do
        sig = sigtimedwait(set, NULL, &ts);
    while (sig < 0 && errno == EINTR);
    return sig > 0 ? sig : 0;
}

/* One signal while serving. Returns true when it asks for a stop. SIGHUP
 * reloads the TLS certificate and key (eng NULL: draining, nothing reloads);
 * a failed reload keeps the current pair and says why, never fatal. */
static bool on_signal(sluice_engine *eng, int sig)
{
    if (sig == SIGHUP) {
        char err[600];
        if (!eng)
            fprintf(stderr, "sluiced: SIGHUP while draining: ignored\n");
        else if (sluice_engine_reload_tls(eng, err, sizeof err))
            fprintf(stderr, "sluiced: SIGHUP: %s; the current certificate stays\n", err);
        else
            fprintf(stderr, "sluiced: SIGHUP: TLS certificate and key reloaded\n");
        return false;
    }
    return sig == SIGTERM || sig == SIGINT || sig == SIGQUIT;
}

/* The drain runs sluice_engine_wait on a thread of its own so that main keeps
 * taking signals: a second or third SIGTERM/SIGINT is then only reported.
 * After sluice_engine_stop main never touches the engine again, so a late
 * signal cannot reach freed state. */
struct drain {
    sluice_engine *eng;
    int rc;
    atomic_bool done;
};

static void *drain_main(void *arg)
{
    struct drain *d = arg;
    d->rc = sluice_engine_wait(d->eng);
    atomic_store(&d->done, true);
    return NULL;
}

/* Serves until a stop signal (or the engine stops by itself), then drains.
 * Returns sluice_engine_wait's result. */
static int serve(sluice_engine *eng, const sigset_t *set, bool stop_now)
{
    while (!stop_now && !sluice_engine_stopping(eng))
        stop_now = on_signal(eng, next_signal(set, SIGNAL_POLL_MS));
    if (stop_now) fprintf(stderr, "sluiced: stop requested: draining\n");
    sluice_engine_stop(eng); /* idempotent; wakes the workers */

    struct drain d = {.eng = eng};
    pthread_t t;
    if (pthread_create(&t, NULL, drain_main, &d)) {
        /* no thread for it: drain here; further signals stay blocked and
         * pending, harmless, until exit */
        return sluice_engine_wait(eng);
    }
    /* the first repeat is said, the rest only counted: an operator holding
     * ^C must not flood the log */
    unsigned repeats = 0;
    while (!atomic_load(&d.done)) {
        int sig = next_signal(set, 50);
        if (!sig || !on_signal(NULL, sig)) continue;
        if (!repeats++)
            fprintf(stderr, "sluiced: %s: already draining (bounded by --drain-timeout)\n",
                    strsignal(sig));
    }
    pthread_join(t, NULL);
    if (repeats > 1) fprintf(stderr, "sluiced: %u stop signals during the drain\n", repeats);
    return d.rc;
}

int main(int argc, char **argv)
{
    sluice_config cfg;
    char err[512];
    sluice_config_init(&cfg);

    /* the config file first, so that flags override it wherever they appear */
    for (int i = 1; i < argc; i++) {
        const char *file = NULL;
        if (!strcmp(argv[i], "--config") && i + 1 < argc)
            file = argv[i + 1];
        else if (!strncmp(argv[i], "--config=", 9))
            file = argv[i] + 9;
        if (!file) continue;
        struct ini_ctx c = {&cfg, file, 0};
        int rc = ini_parse(file, on_ini, &c);
        if (rc < 0) {
            fprintf(stderr, "sluiced: --config: cannot read %s: %s\n", file, strerror(errno));
            return 2;
        }
        if (rc > 0 && !c.failed) fprintf(stderr, "sluiced: %s:%d: syntax error\n", file, rc);
        if (rc > 0 || c.failed) return 2;
    }

    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},
        {"config", required_argument, 0, 'c'},
        {"data-dir", required_argument, 0, 0},
        {"threads", required_argument, 0, 0},
        {"http", required_argument, 0, 0},
        {"https", required_argument, 0, 0},
        {"mqtt", required_argument, 0, 0},
        {"mqtts", required_argument, 0, 0},
        {"frame", required_argument, 0, 0},
        {"frames", required_argument, 0, 0},
        {"udp", required_argument, 0, 0},
        {"admin", required_argument, 0, 0},
        {"tls-cert", required_argument, 0, 0},
        {"tls-key", required_argument, 0, 0},
        {"tls-client-ca", required_argument, 0, 0},
        {"fsync", required_argument, 0, 0},
        {"direct-io", required_argument, 0, 0},
        {"commits-in-flight", required_argument, 0, 0},
        {"dsync", required_argument, 0, 0},
        {"ports-file", required_argument, 0, 0},
        {"max-body", required_argument, 0, 0},
        {"header-timeout", required_argument, 0, 0},
        {"body-timeout", required_argument, 0, 0},
        {"idle-timeout", required_argument, 0, 0},
        {"drain-timeout", required_argument, 0, 0},
        {"max-connections", required_argument, 0, 0},
        {"segment-bytes", required_argument, 0, 0},
        {"segment-age", required_argument, 0, 0},
        {"retention-days", required_argument, 0, 0},
        {"retention-bytes", required_argument, 0, 0},
        {"auth-fail-rate", required_argument, 0, 0},
        {"max-pending-bytes", required_argument, 0, 0},
        {"max-request-memory", required_argument, 0, 0},
        {"log-idle-timeout", required_argument, 0, 0},
        {0, 0, 0, 0},
    };
    opterr = 0;
    int idx, ch;
    while ((ch = getopt_long(argc, argv, "h", opts, &idx)) != -1) {
        if (ch == 'h') {
            usage(stdout);
            return 0;
        }
        if (ch == 'c') continue;
        if (ch == '?') {
            fprintf(stderr, "sluiced: unknown or incomplete option '%s' (see --help)\n",
                    argv[optind - 1]);
            return 2;
        }
        if (sluice_config_set(&cfg, opts[idx].name, optarg, err, sizeof err)) {
            fprintf(stderr, "sluiced: %s\n", err);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "sluiced: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }

    /* blocked before the engine starts any thread, so all of them inherit the
     * mask and only main ever takes these signals, start-up included */
    sigset_t set;
    wait_set(&set);
    int rc = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (rc) {
        fprintf(stderr, "sluiced: cannot block signals: %s\n", strerror(rc));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    sluice_engine *eng;
    rc = sluice_engine_start(&cfg, &eng, err, sizeof err);
    if (rc) {
        fprintf(stderr, "sluiced: %s\n", err);
        return rc == SLUICE_EINVAL ? 2 : 1;
    }
    /* a stop asked for while starting (still pending: blocked) is honoured now;
     * the workers have just begun, and drain whatever they accepted */
    bool stop_now = false;
    for (int sig; (sig = next_signal(&set, 0));)
        stop_now |= on_signal(eng, sig);
    for (size_t i = 0; i < sizeof served / sizeof served[0]; i++) {
        char addr[SLUICE_ADDR_MAX];
        if (sluice_engine_port(eng, served[i], addr)) printf("listening %s %s\n", served[i], addr);
    }
    if (stop_now)
        fprintf(stderr, "sluiced: a stop signal came during start-up\n");
    else
        printf("ready\n");
    fflush(stdout);
    rc = serve(eng, &set, stop_now);
    return rc ? 1 : 0;
}
