/* engine/engine.c — sluice_engine_*: binds listeners, recovers the logs,
 * starts the storage helper and the workers, and runs the control thread that
 * mirrors the credential store into the auth table and applies retention.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "engine/clients.h"
#include "engine/commit.h"
#include "engine/devseq.h"
#include "engine/iojob.h"
#include "engine/loop.h"
#include "engine/session_http.h"
#include "engine/udp.h"
#include "engine/worker.h"
#include "protocols/tls.h"
#include "storage/log.h"
#include "storage/store.h"

#define CONTROL_POLL_MS    250 /* store generation polling: CLI changes live within 1 s */
#define RETENTION_EVERY_MS 5000
#define SESSIONS_EVERY_MS  1000
#define TICKET_RENEW_MS    (3600u * 1000u)

static const char *const listener_names[LISTENER_KINDS] = {"http",  "admin", "mqtt",   "https",
                                                           "mqtts", "frame", "frames", "udp"};

/* Splits "HOST:PORT" / "[V6]:PORT" and binds a listening socket, with
 * SO_REUSEPORT so every worker can own one on the same port. */
static int listen_on(const char *spec, bool dgram, unsigned port_override, int *fd_out,
                     unsigned *port_out, char *err, size_t errcap)
{
    int type = dgram ? SOCK_DGRAM : SOCK_STREAM;
    char host[SLUICE_ADDR_MAX], port[16];
    const char *colon = strrchr(spec, ':');
    size_t hl = colon ? (size_t)(colon - spec) : 0;
    /* config.c checked flags and INI keys; an embedding host may fill the
     * struct itself */
    if (!colon || hl >= sizeof host || (spec[0] == '[' && (hl < 2 || colon[-1] != ']'))) {
        snprintf(err, errcap, "bad listen address '%s': expected HOST:PORT or [V6]:PORT", spec);
        return SLUICE_EINVAL;
    }
    if (spec[0] == '[') {
        memcpy(host, spec + 1, hl - 2);
        host[hl - 2] = '\0';
    } else {
        memcpy(host, spec, hl);
        host[hl] = '\0';
    }
    snprintf(port, sizeof port, "%u", port_override ? port_override : (unsigned)atoi(colon + 1));
    struct addrinfo hints = {.ai_socktype = type,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST},
                    *ai = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc) {
        snprintf(err, errcap, "bad listen address '%s': %s", spec, gai_strerror(rc));
        return SLUICE_EINVAL;
    }
    int fd = socket(ai->ai_family, type | SOCK_CLOEXEC, 0);
    int one = 1, rcvbuf = 4 << 20;
    /* datagrams: room for a burst while the loop is busy (what does not fit is
     * dropped, and resent by its device) */
    if (fd >= 0 && dgram) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) || (!dgram && listen(fd, 4096))) {
        int e = errno;
        snprintf(err, errcap, "cannot listen on %s: %s", spec, strerror(e));
        if (fd >= 0) close(fd);
        freeaddrinfo(ai);
        return e == EADDRINUSE ? SLUICE_EADDRINUSE : SLUICE_ELISTEN;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    *fd_out = fd;
    return 0;
}

static int write_ports_file(const struct sluice_engine *e, char *err, size_t errcap)
{
    char tmp[SLUICE_PATH_MAX + 8], body[256];
    size_t n = 0;
    n += (size_t)snprintf(body + n, sizeof body - n, "{");
    for (unsigned k = 0; k < LISTENER_KINDS; k++)
        if (e->port[k])
            n += (size_t)snprintf(body + n, sizeof body - n, "%s\"%s\":%u", n > 1 ? "," : "",
                                  listener_names[k], e->port[k]);
    n += (size_t)snprintf(body + n, sizeof body - n, "}\n");
    snprintf(tmp, sizeof tmp, "%s.tmp", e->cfg.ports_file);
    FILE *f = fopen(tmp, "w");
    /* written then renamed, so a reader never sees a half file */
    if (!f || fwrite(body, 1, n, f) != n || fclose(f) || rename(tmp, e->cfg.ports_file)) {
        snprintf(err, errcap, "cannot write ports file %s: %s", e->cfg.ports_file, strerror(errno));
        return SLUICE_EIO;
    }
    return 0;
}

/* SLUICE_FAULT_INJECT="write|sync:ERRNO[:org=N][:after=K][:count=C]": the test
 * seam of the commit path (engine/commit.c). Loudly announced when set. */
