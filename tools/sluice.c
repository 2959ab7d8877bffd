/* tools/sluice.c — the sluice admin CLI: global options and dispatch, and the
 * org and device commands. Thin by design: every change is a call into
 * storage/store, which LMDB makes safe while sluiced runs on the same data dir.
 *
 * Output contract (INTERFACE.md): what a command creates goes to stdout alone
 * (`org add` the id, `device add` the token), guidance to stderr, every error is
 * one line on stderr starting "sluice: ", exit 0 ok / 1 failure / 2 bad usage.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "storage/store.h"
#include "tools/cli.h"

/* wolfSSL requires its build options before any other of its headers. */
#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/asn_public.h>

#ifndef SLUICE_VERSION
#define SLUICE_VERSION "0.1.0"
#endif

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

static const char usage_text[] =
    "usage: sluice [--data-dir DIR] COMMAND ...\n"
    "\n"
    "Administers a sluice data directory directly; safe while sluiced runs on it.\n"
    "\n"
    "global options:\n"
    "  --data-dir DIR   data directory (default: $SLUICE_DATA_DIR, else ./data)\n"
    "  -h, --help       this help\n"
    "  --version        print the version\n"
    "\n"
    "commands:\n"
    "  org add NAME                    create an org; prints its id\n"
    "  org list                        list orgs\n"
    "  device add --org ORG NAME       create a device; prints its token (shown once)\n"
    "  device list --org ORG           list an org's devices (never their tokens)\n"
    "  log cat --org ORG [...]         print stored readings\n"
    "  log verify [--org ORG]          check log checksums; exit 1 on corruption\n"
    "\n"
    "not implemented yet: token rotate|revoke, user add|revoke|passwd, org set,\n"
    "audit, usage.\n"
    "\n"
    "ORG is an org name or its numeric id. Names: 1-64 characters from A-Z a-z 0-9\n"
    ". _ -, starting with a letter or digit (an org name cannot be all digits).\n"
    "Exit status: 0 ok, 1 failure, 2 bad usage.\n";

static const char name_rule[] =
    "1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit";

__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    va_list ap;
    fputs("sluice: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* Arguments echoed in messages come from the user and may hold control
 * characters; the one-line error promise must survive them. */
static const char *shown(const char *s, char *buf, size_t cap)
{
    size_t o = 0, i = 0;
    for (; s[i] && o + 4 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (s[i]) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}

#define SHOWN(s) shown((s), (char[96]){0}, 96)

static void format_time(uint64_t ns, char out[32])
{
    time_t sec = (time_t)(ns / 1000000000ull);
    struct tm tm;
    if (!gmtime_r(&sec, &tm) || strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, 32, "-");
}

/* Everything printed to stdout is what the caller scripts against: a write
 * error there (a full disk, a closed pipe) is a failure, not a detail. */
static int finish_stdout(void)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        say("writing to stdout failed: %s", strerror(errno));
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

/* ---- option parsing ---- */

struct opt {
    const char *name;   /* "--org" */
    const char **value; /* keeps its default unless the option is given */
    int seen;
};

/* Parses argv[first..argc) into value options and positionals. Accepts
 * "--opt VALUE", "--opt=VALUE", "--" and options in any position. Sets *help on
 * -h/--help. Returns 0, or EXIT_USAGE after printing why. */
static int parse_args(const char *cmd, int argc, char **argv, int first, struct opt *opts,
                      size_t nopts, const char **pos, int maxpos, int *npos, int *help)
{
    int only_pos = 0;
    *npos = 0;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i];
        if (!only_pos && strcmp(a, "--") == 0) {
            only_pos = 1;
            continue;
        }
        if (!only_pos && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
            *help = 1;
            continue;
        }
        if (!only_pos && a[0] == '-' && a[1] != '\0') {
            const char *eq = strchr(a, '=');
            size_t len = eq ? (size_t)(eq - a) : strlen(a);
            struct opt *o = NULL;
            for (size_t k = 0; k < nopts; k++)
                if (strlen(opts[k].name) == len && strncmp(a, opts[k].name, len) == 0) o = &opts[k];
            if (!o) {
                say("unknown option '%s' for '%s' (see 'sluice --help')", SHOWN(a), cmd);
                return EXIT_USAGE;
            }
            const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !*v) {
                say("option '%s' needs a value", o->name);
                return EXIT_USAGE;
            }
            if (o->seen++) {
                say("option '%s' given twice", o->name);
                return EXIT_USAGE;
            }
            *o->value = v;
            continue;
        }
        if (*npos >= maxpos) {
            say("unexpected argument '%s' for '%s' (see 'sluice --help')", SHOWN(a), cmd);
            return EXIT_USAGE;
        }
        pos[(*npos)++] = a;
    }
    return 0;
}

