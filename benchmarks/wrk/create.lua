-- Fill a queue: POST /mock/environments/{env}/work back to back.
--   wrk -c N -t 1 -s create.lua URL -- env_id
local path
function init(args)
  path = "/mock/environments/" .. args[1] .. "/work"
end
function request()
  return wrk.format("POST", path)
end