/* Whether the block device holding dir says it honours FUA writes
 * (queue/fua 1): a write with RWF_DSYNC then reaches stable media without a
 * flush of the device's whole cache. A partition's queue is its disk's. */
static bool device_has_fua(const char *dir)
{
    struct stat st;
    if (stat(dir, &st)) return false;
    char path[96];
    const char *fmt[] = {"/sys/dev/block/%u:%u/queue/fua", "/sys/dev/block/%u:%u/../queue/fua"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, fmt[i], major(st.st_dev), minor(st.st_dev));
        FILE *f = fopen(path, "re");
        if (!f) continue;
        int c = fgetc(f);
        fclose(f);
        return c == '1';
    }
    return false;
}

static int parse_fault(struct sluice_engine *e, char *err, size_t errcap)
{
    const char *spec = getenv("SLUICE_FAULT_INJECT");
    if (!spec || !*spec) return 0;
    char buf[128];
    snprintf(buf, sizeof buf, "%s", spec);
    struct fault *f = &e->fault;
    char *save = NULL;
    for (char *tok = strtok_r(buf, ":", &save); tok; tok = strtok_r(NULL, ":", &save)) {
        if (!f->op) {
            f->op = !strcmp(tok, "write") ? FAULT_WRITE : !strcmp(tok, "sync") ? FAULT_SYNC : -1;
        } else if (!f->err) {
            f->err = !strcmp(tok, "ENOSPC")   ? ENOSPC
                     : !strcmp(tok, "EIO")    ? EIO
                     : !strcmp(tok, "EDQUOT") ? EDQUOT
                     : !strcmp(tok, "EROFS")  ? EROFS
                     : !strcmp(tok, "EINVAL") ? EINVAL
                                              : atoi(tok);
        } else if (!strncmp(tok, "org=", 4)) {
            f->org = (uint32_t)strtoul(tok + 4, NULL, 10);
        } else if (!strncmp(tok, "after=", 6)) {
            f->after = strtoull(tok + 6, NULL, 10);
        } else if (!strncmp(tok, "count=", 6)) {
            f->count = strtoull(tok + 6, NULL, 10);
        } else {
            f->op = -1;
        }
    }
    if (f->op <= 0 || f->err <= 0) {
        snprintf(err, errcap,
                 "bad SLUICE_FAULT_INJECT '%s': expected write|sync:ERRNO[:org=N][:after=K]"
                 "[:count=C]",
                 spec);
        f->err = 0;
        return SLUICE_EINVAL;
    }
    fprintf(stderr,
            "sluiced: WARNING: fault injection active (SLUICE_FAULT_INJECT=%s), for tests\n", spec);
    return 0;
}

struct numbered {
    bool workers; /* "w<N>" entries (storage's rule); else plain org ids */
    int (*fn)(void *ctx, uint32_t n);
    void *ctx;
};

static int numbered_visit(void *arg, const char *name)
{
    struct numbered *v = arg;
    if (v->workers) {
        unsigned w;
        return log_worker_name(name, &w) ? 0 : v->fn(v->ctx, w);
    }
    char *end;
    if (name[0] < '0' || name[0] > '9') return 0;
    errno = 0;
    unsigned long long id = strtoull(name, &end, 10);
    if (*end || errno || id > UINT32_MAX) return 0;
    return v->fn(v->ctx, (uint32_t)id);
}

/* Calls fn for each org directory of DATA/logs (workers false) or each worker
 * directory of an org (workers true), as storage names them; stops at the first
 * negative return. A missing directory has no entries. */
static int for_each_numbered(const char *dir, bool workers, int (*fn)(void *ctx, uint32_t n),
                             void *ctx)
{
    struct numbered v = {.workers = workers, .fn = fn, .ctx = ctx};
    int rc = log_dir_each(dir, numbered_visit, &v);
    return rc == -ENOENT ? 0 : rc;
}

struct recover_ctx {
    struct sluice_engine *e;
    uint32_t org;
    unsigned logs, cut;
    char *err;
    size_t errcap;
    bool failed; /* err holds why */
};