/* ---- store access ---- */

/* Opens the store, printing the one-line reason on failure. Commands that only
 * read never create: a mistyped --data-dir must not leave a fresh empty store. */
static int open_store(const char *data_dir, int create, struct store **s)
{
    int rc = store_open(s, data_dir, create);
    if (rc == 0) return EXIT_OK;
    if (rc == -ENOENT && !create) {
        struct stat st;
        if (stat(data_dir, &st) != 0)
            say("no data directory at %s (run 'make run' or 'sluice org add')", SHOWN(data_dir));
        else
            say("no store in %s (run 'make run' or 'sluice org add')", SHOWN(data_dir));
    } else {
        say("cannot open the store in %s: %s", SHOWN(data_dir), store_last_error(NULL));
    }
    return EXIT_FAIL;
}

/* Resolves --org (a name or a numeric id); prints the failure. */
static int resolve_org(struct store *s, const char *org, uint32_t *id, char *name)
{
    int rc = store_org_find(s, org, id, name);
    if (rc == 0) return EXIT_OK;
    if (rc == -ENOENT || rc == -EINVAL)
        say("no such org '%s'", SHOWN(org));
    else
        say("looking up org '%s' failed: %s", SHOWN(org), store_last_error(s));
    return EXIT_FAIL;
}

/* ---- org ---- */

static int org_add(const char *data_dir, int argc, char **argv)
{
    const char *pos[1];
    struct opt opts[] = {{"--data-dir", &data_dir, 0}};
    int npos = 0, help = 0, rc;
    uint32_t id = 0;
    struct store *s = NULL;

    if ((rc = parse_args("org add", argc, argv, 2, opts, 1, pos, 1, &npos, &help)) != 0) return rc;
    if (help) {
        fputs("usage: sluice org add NAME\nCreates an org and prints its id.\n", stdout);
        return finish_stdout();
    }
    if (npos != 1) {
        say("usage: sluice org add NAME");
        return EXIT_USAGE;
    }
    if ((rc = open_store(data_dir, 1, &s)) != 0) return rc;
    rc = store_org_add(s, pos[0], &id);
    if (rc == 0) {
        printf("%u\n", id);
        rc = finish_stdout();
    } else if (rc == -EEXIST) {
        say("org '%s' already exists", pos[0]);
        rc = EXIT_FAIL;
    } else if (rc == -EINVAL) {
        say("invalid org name '%s': use %s, not all digits", SHOWN(pos[0]), name_rule);
        rc = EXIT_USAGE;
    } else {
        say("adding org '%s' failed: %s", pos[0], store_last_error(s));
        rc = EXIT_FAIL;
    }
    store_close(s);
    return rc;
}

struct row {
    uint32_t id;
    uint32_t state;
    uint64_t created_ns;
    char name[STORE_NAME_MAX + 1];
};

struct rows {
    struct row *v;
    size_t n, cap;
    size_t name_w, id_w;
};

