-- wrk script: POST a small text message to Nchan, spread over 64 channels.
wrk.method = "POST"
wrk.headers["Content-Type"] = "text/plain"
local body = "hello from the ingest benchmark"
local channels = {}
for i = 1, 64 do
  channels[i] = string.format("00000000-0000-4000-8000-%012d", i)
end
local counter = 0

request = function()
  counter = counter + 1
  local path = "/pub/" .. channels[(counter % 64) + 1]
  return wrk.format(nil, path, nil, body)
end
