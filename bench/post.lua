-- wrk script: POST a small JSON message, spread over 64 channels.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local body = '{"author":"bench","text":"hello from the ingest benchmark"}'
local channels = {}
for i = 1, 64 do
  channels[i] = string.format("00000000-0000-4000-8000-%012d", i)
end
local counter = 0

request = function()
  counter = counter + 1
  local path = "/channels/" .. channels[(counter % 64) + 1] .. "/messages"
  return wrk.format(nil, path, nil, body)
end