static int recover_worker_log(void *arg, uint32_t worker)
{
    struct recover_ctx *r = arg;
    struct sluice_engine *e = r->e;
    struct log_writer lw;
    char report[LOG_PATH_MAX + 256];
    int rc = log_writer_open(&lw, e->cfg.data_dir, r->org, worker, report, sizeof report);
    if (rc) {
        char dir[LOG_PATH_MAX];
        log_dir_path(dir, sizeof dir, e->cfg.data_dir, r->org, (int)worker);
        snprintf(r->err, r->errcap, "cannot recover the log in %s: %s", dir, strerror(-rc));
        r->failed = true;
        return -1;
    }
    r->logs++;
    if (report[0]) {
        r->cut++;
        fprintf(stderr, "sluiced: recovery: %s\n", report);
    }
    /* the worker that owns this log keeps it open; logs of workers beyond
     * --threads (a restart with fewer threads) were only recovered */
    if (worker < e->nworkers) {
        iojob_log_direct(e, &lw);
        if (commit_log_adopt(&e->workers[worker], &lw) == 0) return 0;
    }
    log_writer_close(&lw);
    return 0;
}

static int recover_org(void *arg, uint32_t org)
{
    struct recover_ctx *r = arg;
    char dir[LOG_PATH_MAX];
    r->org = org;
    log_dir_path(dir, sizeof dir, r->e->cfg.data_dir, org, -1);
    return for_each_numbered(dir, true, recover_worker_log, r);
}

/* The frame protocol's durable marks live with the readings: each device's
 * highest device_seq among its frame readings in the logs (engine/devseq.h).
 * Every segment is read, so this costs a pass over the logs at start-up. */
struct seq_ctx {
    struct sluice_engine *e;
    uint64_t seen;
};

static int load_org_seqs(void *arg, uint32_t org)
{
    struct seq_ctx *x = arg;
    struct log_cursor *cur;
    struct record r;
    const uint8_t *body;
    int rc = log_cursor_open(x->e->cfg.data_dir, org, &cur);
    if (rc == -ENOENT) return 0;
    if (rc) return rc;
    /* damage is `log verify`'s to report: the walk goes on past it */
    while ((rc = log_cursor_next(cur, &r, &body)) != 0) {
        if (rc < 0 && rc != -EBADMSG) break;
        if (rc < 0) continue;
        if (!r.device_seq || (r.proto != RECORD_PROTO_FRAME && r.proto != RECORD_PROTO_UDP))
            continue;
        x->seen++;
        if ((rc = devseq_seed(&x->e->devseq, r.device, r.device_seq))) break;
    }
    log_cursor_close(cur);
    return rc < 0 ? rc : 0;
}

static int load_device_seqs(struct sluice_engine *e, char *err, size_t errcap)
{
    char dir[LOG_PATH_MAX];
    struct seq_ctx x = {.e = e};
    if (!e->cfg.frame[0] && !e->cfg.frames[0] && !e->cfg.udp[0]) return 0; /* no frame listener */
    snprintf(dir, sizeof dir, "%s/logs", e->cfg.data_dir);
    int rc = for_each_numbered(dir, false, load_org_seqs, &x);
    if (rc < 0) {
        snprintf(err, errcap, "cannot read the frame readings' sequence numbers under %s: %s", dir,
                 strerror(-rc));
        return SLUICE_ESTORE;
    }
    return 0;
}

/* A commit's waiter that is no connection: a kept MQTT session's QoS 2 id,
 * or a frame device's durable mark. */
static void orphan_durable(struct worker *w, uint64_t cookie, int err)
{
    if (cookie & DEVSEQ_TICKET) {
        devseq_orphan_durable(w, cookie, err);
        if (cookie & DEVSEQ_UDP) udp_durable(w, (uint32_t)cookie, err);
    } else
        clients_orphan_durable(w, cookie, err);
}

/* Before serving: every worker log's newest segment is verified and a torn tail
 * cut, so what the daemon acknowledges next extends a verified log. */
static int recover_logs(struct sluice_engine *e, char *err, size_t errcap)
{
    char dir[LOG_PATH_MAX];
    struct recover_ctx r = {.e = e, .err = err, .errcap = errcap};
    snprintf(dir, sizeof dir, "%s/logs", e->cfg.data_dir);
    int rc = for_each_numbered(dir, false, recover_org, &r);
    if (rc < 0 && !r.failed)
        snprintf(err, errcap, "cannot read the logs under %s: %s", dir, strerror(-rc));
    if (rc < 0) return SLUICE_EIO;
    if (r.cut) fprintf(stderr, "sluiced: recovery: %u of %u logs had a tail cut\n", r.cut, r.logs);
    return 0;
}

