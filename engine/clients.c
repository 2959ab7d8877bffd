/* engine/clients.c — connected MQTT client ids and the takeover mailboxes;
 * see clients.h. */
#include "engine/clients.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#define CLIENTS_BUCKETS 4096u

struct client_entry {
    struct client_entry *next;
    uint32_t org, device;
    struct conn_ref ref;
    uint16_t n;
    char id[]; /* n bytes */
};

int clients_init(struct clients *cl)
{
    memset(cl, 0, sizeof *cl);
    cl->b = calloc(CLIENTS_BUCKETS, sizeof *cl->b);
    if (!cl->b) return -ENOMEM;
    pthread_mutex_init(&cl->lock, NULL);
    cl->ready = true;
    return 0;
}

void clients_free(struct clients *cl)
{
    if (!cl->ready) return;
    for (size_t i = 0; i < CLIENTS_BUCKETS; i++) {
        struct client_entry *c = cl->b[i];
        while (c) {
            struct client_entry *next = c->next;
            free(c);
            c = next;
        }
    }
    free(cl->b);
    pthread_mutex_destroy(&cl->lock);
    cl->ready = false;
}

static size_t bucket(uint32_t org, uint32_t device, const void *id, size_t n)
{
    uint8_t key[8 + CLIENTS_ID_MAX];
    memcpy(key, &org, 4);
    memcpy(key + 4, &device, 4);
    memcpy(key + 8, id, n);
    return (size_t)(XXH3_64bits(key, 8 + n) % CLIENTS_BUCKETS);
}

/* The link pointing at the entry for the key, or at the NULL ending its chain. */
static struct client_entry **find(struct clients *cl, uint32_t org, uint32_t device,
                                  const void *id, size_t n)
{
    struct client_entry **pp = &cl->b[bucket(org, device, id, n)];
    while (*pp && !((*pp)->org == org && (*pp)->device == device && (*pp)->n == n &&
                    memcmp((*pp)->id, id, n) == 0))
        pp = &(*pp)->next;
    return pp;
}

int clients_claim(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id, size_t n,
                  struct conn_ref ref, struct conn_ref *prev)
{
    struct clients *cl = &e->clients;
    if (n > CLIENTS_ID_MAX) return -EINVAL;
    pthread_mutex_lock(&cl->lock);
    struct client_entry **pp = find(cl, org, device, id, n);
    int rc = 0;
    if (*pp) {
        *prev = (*pp)->ref;
        (*pp)->ref = ref;
        rc = 1;
    } else {
        struct client_entry *c = malloc(sizeof *c + n);
        if (!c) {
            rc = -ENOMEM;
        } else {
            *c = (struct client_entry){.org = org, .device = device, .ref = ref, .n = (uint16_t)n};
            memcpy(c->id, id, n);
            *pp = c;
        }
    }
    pthread_mutex_unlock(&cl->lock);
    return rc;
}

void clients_release(struct sluice_engine *e, uint32_t org, uint32_t device, const void *id,
                     size_t n, struct conn_ref ref)
{
    struct clients *cl = &e->clients;
    if (n > CLIENTS_ID_MAX) return;
    pthread_mutex_lock(&cl->lock);
    struct client_entry **pp = find(cl, org, device, id, n);
    struct client_entry *c = *pp;
    if (c && c->ref.worker == ref.worker && c->ref.slot == ref.slot && c->ref.gen == ref.gen) {
        *pp = c->next;
        free(c);
    }
    pthread_mutex_unlock(&cl->lock);
}

void clients_kick(struct sluice_engine *e, struct conn_ref ref)
{
    struct clients *cl = &e->clients;
    if (ref.worker >= e->nworkers) return;
    struct worker *w = &e->workers[ref.worker];
    pthread_mutex_lock(&cl->lock);
    bool queued = false;
    if (w->nkicks == w->kick_cap) {
        uint32_t cap = w->kick_cap ? w->kick_cap * 2 : 16;
        struct conn_ref *p = realloc(w->kicks, cap * sizeof *p);
        if (p) {
            w->kicks = p;
            w->kick_cap = cap;
        }
    }
    if (w->nkicks < w->kick_cap) {
        w->kicks[w->nkicks++] = ref;
        queued = true;
    }
    pthread_mutex_unlock(&cl->lock);
    uint64_t one = 1;
    if (queued && write(w->wake_fd, &one, sizeof one) < 0) {
        /* an eventfd counter does not overflow in practice */
    }
}

size_t clients_take_kicks(struct worker *w, struct conn_ref *out, size_t cap)
{
    struct clients *cl = &w->eng->clients;
    pthread_mutex_lock(&cl->lock);
    size_t n = w->nkicks < cap ? w->nkicks : cap;
    if (n) {
        memcpy(out, w->kicks, n * sizeof *out);
        memmove(w->kicks, w->kicks + n, (w->nkicks - n) * sizeof *out);
        w->nkicks -= (uint32_t)n;
    }
    pthread_mutex_unlock(&cl->lock);
    return n;
}
