/* engine/session_frame.h — the frame protocol's TCP device session (session_frame.c). */
#ifndef SLUICE_ENGINE_SESSION_FRAME_H
#define SLUICE_ENGINE_SESSION_FRAME_H

#include "engine/conn.h"

extern const struct session_ops session_frame_ops;

#endif