static int rows_push(struct rows *r, uint32_t id, const char *name, uint32_t state,
                     uint64_t created_ns)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct row *v = realloc(r->v, cap * sizeof(*v));
        if (!v) return -ENOMEM;
        r->v = v;
        r->cap = cap;
    }
    struct row *w = &r->v[r->n++];
    w->id = id;
    w->state = state;
    w->created_ns = created_ns;
    snprintf(w->name, sizeof(w->name), "%s", name);
    size_t len = strlen(w->name);
    if (len > r->name_w) r->name_w = len;
    char idbuf[12];
    len = (size_t)snprintf(idbuf, sizeof(idbuf), "%u", id);
    if (len > r->id_w) r->id_w = len;
    return 0;
}

static int org_row(void *ctx, uint32_t id, const char *name, uint64_t created_ns)
{
    return rows_push(ctx, id, name, 0, created_ns);
}

static int device_row(void *ctx, uint32_t id, const char *name, uint32_t state, uint64_t created_ns)
{
    return rows_push(ctx, id, name, state, created_ns);
}

static int org_list(const char *data_dir, int argc, char **argv)
{
    const char *pos[1];
    struct opt opts[] = {{"--data-dir", &data_dir, 0}};
    int npos = 0, help = 0, rc;
    struct store *s = NULL;
    struct rows r = {.name_w = 4, .id_w = 2};

    if ((rc = parse_args("org list", argc, argv, 2, opts, 1, pos, 0, &npos, &help)) != 0) return rc;
    if (help) {
        fputs("usage: sluice org list\nLists orgs: id, name, creation time (UTC).\n", stdout);
        return finish_stdout();
    }
    if ((rc = open_store(data_dir, 0, &s)) != 0) return rc;
    rc = store_org_list(s, org_row, &r);
    if (rc != 0) {
        say("listing orgs failed: %s", rc == -ENOMEM ? strerror(ENOMEM) : store_last_error(s));
        rc = EXIT_FAIL;
        goto done;
    }
    printf("%-*s  %-*s  %s\n", (int)r.id_w, "ID", (int)r.name_w, "NAME", "CREATED");
    for (size_t i = 0; i < r.n; i++) {
        char when[32];
        format_time(r.v[i].created_ns, when);
        printf("%-*u  %-*s  %s\n", (int)r.id_w, r.v[i].id, (int)r.name_w, r.v[i].name, when);
    }
    rc = finish_stdout();
done:
    free(r.v);
    store_close(s);
    return rc;
}

/* ---- device ---- */

/* The digest a client certificate file registers as (PEM or DER). Returns 0,
 * or says why and returns EXIT_FAIL. */
static int cert_file_digest(const char *path, uint8_t out[STORE_DIGEST_LEN])
{
    static unsigned char buf[65536], der[65536];
    FILE *f = fopen(path, "rb");
    if (!f) {
        say("--cert %s: %s", path, strerror(errno));
        return EXIT_FAIL;
    }
    size_t n = fread(buf, 1, sizeof buf, f);
    bool big = !feof(f);
    fclose(f);
    if (big) {
        say("--cert %s: larger than 64 KiB, not a certificate", path);
        return EXIT_FAIL;
    }
    const unsigned char *d = buf;
    int dn = (int)n;
    if (memmem(buf, n, "-----BEGIN CERTIFICATE-----", 27)) {
        dn = wc_CertPemToDer(buf, (int)n, der, sizeof der, CERT_TYPE);
        d = der;
    }
    if (dn <= 0 || d[0] != 0x30) { /* an X.509 certificate is a DER SEQUENCE */
        say("--cert %s: not a certificate (PEM or DER)", path);
        return EXIT_FAIL;
    }
    store_cert_digest(d, (size_t)dn, out);
    return 0;
}

