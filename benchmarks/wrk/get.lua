-- GET of one item, round robin over the items given as arguments.
--   wrk -c N -t 1 -s get.lua URL -- env_id work_1,work_2,...
local paths = {}
local n = 0
function init(args)
  for id in string.gmatch(args[2], "[^,]+") do
    table.insert(paths, "/v1/environments/" .. args[1] .. "/work/" .. id)
  end
end
function request()
  n = n % #paths + 1
  return wrk.format("GET", paths[n])
end
