-- wrk script: POST one 40-byte JSON reading with the token from $SLUICE_TOKEN.
wrk.method = "POST"
wrk.body = '{"temp":21.5,"hum":40.25,"ts":1764000000}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Auth-Token"] = os.getenv("SLUICE_TOKEN") or "missing"
