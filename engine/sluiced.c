/* sluiced — the daemon: a thin main over libsluice's sluice_engine_*.
 * Flags and an INI config file (--config, parsed with inih) set the same keys;
 * flags win. SIGTERM/SIGINT drain gracefully; exit 0 after a clean drain. */
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

static const char *const served[] = {"http", "admin"};
static const char *const not_yet[] = {"https", "mqtt", "mqtts", "frame", "udp"};

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

static sluice_engine *g_engine;

static void on_signal(int sig)
{
    (void)sig;
    if (g_engine) sluice_engine_stop(g_engine);
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
        {"udp", required_argument, 0, 0},
        {"admin", required_argument, 0, 0},
        {"tls-cert", required_argument, 0, 0},
        {"tls-key", required_argument, 0, 0},
        {"fsync", required_argument, 0, 0},
        {"direct-io", required_argument, 0, 0},
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

    /* handlers before start: a signal during start-up must still stop cleanly */
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGHUP, SIG_IGN); /* reload arrives with TLS (S-later); never die of it */

    sluice_engine *eng;
    int rc = sluice_engine_start(&cfg, &eng, err, sizeof err);
    if (rc) {
        fprintf(stderr, "sluiced: %s\n", err);
        return rc == SLUICE_EINVAL ? 2 : 1;
    }
    g_engine = eng;
    for (size_t i = 0; i < sizeof served / sizeof served[0]; i++) {
        char addr[SLUICE_ADDR_MAX];
        if (sluice_engine_port(eng, served[i], addr)) printf("listening %s %s\n", served[i], addr);
    }
    const char *cfgaddr[] = {cfg.https, cfg.mqtt, cfg.mqtts, cfg.frame, cfg.udp};
    for (size_t i = 0; i < sizeof not_yet / sizeof not_yet[0]; i++)
        if (cfgaddr[i][0])
            fprintf(stderr, "sluiced: note: %s (%s) is not served by this version yet\n",
                    not_yet[i], cfgaddr[i]);
    printf("ready\n");
    fflush(stdout);
    rc = sluice_engine_wait(eng);
    g_engine = NULL;
    return rc ? 1 : 0;
}
