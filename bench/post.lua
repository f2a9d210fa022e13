-- wrk script: POST small messages spread over 64 channels.
-- BENCH_TARGET=nchan posts Nchan's way (text to /pub/<channel>); otherwise Crier's
-- (JSON to /channels/<channel>/messages).
local nchan = os.getenv("BENCH_TARGET") == "nchan"
wrk.method = "POST"
local body
if nchan then
  wrk.headers["Content-Type"] = "text/plain"
  body = "hello from the ingest benchmark"
else
  wrk.headers["Content-Type"] = "application/json"
  body = '{"author":"bench","text":"hello from the ingest benchmark"}'
end
local channels = {}
for i = 1, 64 do
  channels[i] = string.format("00000000-0000-4000-8000-%012d", i)
end
local counter = 0

request = function()
  counter = counter + 1
  local channel = channels[(counter % 64) + 1]
  local path
  if nchan then
    path = "/pub/" .. channel
  else
    path = "/channels/" .. channel .. "/messages"
  end
  return wrk.format(nil, path, nil, body)
end
