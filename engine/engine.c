/* engine/engine.c — sluice_engine_*: binds listeners, starts the workers, and
 * runs the control thread that mirrors the credential store into the auth table.
 */
#include "engine/engine.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#define CONTROL_POLL_MS 250 /* store generation polling: CLI changes live within 1 s */

static const char *const listener_names[LISTENER_KINDS] = {"http", "admin"};

/* Splits "HOST:PORT" / "[V6]:PORT" and binds a listening socket, with
 * SO_REUSEPORT so every worker can own one on the same port. */
static int listen_on(const char *spec, unsigned port_override, int *fd_out, unsigned *port_out,
                     char *err, size_t errcap)
{
    char host[SLUICE_ADDR_MAX], port[16];
    const char *colon = strrchr(spec, ':');
    size_t hl = (size_t)(colon - spec);
    if (spec[0] == '[') {
        memcpy(host, spec + 1, hl - 2);
        host[hl - 2] = '\0';
    } else {
        memcpy(host, spec, hl);
        host[hl] = '\0';
    }
    snprintf(port, sizeof port, "%u", port_override ? port_override : (unsigned)atoi(colon + 1));
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST},
                    *ai = NULL;
    int rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &ai);
    if (rc) {
        snprintf(err, errcap, "bad listen address '%s': %s", spec, gai_strerror(rc));
        return SLUICE_EINVAL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, 4096)) {
        int e = errno;
        snprintf(err, errcap, "cannot listen on %s: %s", spec, strerror(e));
        if (fd >= 0)
            close(fd);
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
        snprintf(err, errcap, "cannot write ports file %s: %s", e->cfg.ports_file,
                 strerror(errno));
        return SLUICE_EIO;
    }
    return 0;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/* Frees the retired auth table once every worker has observed the epoch that
 * replaced it (each has passed a loop turn since, so none can still read it). */
static void reclaim(struct sluice_engine *e, bool force)
{
    if (!e->retired)
        return;
    for (unsigned i = 0; i < e->nworkers && !force; i++)
        if (atomic_load_explicit(&e->workers[i].observed_epoch, memory_order_acquire) <
            e->retired_epoch)
            return;
    auth_table_free(e->retired);
    e->retired = NULL;
}

static void reload_auth(struct sluice_engine *e)
{
    uint64_t gen;
    if (store_generation(e->store, &gen) || gen == e->store_gen)
        return;
    if (e->retired)
        return; /* previous swap not yet reclaimed: try again next poll */
    struct auth_table *t;
    if (auth_table_load(e->store, &t)) {
        fprintf(stderr, "sluiced: reloading tokens failed: %s\n", store_last_error(e->store));
        return;
    }
    e->store_gen = gen;
    e->retired = (struct auth_table *)atomic_exchange_explicit(&e->auth, t, memory_order_acq_rel);
    e->retired_epoch = atomic_fetch_add_explicit(&e->auth_epoch, 1, memory_order_acq_rel) + 1;
}

static void *control_main(void *arg)
{
    struct sluice_engine *e = arg;
    unsigned waited = 0;
    while (!atomic_load(&e->stopping)) {
        sleep_ms(50);
        waited += 50;
        if (waited >= CONTROL_POLL_MS) {
            waited = 0;
            reclaim(e, false);
            reload_auth(e);
        }
    }
    return NULL;
}

static void engine_free(struct sluice_engine *e)
{
    if (!e)
        return;
    for (unsigned i = 0; e->workers && i < e->nworkers; i++) {
        struct worker *w = &e->workers[i];
        for (unsigned k = 0; k < LISTENER_KINDS; k++)
            if (w->listen_fd[k] >= 0)
                close(w->listen_fd[k]);
        free(w->conns);
        free(w->scratch);
        if (w->zs) {
            inflateEnd(w->zs);
            free(w->zs);
        }
    }
    free(e->workers);
    reclaim(e, true);
    auth_table_free((struct auth_table *)atomic_load(&e->auth));
    if (e->store)
        store_close(e->store);
    free(e);
}