static void on_retention(void *ctx, const char *path, uint64_t bytes, const char *why)
{
    (void)ctx;
    fprintf(stderr, "sluiced: retention: deleted %s (%llu bytes, %s)\n", path,
            (unsigned long long)bytes, why);
}

static int retain_org(void *arg, uint32_t org)
{
    struct sluice_engine *e = arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    int rc = log_retention_apply(e->cfg.data_dir, org, now, e->cfg.retention_ms * 1000000ull,
                                 e->cfg.retention_bytes, on_retention, NULL);
    if (rc < 0) fprintf(stderr, "sluiced: retention of org %u failed: %s\n", org, strerror(-rc));
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/* A new table is built off the data path and published; the workers pick it
 * up at their next loop turn, and the one it replaced is freed by
 * auth_swap_reclaim once every worker has passed a turn since. */
static void reload_auth(struct sluice_engine *e)
{
    uint64_t gen;
    if (store_generation(e->store, &gen) || gen == e->store_gen) return;
    struct auth_table *t;
    if (auth_table_load(e->store, &t)) {
        fprintf(stderr, "sluiced: reloading tokens failed: %s\n", store_last_error(e->store));
        return;
    }
    if (auth_swap_publish(&e->auth, t)) {
        auth_table_free(t); /* out of memory: the next poll tries again */
        return;
    }
    e->store_gen = gen;
}

static void *control_main(void *arg)
{
    struct sluice_engine *e = arg;
    uint64_t since_tickets = 0;
    unsigned waited = 0, since_retention = RETENTION_EVERY_MS, since_sessions = 0;
    while (!atomic_load(&e->stopping)) {
        sleep_ms(50);
        waited += 50;
        since_retention += 50;
        since_sessions += 50;
        since_tickets += 50;
        /* TLS session tickets: a new context every hour brings new ticket keys
         * (wolfSSL makes them with the context), so a stolen key opens at most
         * an hour of tickets; tickets from before resume no more (one full
         * handshake per client per hour) */
        if ((e->cfg.https[0] || e->cfg.mqtts[0] || e->cfg.frames[0]) &&
            since_tickets >= TICKET_RENEW_MS) {
            char why[600];
            since_tickets = 0;
            if (sluice_engine_reload_tls(e, why, sizeof why))
                fprintf(stderr,
                        "sluiced: hourly TLS renewal (new ticket keys) failed: %s; the "
                        "current context stays\n",
                        why);
        }
        /* kept MQTT sessions: changes no acknowledgement waits for (expiry
         * times of ended connections) are written within a second; expired
         * ones are forgotten */
        if (since_sessions >= SESSIONS_EVERY_MS) {
            since_sessions = 0;
            clients_expire(e);
            clients_write(e);
        }
        if (waited >= CONTROL_POLL_MS) {
            waited = 0;
            auth_swap_reclaim(&e->auth);
            reload_auth(e);
        }
        /* retention deletes only sealed segments, which no worker writes: it
         * runs here, off the data path, with no coordination needed */
        if (since_retention >= RETENTION_EVERY_MS &&
            (e->cfg.retention_ms || e->cfg.retention_bytes)) {
            char dir[LOG_PATH_MAX];
            since_retention = 0;
            snprintf(dir, sizeof dir, "%s/logs", e->cfg.data_dir);
            for_each_numbered(dir, false, retain_org, e);
        }
    }
    return NULL;
}

/* Starts an engine thread with every signal blocked, whatever the host's mask:
 * the host's signals go to the host's threads (sluiced takes them in main with
 * sigtimedwait), never to a worker in the middle of its loop. Returns 0 or a
 * positive pthread error. */
static int spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* Stops and joins the first n workers (start-up failed after they began). */
static void stop_started(struct sluice_engine *e, unsigned n)
{
    sluice_engine_stop(e);
    for (unsigned j = 0; j < n; j++)
        pthread_join(e->workers[j].thread, NULL);
}

static void engine_free(struct sluice_engine *e)
{
    if (!e) return;
    iojob_stop(e); /* after the workers: they wait for their jobs before exiting */
    for (unsigned i = 0; e->workers && i < e->nworkers; i++) {
        struct worker *w = &e->workers[i];
        if (!w->eng) continue; /* start-up failed before this worker was set up */
        for (unsigned k = 0; k < LISTENER_KINDS; k++)
            if (w->listen_fd[k] >= 0) close(w->listen_fd[k]);
        commit_close_all(w); /* logs adopted at recovery by a worker that never ran */
        session_http_worker_free(w);
        if (w->wake_fd >= 0) close(w->wake_fd);
        if (w->reserve_fd >= 0) close(w->reserve_fd);
        free(w->conns);
        free(w->authrl);
        free(w->kicks);
        free(w->swaits);
        tls_ctx_free(w->tls);
        tls_ctx_free(atomic_exchange(&w->tls_next, NULL));
    }
    free(e->workers);
    /* the kept MQTT sessions as the workers left them (expiry times of the
     * connections that ended last) */
    if (e->clients.ready && e->store) clients_write(e);
    clients_free(&e->clients);
    devseq_free(&e->devseq);
    udp_mail_free(e);
    if (e->auth_ready) auth_swap_destroy(&e->auth); /* every worker has been joined */
    if (e->store) store_close(e->store);
    tls_ctx_free(e->tls);
    free(e);
}

/* The https / mqtts listeners' certificate: --tls-cert/--tls-key, or on a
 * first start without them a self-signed one generated into DATA/tls/ (said
 * in one warning line). A bad path or a key that does not match: one line,
 * SLUICE_EINVAL (sluiced exits 2). */
static int tls_setup(struct sluice_engine *e, char *err, size_t errcap)
{
    const sluice_config *cfg = &e->cfg;
    char cert[SLUICE_PATH_MAX + 32], key[SLUICE_PATH_MAX + 32], why[512];
    bool given = cfg->tls_cert[0] || cfg->tls_key[0];
    if (given && !(cfg->tls_cert[0] && cfg->tls_key[0])) {
        snprintf(err, errcap, "--tls-cert and --tls-key go together (only %s was given)",
                 cfg->tls_cert[0] ? "--tls-cert" : "--tls-key");
        return SLUICE_EINVAL;
    }
    if (given) {
        snprintf(cert, sizeof cert, "%s", cfg->tls_cert);
        snprintf(key, sizeof key, "%s", cfg->tls_key);
    } else {
        snprintf(cert, sizeof cert, "%s/tls/server.crt", cfg->data_dir);
        snprintf(key, sizeof key, "%s/tls/server.key", cfg->data_dir);
        if (access(cert, F_OK) && access(key, F_OK)) {
            char dir[SLUICE_PATH_MAX + 8], host[256] = "";
            snprintf(dir, sizeof dir, "%s/tls", cfg->data_dir);
            if (mkdir(dir, 0700) && errno != EEXIST) {
                snprintf(err, errcap, "cannot create %s: %s", dir, strerror(errno));
                return SLUICE_EIO;
            }
            gethostname(host, sizeof host - 1);
            if (tls_make_self_signed(cert, key, host, why, sizeof why)) {
                snprintf(err, errcap, "%s", why);
                return SLUICE_EIO;
            }
            fprintf(stderr,
                    "sluiced: warning: no --tls-cert given: generated a self-signed certificate "
                    "for localhost, 127.0.0.1, ::1%s%s in %s (clients: --cacert %s)\n",
                    host[0] ? " and " : "", host, dir, cert);
        }
    }
    if (tls_ctx_new(&e->tls, cert, key, why, sizeof why) ||
        (cfg->tls_client_ca[0] && tls_ctx_client_ca(e->tls, cfg->tls_client_ca, why, sizeof why))) {
        snprintf(err, errcap, "%s", why);
        return SLUICE_EINVAL;
    }
    snprintf(e->tls_cert, sizeof e->tls_cert, "%s", cert);
    snprintf(e->tls_key, sizeof e->tls_key, "%s", key);
    for (unsigned i = 0; i < e->nworkers; i++)
        e->workers[i].tls = tls_ctx_ref(e->tls);
    return 0;
}

static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;
static int reload_tls(sluice_engine *e, char *err, size_t errcap);

int sluice_engine_reload_tls(sluice_engine *e, char *err, size_t errcap)
{
    /* SIGHUP (the host's thread) and the hourly renewal (the control thread) */
    pthread_mutex_lock(&reload_lock);
    int rc = reload_tls(e, err, errcap);
    pthread_mutex_unlock(&reload_lock);
    return rc;
}

static int reload_tls(sluice_engine *e, char *err, size_t errcap)
{
    if (!e->tls) {
        snprintf(err, errcap, "no TLS listener is on: nothing to reload");
        return SLUICE_EINVAL;
    }
    struct tls_ctx *n;
    char why[512];
    if (tls_ctx_new(&n, e->tls_cert, e->tls_key, why, sizeof why)) {
        snprintf(err, errcap, "%s", why);
        return SLUICE_EINVAL;
    }
    if (e->cfg.tls_client_ca[0] && tls_ctx_client_ca(n, e->cfg.tls_client_ca, why, sizeof why)) {
        tls_ctx_free(n);
        snprintf(err, errcap, "%s", why);
        return SLUICE_EINVAL;
    }
    /* each worker swaps its own reference at its next wake: no lock, and no
     * context is freed while a worker may still be making a connection of it */
    uint64_t one = 1;
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct worker *w = &e->workers[i];
        tls_ctx_free(atomic_exchange(&w->tls_next, tls_ctx_ref(n)));
        if (w->wake_fd >= 0 && write(w->wake_fd, &one, sizeof one) < 0) {
            /* the counter cannot overflow; the next wake picks it up */
        }
    }
    tls_ctx_free(e->tls);
    e->tls = n;
    return 0;
}

