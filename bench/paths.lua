-- GET a random path from a file (wrk ... -s paths.lua URL -- <paths-file> [bearer-token]),
-- e.g. reads by id or searches with known-good parameters, so every request hits real data.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
local common = dofile(here .. "common.lua")

local paths = {}
local headers = { ["Accept"] = "application/fhir+json" }

function init(args)
  paths = common.read_lines(args[1])
  if args[2] then
    headers["Authorization"] = "Bearer " .. args[2]
  end
  common.seed()
end

function request()
  return wrk.format("GET", paths[math.random(#paths)], headers)
end

function done(summary, latency, requests)
  common.report(summary, latency, nil)
end
