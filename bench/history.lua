-- wrk script: history pages of 100 after a random id of a random channel, over
-- the channels bench/src/bin/nats-fill.rs fills (BENCH_CHANNELS of them,
-- BENCH_PER_CHANNEL messages each).
local channels = tonumber(os.getenv("BENCH_CHANNELS") or "1000")
local per_channel = tonumber(os.getenv("BENCH_PER_CHANNEL") or "1000")
math.randomseed(os.time())

request = function()
  local channel = string.format("00000000-0000-4000-8000-%012d", math.random(1, channels))
  local after = math.random(0, per_channel - 100)
  return wrk.format("GET", "/channels/" .. channel .. "/messages?raw=1&limit=100&after=" .. after)
end

-- Every page must hold 100 messages: count the short ones.
short = 0
response = function(status, headers, body)
  local _, count = string.gsub(body, '"id":', "")
  if status ~= 200 or count ~= 100 then
    short = short + 1
  end
end

local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end

done = function()
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("short")
  end
  io.write(string.format("short pages: %d\n", total))
end
