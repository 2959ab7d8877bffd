/* engine/session_mqtt.h — the MQTT 3.1.1 / 5.0 device session (session_mqtt.c). */
#ifndef SLUICE_ENGINE_SESSION_MQTT_H
#define SLUICE_ENGINE_SESSION_MQTT_H

#include "engine/conn.h"

extern const struct session_ops session_mqtt_ops;

#endif
