-- wrk script: POST readings with the token from $SLUICE_TOKEN.
-- $SLUICE_READINGS (default 1): 1 sends one 40-byte JSON object; N > 1 sends a
-- JSON array of N such objects (N readings per request).
local reading = '{"temp":21.5,"hum":40.25,"ts":1764000000}'
local n = tonumber(os.getenv("SLUICE_READINGS") or "1")
wrk.method = "POST"
if n <= 1 then
  wrk.body = reading
else
  local parts = {}
  for i = 1, n do parts[i] = reading end
  wrk.body = "[" .. table.concat(parts, ",") .. "]"
end
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Auth-Token"] = os.getenv("SLUICE_TOKEN") or "missing"