int sluice_engine_start(const sluice_config *cfg, sluice_engine **out, char *err, size_t errcap)
{
    int rc;
    struct sluice_engine *e = calloc(1, sizeof *e);
    if (!e)
        return SLUICE_ENOMEM;
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
    atomic_store(&e->auth, t);

    e->workers = calloc(e->nworkers, sizeof *e->workers);
    if (!e->workers) {
        rc = SLUICE_ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < e->nworkers; i++) {
        struct worker *w = &e->workers[i];
        w->eng = e;
        w->id = i;
        for (unsigned k = 0; k < LISTENER_KINDS; k++)
            w->listen_fd[k] = -1;
        w->conn_cap = cfg->max_connections;
        /* calloc of a large array is lazily backed: untouched slots cost nothing */
        w->conns = calloc(w->conn_cap, sizeof *w->conns);
        if (!w->conns) {
            rc = SLUICE_ENOMEM;
            goto fail;
        }
    }
    /* every worker gets its own SO_REUSEPORT socket on the HTTP port; the admin
     * listener is served by worker 0 alone */
    const char *specs[LISTENER_KINDS] = {cfg->http, cfg->admin};
    for (unsigned k = 0; k < LISTENER_KINDS; k++) {
        if (!specs[k][0])
            continue;
        unsigned n = k == LISTENER_ADMIN ? 1 : e->nworkers;
        for (unsigned i = 0; i < n; i++) {
            rc = listen_on(specs[k], e->port[k], &e->workers[i].listen_fd[k], &e->port[k], err,
                           errcap);
            if (rc)
                goto fail;
        }
        snprintf(e->addr[k], sizeof e->addr[k], "%.*s:%u",
                 (int)(strrchr(specs[k], ':') - specs[k]), specs[k], e->port[k]);
    }
    if (cfg->ports_file[0] && (rc = write_ports_file(e, err, errcap)))
        goto fail;

    for (unsigned i = 0; i < e->nworkers; i++) {
        if (pthread_create(&e->workers[i].thread, NULL, worker_main, &e->workers[i])) {
            /* threads already started are told to stop and joined */
            atomic_store(&e->stopping, true);
            for (unsigned j = 0; j < i; j++)
                pthread_join(e->workers[j].thread, NULL);
            rc = SLUICE_ENOMEM;
            snprintf(err, errcap, "cannot start worker threads");
            goto fail;
        }
    }
    while (atomic_load(&e->ready_workers) < e->nworkers)
        sleep_ms(1);
    for (unsigned i = 0; i < e->nworkers; i++) {
        if (e->workers[i].error) {
            rc = e->workers[i].error;
            snprintf(err, errcap, "a worker failed to start: %s", sluice_strerror(rc));
            atomic_store(&e->stopping, true);
            for (unsigned j = 0; j < e->nworkers; j++)
                pthread_join(e->workers[j].thread, NULL);
            goto fail;
        }
    }
    pthread_create(&e->control, NULL, control_main, e);
    *out = e;
    return 0;
fail:
    engine_free(e);
    return rc;
}

unsigned sluice_engine_port(const sluice_engine *e, const char *listener, char *addr)
{
    for (unsigned k = 0; k < LISTENER_KINDS; k++) {
        if (strcmp(listener, listener_names[k]))
            continue;
        if (addr)
            snprintf(addr, SLUICE_ADDR_MAX, "%s", e->addr[k]);
        return e->port[k];
    }
    return 0;
}

void sluice_engine_stop(sluice_engine *e)
{
    atomic_store(&e->stopping, true);
}

int sluice_engine_wait(sluice_engine *e)
{
    int rc = 0;
    for (unsigned i = 0; i < e->nworkers; i++) {
        pthread_join(e->workers[i].thread, NULL);
        if (!rc)
            rc = e->workers[i].error;
    }
    pthread_join(e->control, NULL);
    engine_free(e);
    return rc;
}
