/* engine/iojob.c — the storage helper thread; see iojob.h. */
#include "engine/iojob.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/worker.h"

void iojob_log_direct(struct sluice_engine *e, struct log_writer *lw)
{
    /* only where every batch is synced: under interval/never the page cache
     * is the point (it absorbs the many small writes; measured at -c64, direct
     * writes of ~5 readings each cost 30 % more CPU per request) */
    bool syncs = e->cfg.fsync == SLUICE_FSYNC_BATCH || e->cfg.fsync == SLUICE_FSYNC_ALWAYS;
    if (!e->cfg.direct_io || !syncs) return;
    int rc = log_writer_direct(lw);
    if (rc)
        fprintf(stderr, "sluiced: %s: no O_DIRECT (%s); writing it through the page cache\n",
                lw->path, strerror(-rc));
}

/* Until storage has its own: close the descriptors of an idle writer, first
 * cutting the zeros written ahead (durably), keeping its position. */
static int writer_suspend(struct log_writer *lw)
{
    int rc = 0;
    if (lw->alloc > lw->end) {
        if (ftruncate(lw->fd, (off_t)lw->end)) rc = -errno;
        if (!rc) lw->alloc = lw->end;
    }
    if (!rc && fdatasync(lw->fd)) rc = -errno;
    if (rc) return rc;
    close(lw->fd);
    lw->fd = -1;
    if (lw->dfd >= 0) close(lw->dfd);
    lw->dfd = -1;
    free(lw->stage);
    lw->stage = NULL;
    lw->stage_cap = 0;
    return 0;
}

static int writer_resume(struct sluice_engine *e, struct log_writer *lw, bool direct)
{
    int fd = open(lw->path, O_RDWR | O_CLOEXEC);
    if (fd < 0) return -errno;
    lw->fd = fd;
    if (direct) iojob_log_direct(e, lw);
    return 0;
}

static void run(struct sluice_engine *e, struct iojob *j)
{
    struct log_writer *lw = j->lw;
    j->report[0] = '\0';
    switch (j->kind) {
    case IOJOB_OPEN:
        j->rc = log_writer_open(lw, e->cfg.data_dir, j->org, j->w->id, j->report, sizeof j->report);
        if (!j->rc) iojob_log_direct(e, lw);
        break;
    case IOJOB_RESUME:
        j->rc = writer_resume(e, lw, j->was_direct);
        break;
    case IOJOB_ROLL:
        /* --fsync interval: the old segment's last writes must be durable
         * before it is sealed; a failure here is the background sync's */
        if (j->sync_first && fdatasync(lw->fd))
            snprintf(j->report, sizeof j->report, "fdatasync of %s failed: %s", lw->path,
                     strerror(errno));
        j->rc = log_writer_roll(lw);
        break;
    case IOJOB_RESERVE:
        j->rc = log_writer_reserve(lw, j->need, j->cap);
        break;
    case IOJOB_TRUNCATE:
        j->rc = log_writer_cut(lw);
        break;
    case IOJOB_SUSPEND:
        j->rc = writer_suspend(lw);
        break;
    case IOJOB_CALL:
        j->call(e, j);
        break;
    }
}

void iojob_submit(struct sluice_engine *e, struct iojob *j)
{
    j->next = NULL;
    pthread_mutex_lock(&e->io_lock);
    if (e->io_tail)
        e->io_tail->next = j;
    else
        e->io_head = j;
    e->io_tail = j;
    pthread_cond_signal(&e->io_cond);
    pthread_mutex_unlock(&e->io_lock);
}

struct iojob *iojob_take_done(struct worker *w)
{
    struct sluice_engine *e = w->eng;
    pthread_mutex_lock(&e->io_lock);
    struct iojob *j = w->jobs_done, *rev = NULL;
    w->jobs_done = NULL;
    pthread_mutex_unlock(&e->io_lock);
    while (j) { /* pushed newest first: hand them back in order */
        struct iojob *next = j->next;
        j->next = rev;
        rev = j;
        j = next;
    }
    return rev;
}

static void *iojob_main(void *arg)
{
    struct sluice_engine *e = arg;
    pthread_setname_np(pthread_self(), "sluice-io");
    pthread_mutex_lock(&e->io_lock);
    for (;;) {
        while (!e->io_head && !e->io_stop)
            pthread_cond_wait(&e->io_cond, &e->io_lock);
        struct iojob *j = e->io_head;
        if (!j) break; /* stopping and nothing left */
        e->io_head = j->next;
        if (!e->io_head) e->io_tail = NULL;
        pthread_mutex_unlock(&e->io_lock);
        run(e, j);
        pthread_mutex_lock(&e->io_lock);
        struct worker *w = j->w;
        j->next = w->jobs_done;
        w->jobs_done = j;
        pthread_mutex_unlock(&e->io_lock);
        uint64_t one = 1;
        if (write(w->wake_fd, &one, sizeof one) < 0) {
            /* the counter cannot overflow in practice; the tick picks jobs up too */
        }
        pthread_mutex_lock(&e->io_lock);
    }
    pthread_mutex_unlock(&e->io_lock);
    return NULL;
}

int iojob_start(struct sluice_engine *e)
{
    pthread_mutex_init(&e->io_lock, NULL);
    pthread_cond_init(&e->io_cond, NULL);
    /* the helper must not take the host's signals (sluiced waits for them) */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&e->io_thread, NULL, iojob_main, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) return -rc;
    e->io_started = true;
    return 0;
}

void iojob_stop(struct sluice_engine *e)
{
    if (!e->io_started) return;
    pthread_mutex_lock(&e->io_lock);
    e->io_stop = true;
    pthread_cond_signal(&e->io_cond);
    pthread_mutex_unlock(&e->io_lock);
    pthread_join(e->io_thread, NULL);
    e->io_started = false;
}