static int device_add(const char *data_dir, int argc, char **argv)
{
    const char *pos[1], *org = NULL, *cert = NULL;
    struct opt opts[] = {{"--org", &org, 0}, {"--data-dir", &data_dir, 0}, {"--cert", &cert, 0}};
    uint8_t cert_digest[STORE_DIGEST_LEN];
    int npos = 0, help = 0, rc;
    uint32_t org_id = 0, dev_id = 0;
    char org_name[STORE_NAME_MAX + 1], token[STORE_TOKEN_MAX];
    struct store *s = NULL;

    rc = parse_args("device add", argc, argv, 2, opts, 3, pos, 1, &npos, &help);
    if (rc != 0) return rc;
    if (help) {
        fputs("usage: sluice device add --org ORG NAME [--cert FILE]\n"
              "Creates a device and prints its token: the only time it is shown.\n"
              "--cert FILE: the device may also authenticate over TLS with this client\n"
              "certificate (PEM or DER), when sluiced runs with --tls-client-ca.\n",
              stdout);
        return finish_stdout();
    }
    if (!org || npos != 1) {
        say("usage: sluice device add --org ORG NAME [--cert FILE]");
        return EXIT_USAGE;
    }
    if (cert && (rc = cert_file_digest(cert, cert_digest)) != 0) return rc;
    /* No create here: a device needs an existing org, so there is nothing
     * useful to create, and a mistyped --data-dir should not leave a store. */
    rc = open_store(data_dir, 0, &s);
    if (rc != 0) {
        /* said already; with no store there is certainly no such org */
        return rc;
    }
    if ((rc = resolve_org(s, org, &org_id, org_name)) != 0) goto done;
    rc = store_device_add(s, org_id, pos[0], token, &dev_id);
    if (rc == -EEXIST) {
        say("device '%s' already exists in org '%s'", pos[0], org_name);
        rc = EXIT_FAIL;
    } else if (rc == -EINVAL) {
        say("invalid device name '%s': use %s", SHOWN(pos[0]), name_rule);
        rc = EXIT_USAGE;
    } else if (rc == -ENOENT) {
        say("no such org '%s'", SHOWN(org)); /* deleted between lookup and add */
        rc = EXIT_FAIL;
    } else if (rc != 0) {
        say("adding device '%s' failed: %s", pos[0], store_last_error(s));
        rc = EXIT_FAIL;
    } else if (cert && (rc = store_device_add_cert(s, dev_id, cert_digest)) != 0) {
        say("device '%s' (id %u) added, but its certificate was not registered: %s", pos[0],
            dev_id, store_last_error(s));
        explicit_bzero(token, sizeof(token));
        rc = EXIT_FAIL;
    } else {
        printf("%s\n", token);
        rc = finish_stdout();
        explicit_bzero(token, sizeof(token));
        if (cert && rc == 0) say("client certificate %s registered for device '%s'", cert, pos[0]);
        if (rc == 0)
            say("device '%s' (id %u) added to org '%s'; its token is shown only this once", pos[0],
                dev_id, org_name);
        else
            say("device '%s' (id %u) exists but its token was lost: rotate it", pos[0], dev_id);
    }
done:
    store_close(s);
    return rc;
}

static int device_list(const char *data_dir, int argc, char **argv)
{
    const char *pos[1], *org = NULL;
    struct opt opts[] = {{"--org", &org, 0}, {"--data-dir", &data_dir, 0}};
    int npos = 0, help = 0, rc;
    uint32_t org_id = 0;
    struct store *s = NULL;
    struct rows r = {.name_w = 4, .id_w = 2};

    rc = parse_args("device list", argc, argv, 2, opts, 2, pos, 0, &npos, &help);
    if (rc != 0) return rc;
    if (help) {
        fputs("usage: sluice device list --org ORG\n"
              "Lists an org's devices: id, name, state, creation time (UTC).\n",
              stdout);
        return finish_stdout();
    }
    if (!org) {
        say("usage: sluice device list --org ORG");
        return EXIT_USAGE;
    }
    if ((rc = open_store(data_dir, 0, &s)) != 0) return rc;
    if ((rc = resolve_org(s, org, &org_id, NULL)) != 0) goto done;
    rc = store_device_list(s, org_id, device_row, &r);
    if (rc != 0) {
        if (rc == -ENOENT)
            say("no such org '%s'", SHOWN(org));
        else
            say("listing devices failed: %s",
                rc == -ENOMEM ? strerror(ENOMEM) : store_last_error(s));
        rc = EXIT_FAIL;
        goto done;
    }
    printf("%-*s  %-*s  %-7s  %s\n", (int)r.id_w, "ID", (int)r.name_w, "NAME", "STATE", "CREATED");
    for (size_t i = 0; i < r.n; i++) {
        char when[32];
        const char *state = r.v[i].state == STORE_DEVICE_ACTIVE    ? "active"
                            : r.v[i].state == STORE_DEVICE_REVOKED ? "revoked"
                                                                   : "unknown";
        format_time(r.v[i].created_ns, when);
        printf("%-*u  %-*s  %-7s  %s\n", (int)r.id_w, r.v[i].id, (int)r.name_w, r.v[i].name, state,
               when);
    }
    rc = finish_stdout();
done:
    free(r.v);
    store_close(s);
    return rc;
}