/* Descriptors are shared out once, at start: the soft open-files limit is
 * raised to the hard one (what nginx's worker_rlimit_nofile does by hand); a
 * reserve stays for the engine itself (listeners, rings, LMDB, eventfds), an
 * eighth goes to org logs (two each with direct I/O; idle ones are closed
 * past that), the rest to connections. --max-connections, when given, wins.
 * Said once when the limit is what bounds connections. */
static void share_descriptors(struct sluice_engine *e, unsigned *conns, unsigned *logs)
{
    const unsigned dflt = 65536;
    struct rlimit rl;
    *conns = e->cfg.max_connections ? e->cfg.max_connections : dflt;
    *logs = 4096;
    if (getrlimit(RLIMIT_NOFILE, &rl)) return;
    if (rl.rlim_cur < rl.rlim_max) {
        struct rlimit up = rl;
        up.rlim_cur = rl.rlim_max > (1u << 20) ? (1u << 20) : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &up) == 0) rl = up;
    }
    if (rl.rlim_cur == RLIM_INFINITY) return;
    uint64_t limit = rl.rlim_cur, reserve = 64 + 8ull * e->nworkers;
    uint64_t avail = limit > reserve + 16 ? limit - reserve : 16;
    uint64_t log_fds = avail / 8;
    uint64_t per_logs = log_fds / 2 / e->nworkers;
    *logs = per_logs < 4 ? 4 : per_logs > 4096 ? 4096 : (unsigned)per_logs;
    uint64_t per_conns = (avail - log_fds) / e->nworkers;
    if (per_conns < 1) per_conns = 1;
    if (!e->cfg.max_connections) {
        *conns = per_conns < dflt ? (unsigned)per_conns : dflt;
        if (per_conns < dflt)
            fprintf(stderr,
                    "sluiced: open files limit %llu: at most %u connections and %u open org logs "
                    "per worker (--max-connections sets the first; raise the limit with ulimit "
                    "-n or LimitNOFILE=)\n",
                    (unsigned long long)limit, *conns, *logs);
    } else if ((uint64_t)e->cfg.max_connections * e->nworkers > avail - log_fds) {
        fprintf(stderr,
                "sluiced: --max-connections %u x %u workers is more than the open files limit "
                "%llu allows: accepting pauses whenever descriptors run out\n",
                e->cfg.max_connections, e->nworkers, (unsigned long long)limit);
    }
}

