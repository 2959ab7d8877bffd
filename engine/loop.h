/* engine/loop.h — a worker thread's event loop (see loop.c). */
#ifndef SLUICE_ENGINE_LOOP_H
#define SLUICE_ENGINE_LOOP_H

#include <stdint.h>

#include "engine/worker.h"

/* The worker thread: sets up its ring, serves until the engine drains and
 * everything is acknowledged, then syncs and closes its logs. arg is the
 * struct worker. */
void *loop_main(void *arg);

/* CLOCK_MONOTONIC in milliseconds. */
uint64_t loop_now_ms(void);

#endif