/* ---- dispatch ---- */

struct command {
    const char *group, *sub; /* sub NULL: the group is the whole command */
    int (*run)(const char *data_dir, int argc, char **argv); /* NULL: not implemented yet */
};

static const struct command commands[] = {
    {"org", "add", org_add},       {"org", "list", org_list},       {"org", "set", NULL},
    {"device", "add", device_add}, {"device", "list", device_list}, {"token", "rotate", NULL},
    {"token", "revoke", NULL},     {"user", "add", NULL},           {"user", "revoke", NULL},
    {"user", "passwd", NULL},      {"audit", NULL, NULL},           {"usage", NULL, NULL},
};

static int dispatch(const char *data_dir, int argc, char **argv)
{
    const char *group = argv[0], *sub = argc > 1 ? argv[1] : NULL;
    int group_known = 0;
    char subs[64] = "";

    /* log has its own file and its own subcommand parsing */
    if (strcmp(group, "log") == 0) return cmd_log(data_dir, argc, argv);
    if (strcmp(group, "help") == 0) {
        fputs(usage_text, stdout);
        return finish_stdout();
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        const struct command *c = &commands[i];
        if (strcmp(c->group, group) != 0) continue;
        group_known = 1;
        if (c->sub && (!sub || strcmp(c->sub, sub) != 0)) {
            size_t len = strlen(subs);
            snprintf(subs + len, sizeof(subs) - len, "%s%s", len ? ", " : "", c->sub);
            continue;
        }
        if (!c->run) {
            if (c->sub)
                say("'%s %s' is not implemented yet", c->group, c->sub);
            else
                say("'%s' is not implemented yet", c->group);
            return EXIT_USAGE;
        }
        return c->run(data_dir, argc, argv);
    }
    if (!group_known)
        say("unknown command '%s' (see 'sluice --help')", SHOWN(group));
    else if (!sub)
        say("'%s' needs a subcommand: %s", group, subs);
    else
        say("unknown command '%s %s' (%s takes: %s)", group, SHOWN(sub), group, subs);
    return EXIT_USAGE;
}

int main(int argc, char **argv)
{
    const char *data_dir = getenv("SLUICE_DATA_DIR");
    int i;

    if (!data_dir || !*data_dir) data_dir = "./data";
    /* Global options come before the command; everything after it belongs to
     * the command (so `log` can define options of its own). */
    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(usage_text, stdout);
            return finish_stdout();
        }
        if (strcmp(a, "--version") == 0) {
            printf("sluice %s\n", SLUICE_VERSION);
            return finish_stdout();
        }
        if (strcmp(a, "--data-dir") == 0 || strncmp(a, "--data-dir=", 11) == 0) {
            const char *v = a[10] == '=' ? a + 11 : (i + 1 < argc ? argv[++i] : NULL);
            if (!v || !*v) {
                say("option '--data-dir' needs a value");
                return EXIT_USAGE;
            }
            data_dir = v;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        say("unknown option '%s' (see 'sluice --help')", SHOWN(a));
        return EXIT_USAGE;
    }
    if (i >= argc) {
        say("no command given (see 'sluice --help')");
        return EXIT_USAGE;
    }
    return dispatch(data_dir, argc - i, argv + i);
}