int sluice_engine_start(const sluice_config *cfg, sluice_engine **out, char *err, size_t errcap)
{
    int rc;
    struct sluice_engine *e = calloc(1, sizeof *e);
    if (!e) return SLUICE_ENOMEM;
    e->cfg = *cfg;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    e->nworkers = cfg->threads > 0 ? (unsigned)cfg->threads : (unsigned)(ncpu > 0 ? ncpu : 1);

    /* io_uring may be disabled by sysctl or a container's seccomp profile: say so
     * plainly rather than failing later in a worker */
    struct io_uring probe;
    rc = io_uring_queue_init(2, &probe, 0);
    if (rc) {
        snprintf(err, errcap,
                 "io_uring is not available (%s): enable it with 'sysctl "
                 "kernel.io_uring_disabled=0' or a seccomp profile that allows io_uring_setup",
                 strerror(-rc));
        rc = SLUICE_ENOURING;
        goto fail;
    }
    io_uring_queue_exit(&probe);

    if (cfg->max_request_memory < cfg->max_body) {
        snprintf(err, errcap,
                 "--max-request-memory (%llu bytes) must be at least --max-body (%llu bytes): a "
                 "largest body could never be held",
                 (unsigned long long)cfg->max_request_memory, (unsigned long long)cfg->max_body);
        rc = SLUICE_EINVAL;
        goto fail;
    }
    if (mkdir(cfg->data_dir, 0750) && errno != EEXIST) {
        snprintf(err, errcap, "cannot create data dir %s: %s", cfg->data_dir, strerror(errno));
        rc = SLUICE_EIO;
        goto fail;
    }
    rc = store_open(&e->store, cfg->data_dir, 1);
    if (rc) {
        snprintf(err, errcap, "cannot open the store in %s: %s", cfg->data_dir,
                 e->store ? store_last_error(e->store) : strerror(-rc));
        rc = SLUICE_ESTORE;
        goto fail;
    }
    struct auth_table *t;
    if (store_generation(e->store, &e->store_gen) || auth_table_load(e->store, &t)) {
        snprintf(err, errcap, "cannot load tokens: %s", store_last_error(e->store));
        rc = SLUICE_ESTORE;
        goto fail;
    }
    if (auth_swap_init(&e->auth, e->nworkers, t)) {
        auth_table_free(t);
        rc = SLUICE_ENOMEM;
        goto fail;
    }
    e->auth_ready = true;

    e->workers = calloc(e->nworkers, sizeof *e->workers);
    if (!e->workers || clients_init(&e->clients) || devseq_init(&e->devseq) ||
        (cfg->udp[0] && udp_mail_init(e))) {
        rc = SLUICE_ENOMEM;
        goto fail;
    }
    rc = clients_load(e);
    if (rc < 0) {
        snprintf(err, errcap, "cannot load the kept MQTT sessions: %s", store_last_error(e->store));
        rc = SLUICE_ESTORE;
        goto fail;
    }
    rc = 0;
    unsigned conns_per_worker, logs_per_worker;
    share_descriptors(e, &conns_per_worker, &logs_per_worker);
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct worker *w = &e->workers[i];
        w->eng = e;
        w->id = i;
        w->auth_reader = auth_swap_reader(&e->auth, i);
        w->orphan_durable = orphan_durable;
        for (unsigned k = 0; k < LISTENER_KINDS; k++)
            w->listen_fd[k] = -1;
        /* blocking: the ring waits on it with a read (a non-blocking fd would
         * make that read fail with EAGAIN instead) */
        w->wake_fd = eventfd(0, EFD_CLOEXEC);
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        w->logs_cap = logs_per_worker;
        w->authrl = malloc(sizeof *w->authrl);
        if (!w->authrl) {
            rc = SLUICE_ENOMEM;
            goto fail;
        }
        ratelimit_init(w->authrl, cfg->auth_fail_rate, 2 * cfg->auth_fail_rate);
        w->conn_cap = conns_per_worker;
        /* calloc of a large array is lazily backed: untouched slots cost nothing */
        w->conns = calloc(w->conn_cap, sizeof *w->conns);
        if (!w->conns) {
            rc = SLUICE_ENOMEM;
            goto fail;
        }
    }
    if ((rc = parse_fault(e, err, errcap))) goto fail;
    e->dsync = cfg->dsync == SLUICE_DSYNC_ON ||
               (cfg->dsync == SLUICE_DSYNC_AUTO && device_has_fua(cfg->data_dir));
    if (e->dsync && (cfg->fsync == SLUICE_FSYNC_BATCH || cfg->fsync == SLUICE_FSYNC_ALWAYS))
        fprintf(stderr, "sluiced: log batches are made durable by RWF_DSYNC writes (%s)\n",
                cfg->dsync == SLUICE_DSYNC_ON ? "--dsync on" : "the data dir's device has FUA");

    /* every worker gets its own SO_REUSEPORT socket on the HTTP port; the admin
     * listener is served by worker 0 alone */
    const char *specs[LISTENER_KINDS] = {cfg->http,  cfg->admin, cfg->mqtt,   cfg->https,
                                         cfg->mqtts, cfg->frame, cfg->frames, cfg->udp};
    if ((cfg->https[0] || cfg->mqtts[0] || cfg->frames[0]) && (rc = tls_setup(e, err, errcap)))
        goto fail;
    for (unsigned k = 0; k < LISTENER_KINDS; k++) {
        if (!specs[k][0]) continue;
        /* the admin listener and the UDP socket are worker 0's alone */
        unsigned n = k == LISTENER_ADMIN || k == LISTENER_UDP ? 1 : e->nworkers;
        for (unsigned i = 0; i < n; i++) {
            rc = listen_on(specs[k], k == LISTENER_UDP, e->port[k], &e->workers[i].listen_fd[k],
                           &e->port[k], err, errcap);
            if (rc) goto fail;
        }
        snprintf(e->addr[k], sizeof e->addr[k], "%.*s:%u", (int)(strrchr(specs[k], ':') - specs[k]),
                 specs[k], e->port[k]);
    }
    /* bound (a port in use fails fast) but not yet accepting: recover first */
    if ((rc = recover_logs(e, err, errcap))) goto fail;
    if ((rc = load_device_seqs(e, err, errcap))) goto fail;
    if (cfg->ports_file[0] && (rc = write_ports_file(e, err, errcap))) goto fail;

    if ((rc = iojob_start(e))) {
        snprintf(err, errcap, "cannot start the storage helper thread: %s", strerror(-rc));
        rc = SLUICE_ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < e->nworkers; i++) {
        int prc = spawn(&e->workers[i].thread, loop_main, &e->workers[i]);
        if (prc) {
            /* the threads already started wait for the rest: stop and join them */
            while (atomic_load(&e->ready_workers) < i)
                sleep_ms(1);
            stop_started(e, i);
            snprintf(err, errcap, "cannot start worker thread %u of %u: %s", i + 1, e->nworkers,
                     strerror(prc));
            rc = SLUICE_ENOMEM;
            goto fail;
        }
    }
    while (atomic_load(&e->ready_workers) < e->nworkers)
        sleep_ms(1);
    for (unsigned i = 0; i < e->nworkers; i++) {
        if (e->workers[i].error) {
            rc = e->workers[i].error;
            snprintf(err, errcap, "a worker failed to start: %s", sluice_strerror(rc));
            stop_started(e, e->nworkers);
            goto fail;
        }
    }
    /* without the control thread revocations would never reach the workers:
     * refuse to run rather than serve stale credentials */
    int prc = spawn(&e->control, control_main, e);
    if (prc) {
        snprintf(err, errcap, "cannot start the control thread: %s", strerror(prc));
        stop_started(e, e->nworkers);
        rc = SLUICE_ENOMEM;
        goto fail;
    }
    e->control_started = true;
    *out = e;
    return 0;
