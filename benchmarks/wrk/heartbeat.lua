-- Heartbeats, round robin over the items given as arguments: with as many items as
-- connections, no two requests in flight touch the same item.
--   wrk -c N -t 1 -s heartbeat.lua URL -- env_id work_1,work_2,...
local paths = {}
local n = 0
function init(args)
  for id in string.gmatch(args[2], "[^,]+") do
    table.insert(paths, "/v1/environments/" .. args[1] .. "/work/" .. id .. "/heartbeat")
  end
end
function request()
  n = n % #paths + 1
  return wrk.format("POST", paths[n])
end
