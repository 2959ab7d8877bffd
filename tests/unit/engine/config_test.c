/* Unit tests for sluice_config_set: the one parser behind sluiced's flags and
 * its INI file. Bad values must be refused with a reason naming the key. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sluice.h"

static sluice_config cfg;
static char err[256];

static void setup(void)
{
    sluice_config_init(&cfg);
    err[0] = '\0';
}

TestSuite(config, .init = setup);

Test(config, defaults_match_interface_md)
{
    cr_assert_str_eq(cfg.data_dir, "./data");
    cr_assert_str_eq(cfg.http, "0.0.0.0:8080");
    cr_assert_str_eq(cfg.https, "0.0.0.0:8443");
    cr_assert_str_eq(cfg.mqtt, "0.0.0.0:1883");
    cr_assert_str_eq(cfg.mqtts, "0.0.0.0:8883");
    cr_assert_str_eq(cfg.frame, "0.0.0.0:7000");
    cr_assert_str_eq(cfg.udp, "");
    cr_assert_str_eq(cfg.admin, "127.0.0.1:9090");
    cr_assert_eq(cfg.fsync, SLUICE_FSYNC_BATCH);
    cr_assert_eq(cfg.max_body, 1u << 20);
    cr_assert_eq(cfg.threads, 0);
}

Test(config, addresses_v4_v6_and_off)
{
    cr_assert_eq(sluice_config_set(&cfg, "http", "127.0.0.1:0", err, sizeof err), 0);
    cr_assert_str_eq(cfg.http, "127.0.0.1:0");
    cr_assert_eq(sluice_config_set(&cfg, "mqtt", "[::1]:1883", err, sizeof err), 0);
    cr_assert_eq(sluice_config_set(&cfg, "frame", "off", err, sizeof err), 0);
    cr_assert_str_eq(cfg.frame, "");
}

Test(config, bad_addresses_name_the_key)
{
    const char *bad[] = {"nonsense", "127.0.0.1", "127.0.0.1:65536", "127.0.0.1:-1",
                         ":80x",     "[::1:80",   "127.0.0.1:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(sluice_config_set(&cfg, "http", bad[i], err, sizeof err), SLUICE_EINVAL,
                     "%s accepted", bad[i]);
        cr_assert(strstr(err, "http"), "reason does not name the key: %s", err);
    }
}

Test(config, fsync_modes)
{
    cr_assert_eq(sluice_config_set(&cfg, "fsync", "never", err, sizeof err), 0);
    cr_assert_eq(cfg.fsync, SLUICE_FSYNC_NEVER);
    cr_assert_eq(sluice_config_set(&cfg, "fsync", "always", err, sizeof err), 0);
    cr_assert_eq(cfg.fsync, SLUICE_FSYNC_ALWAYS);
    cr_assert_eq(sluice_config_set(&cfg, "fsync", "interval:250", err, sizeof err), 0);
    cr_assert_eq(cfg.fsync, SLUICE_FSYNC_INTERVAL);
    cr_assert_eq(cfg.fsync_interval_ms, 250);
    cr_assert_eq(sluice_config_set(&cfg, "fsync", "interval:2s", err, sizeof err), 0);
    cr_assert_eq(cfg.fsync_interval_ms, 2000);
    cr_assert_eq(sluice_config_set(&cfg, "fsync", "batch", err, sizeof err), 0);
    cr_assert_eq(cfg.fsync, SLUICE_FSYNC_BATCH);
    cr_assert_eq(sluice_config_set(&cfg, "fsync", "sometimes", err, sizeof err), SLUICE_EINVAL);
    cr_assert_eq(sluice_config_set(&cfg, "fsync", "interval:", err, sizeof err), SLUICE_EINVAL);
    cr_assert_eq(sluice_config_set(&cfg, "fsync", "interval:0", err, sizeof err), SLUICE_EINVAL);
}

Test(config, direct_io_on_by_default_and_switchable)
{
    cr_assert(cfg.direct_io);
    cr_assert_eq(sluice_config_set(&cfg, "direct-io", "off", err, sizeof err), 0);
    cr_assert(!cfg.direct_io);
    cr_assert_eq(sluice_config_set(&cfg, "direct_io", "on", err, sizeof err), 0);
    cr_assert(cfg.direct_io);
    cr_assert_eq(sluice_config_set(&cfg, "direct-io", "yes", err, sizeof err), SLUICE_EINVAL);
    cr_assert(strstr(err, "direct-io"), "reason does not name the key: %s", err);
}

Test(config, commits_in_flight_and_dsync)
{
    cr_assert_eq(cfg.commits_in_flight, 2);
    cr_assert_eq(cfg.dsync, SLUICE_DSYNC_AUTO);
    cr_assert_eq(sluice_config_set(&cfg, "commits-in-flight", "8", err, sizeof err), 0);
    cr_assert_eq(cfg.commits_in_flight, 8);
    cr_assert_eq(sluice_config_set(&cfg, "commits_in_flight", "1", err, sizeof err), 0);
    cr_assert_eq(cfg.commits_in_flight, 1);
    const char *bad[] = {"0", "17", "-1", "2x", ""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(sluice_config_set(&cfg, "commits-in-flight", bad[i], err, sizeof err),
                     SLUICE_EINVAL, "'%s' taken", bad[i]);
        cr_assert(strstr(err, "commits-in-flight"), "reason does not name the key: %s", err);
    }
    cr_assert_eq(cfg.commits_in_flight, 1);
    cr_assert_eq(sluice_config_set(&cfg, "dsync", "on", err, sizeof err), 0);
    cr_assert_eq(cfg.dsync, SLUICE_DSYNC_ON);
    cr_assert_eq(sluice_config_set(&cfg, "dsync", "off", err, sizeof err), 0);
    cr_assert_eq(cfg.dsync, SLUICE_DSYNC_OFF);
    cr_assert_eq(sluice_config_set(&cfg, "dsync", "yes", err, sizeof err), SLUICE_EINVAL);
    cr_assert(strstr(err, "dsync"), "reason does not name the key: %s", err);
}

Test(config, sizes_and_durations)
{
    cr_assert_eq(sluice_config_set(&cfg, "max-body", "512KiB", err, sizeof err), 0);
    cr_assert_eq(cfg.max_body, 512u * 1024);
    cr_assert_eq(sluice_config_set(&cfg, "max_body", "2M", err, sizeof err), 0);
    cr_assert_eq(cfg.max_body, 2u << 20);
    cr_assert_eq(sluice_config_set(&cfg, "max-body", "0", err, sizeof err), SLUICE_EINVAL);
    cr_assert_eq(sluice_config_set(&cfg, "max-body", "1G", err, sizeof err), SLUICE_EINVAL);
    cr_assert_eq(sluice_config_set(&cfg, "max-body", "-5", err, sizeof err), SLUICE_EINVAL);
    cr_assert_eq(sluice_config_set(&cfg, "header-timeout", "500ms", err, sizeof err), 0);
    cr_assert_eq(cfg.header_timeout_ms, 500);
    cr_assert_eq(sluice_config_set(&cfg, "header-timeout", "3", err, sizeof err), 0);
    cr_assert_eq(cfg.header_timeout_ms, 3000);
    cr_assert_eq(sluice_config_set(&cfg, "idle-timeout", "2m", err, sizeof err), 0);
    cr_assert_eq(cfg.idle_timeout_ms, 120000);
    cr_assert_eq(sluice_config_set(&cfg, "body-timeout", "0s", err, sizeof err), SLUICE_EINVAL);
    cr_assert_eq(sluice_config_set(&cfg, "body-timeout", "5h", err, sizeof err), SLUICE_EINVAL);
}

Test(config, threads_bounds)
{
    cr_assert_eq(sluice_config_set(&cfg, "threads", "2", err, sizeof err), 0);
    cr_assert_eq(cfg.threads, 2);
    cr_assert_eq(sluice_config_set(&cfg, "threads", "0", err, sizeof err), SLUICE_EINVAL);
    cr_assert_eq(sluice_config_set(&cfg, "threads", "2x", err, sizeof err), SLUICE_EINVAL);
    cr_assert_eq(sluice_config_set(&cfg, "threads", "", err, sizeof err), SLUICE_EINVAL);
}

Test(config, unknown_key_is_refused)
{
    cr_assert_eq(sluice_config_set(&cfg, "colour", "blue", err, sizeof err), SLUICE_EINVAL);
    cr_assert(strstr(err, "colour"));
}

Test(config, overlong_path_is_refused)
{
    char path[SLUICE_PATH_MAX + 10];
    memset(path, 'a', sizeof path - 1);
    path[sizeof path - 1] = '\0';
    cr_assert_eq(sluice_config_set(&cfg, "data-dir", path, err, sizeof err), SLUICE_EINVAL);
    cr_assert_str_eq(cfg.data_dir, "./data");
}

/* An embedding host may fill the struct itself, bypassing sluice_config_set:
 * the engine checks listen addresses again and refuses, never crashes (the
 * old code took strrchr(spec, ':') without checking it for NULL). */
Test(config, engine_refuses_listen_address_set_in_struct_without_port)
{
    char dir[] = "/tmp/sluice-config-test-XXXXXX";
    cr_assert(mkdtemp(dir));
    snprintf(cfg.data_dir, sizeof cfg.data_dir, "%s/data", dir);
    static const char *const bad[] = {"8080", "[::1]", "[::1", "127.0.0.1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(cfg.http, sizeof cfg.http, "%s", bad[i]);
        cfg.admin[0] = cfg.https[0] = cfg.mqtt[0] = cfg.mqtts[0] = cfg.frame[0] = '\0';
        cfg.threads = 1;
        sluice_engine *eng = NULL;
        err[0] = '\0';
        cr_assert_eq(sluice_engine_start(&cfg, &eng, err, sizeof err), SLUICE_EINVAL, "%s", bad[i]);
        cr_assert(strstr(err, bad[i]), "%s: %s", bad[i], err);
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_assert_eq(system(cmd), 0);
}
