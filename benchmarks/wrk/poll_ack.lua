-- Poll, then ack what the poll returned: response() reads the delivered id and queues its
-- ack, which the next request() sends before polling again.  A poll that finds nothing
-- (the queue ran dry) is counted, and done() reports it, so a drained queue cannot pass
-- for a fast one.
--   wrk -c N -t 1 -s poll_ack.lua URL -- env_id
local env
local acks = {}
polls, empty = 0, 0  -- globals: done() reads them with thread:get
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end
function init(args)
  env = args[1]
end
function request()
  local id = table.remove(acks)
  if id then
    return wrk.format("POST", "/v1/environments/" .. env .. "/work/" .. id .. "/ack")
  end
  return wrk.format("GET", "/v1/environments/" .. env .. "/work/poll")
end
function response(status, headers, body)
  local id, kind = string.match(body, '^{"id":"([^"]+)","type":"(%w+)"')
  if kind == "work" and string.find(body, '"state":"queued"', 1, true) then
    polls = polls + 1
    table.insert(acks, id)
  elseif body == "null" then
    empty = empty + 1
  end
end
function done(summary, latency, requests)
  local delivered, dry = 0, 0
  for _, thread in ipairs(threads) do
    delivered = delivered + thread:get("polls")
    dry = dry + thread:get("empty")
  end
  io.write(string.format("POLL_ACK delivered=%d empty=%d\n", delivered, dry))
end
