-- Mixed CRUD on Patient: POST -> GET -> PUT -> DELETE, in equal parts.
-- wrk gives no connection identity to request()/response(), so each request carries its step
-- and id in X-Request-ID (the server echoes it); response() queues the next step of the
-- chain and request() sends queued steps first, a new POST otherwise.
-- Usage: wrk ... -s crud.lua http://host:port -- /fhir
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
local common = dofile(here .. "common.lua")

local base = "/fhir"
local queue = {}
local qhead, qtail = 1, 0
local created = 0

-- Per-thread counters, read by done() through thread:get().
sent_post, sent_get, sent_put, sent_delete = 0, 0, 0, 0
ok_post, ok_get, ok_put, ok_delete = 0, 0, 0, 0
bad_post, bad_get, bad_put, bad_delete = 0, 0, 0, 0
untagged = 0

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
end

function init(args)
  if args[1] then
    base = args[1]
  end
  common.seed()
end

local function patient_body(id, family, version_note)
  local idpart = ""
  if id then
    idpart = '"id":"' .. id .. '",'
  end
  return '{"resourceType":"Patient",' .. idpart
    .. '"identifier":[{"system":"urn:bench:crud","value":"' .. family .. '"}],'
    .. '"name":[{"family":"' .. family .. '","given":["Crud","' .. version_note .. '"]}],'
    .. '"gender":"other","birthDate":"1980-02-29"}'
end

local function push(op, id)
  qtail = qtail + 1
  queue[qtail] = { op, id }
end

function request()
  if qhead <= qtail then
    local item = queue[qhead]
    queue[qhead] = nil
    qhead = qhead + 1
    local op, id = item[1], item[2]
    local path = base .. "/Patient/" .. id
    if op == "get" then
      sent_get = sent_get + 1
      return wrk.format("GET", path, {
        ["Accept"] = "application/fhir+json",
        ["X-Request-ID"] = "crud:get:" .. id,
      })
    elseif op == "put" then
      sent_put = sent_put + 1
      return wrk.format("PUT", path, {
        ["Content-Type"] = "application/fhir+json",
        ["Accept"] = "application/fhir+json",
        ["X-Request-ID"] = "crud:put:" .. id,
      }, patient_body(id, "Crudson", "Updated"))
    else
      sent_delete = sent_delete + 1
      return wrk.format("DELETE", path, { ["X-Request-ID"] = "crud:delete:" .. id })
    end
  end
  created = created + 1
  sent_post = sent_post + 1
  return wrk.format("POST", base .. "/Patient", {
    ["Content-Type"] = "application/fhir+json",
    ["Accept"] = "application/fhir+json",
    ["X-Request-ID"] = "crud:post:-",
  }, patient_body(nil, "Crudson", "Created"))
end

local function header(headers, name)
  for k, v in pairs(headers) do
    if string.lower(k) == name then
      return v
    end
  end
  return nil
end

function response(status, headers, body)
  local tag = header(headers, "x-request-id")
  local op, id = nil, nil
  if tag then
    op, id = tag:match("^crud:(%a+):(.*)$")
  end
  if not op then
    untagged = untagged + 1
    return
  end
  local good = status >= 200 and status < 300
  if op == "post" then
    local loc = header(headers, "location")
    local new_id = loc and loc:match("Patient/([A-Za-z0-9%-%.]+)")
    if good and new_id then
      ok_post = ok_post + 1
      push("get", new_id)
    else
      bad_post = bad_post + 1
    end
  elseif op == "get" then
    if good then
      ok_get = ok_get + 1
      push("put", id)
    else
      bad_get = bad_get + 1
    end
  elseif op == "put" then
    if good then
      ok_put = ok_put + 1
      push("delete", id)
    else
      bad_put = bad_put + 1
    end
  elseif op == "delete" then
    if good then
      ok_delete = ok_delete + 1
    else
      bad_delete = bad_delete + 1
    end
  end
end

function done(summary, latency, requests)
  local names = {
    "sent_post", "sent_get", "sent_put", "sent_delete",
    "ok_post", "ok_get", "ok_put", "ok_delete",
    "bad_post", "bad_get", "bad_put", "bad_delete", "untagged",
  }
  local extra = {}
  for _, name in ipairs(names) do
    extra[name] = 0
  end
  for _, thread in ipairs(threads) do
    for _, name in ipairs(names) do
      extra[name] = extra[name] + (thread:get(name) or 0)
    end
  end
  common.report(summary, latency, extra)
end
