#!/usr/bin/env bash
# Initialises a new data dir for `make run`: org "demo" with device "demo-1",
# whose token is printed once with ready-to-paste client lines. An existing data
# dir is left alone (tokens are never stored, so they cannot be shown again).
set -euo pipefail
build=${1:-build}
data=${2:-./data}
cli="$build/sluice"

if [ -e "$data/sluice.mdb" ]; then
    echo "sluice: using existing data dir $data (tokens are shown only when created;" \
         "make a new one with: $cli --data-dir $data device add --org demo NAME)" >&2
    exit 0
fi
"$cli" --data-dir "$data" org add demo >/dev/null
token=$("$cli" --data-dir "$data" device add --org demo demo-1 2>/dev/null)
cat <<MSG

  sluice demo: org 'demo', device 'demo-1'. Its token (shown only this once):

    $token

  Send a reading (HTTP):
    curl -i -H 'X-Auth-Token: $token' -H 'Content-Type: application/json' \\
         -d '{"temp":21.5}' http://127.0.0.1:8080/v1/readings

  Or over MQTT (QoS 1: the PUBACK comes once the reading is on disk):
    mosquitto_pub -h 127.0.0.1 -p 1883 -q 1 -u demo-1 -P '$token' -t readings -m '{"temp":21.5}'

  Or encrypted (sluiced makes a self-signed certificate on its first start):
    curl -i --cacert $data/tls/server.crt -H 'X-Auth-Token: $token' -H 'Content-Type: application/json' \\
         -d '{"temp":21.5}' https://localhost:8443/v1/readings
    mosquitto_pub -h localhost -p 8883 --cafile $data/tls/server.crt -q 1 -u demo-1 -P '$token' \\
         -t readings -m '{"temp":21.5}'

  Or over the compact frame protocol (2 bytes per reading; the token never crosses the wire):
    python3 clients/python/sluice_frame.py --host 127.0.0.1 --port 7000 --token '$token' \\
         --count 10 --payload '{"temp":21.5}'

  Read it back:
    $cli --data-dir $data log cat --org demo

MSG