fail:
    engine_free(e);
    return rc;
}

unsigned sluice_engine_port(const sluice_engine *e, const char *listener, char *addr)
{
    for (unsigned k = 0; k < LISTENER_KINDS; k++) {
        if (strcmp(listener, listener_names[k])) continue;
        if (addr) snprintf(addr, SLUICE_ADDR_MAX, "%s", e->addr[k]);
        return e->port[k];
    }
    return 0;
}

void sluice_engine_stop(sluice_engine *e)
{
    atomic_store(&e->stopping, true);
    /* wake every worker's ring now; write(2) on an eventfd is signal-safe */
    uint64_t one = 1;
    for (unsigned i = 0; i < e->nworkers; i++)
        if (e->workers[i].wake_fd >= 0 && write(e->workers[i].wake_fd, &one, sizeof one) < 0) {
            /* the tick notices the flag within 100 ms all the same */
        }
}

bool sluice_engine_stopping(const sluice_engine *e)
{
    return atomic_load_explicit(&e->stopping, memory_order_acquire);
}

int sluice_engine_wait(sluice_engine *e)
{
    int rc = 0;
    for (unsigned i = 0; i < e->nworkers; i++) {
        pthread_join(e->workers[i].thread, NULL);
        if (!rc) rc = e->workers[i].error;
    }
    if (e->control_started) pthread_join(e->control, NULL);
    engine_free(e);
    return rc;
}
