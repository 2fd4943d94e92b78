-- Orthanc's change feed does not report deletions; this script tells the interop server.
-- Install: add this file to Orthanc's "LuaScripts" and set, in Orthanc's environment,
--   INTEROP_CALLBACK_URL            e.g. http://interop:8080/imaging/orthanc/deleted
--   INTEROP_ORTHANC_CALLBACK_TOKEN  the same value as the interop server's setting
--     (or INTEROP_ORTHANC_CALLBACK_TOKEN_FILE: a file holding it, e.g. a mounted secret)
-- The server answers 204; failures are only logged here: the periodic reconciliation
-- (QIDO-RS against the ImagingStudies in FHIR) catches anything missed.

local url = os.getenv('INTEROP_CALLBACK_URL')
local token = os.getenv('INTEROP_ORTHANC_CALLBACK_TOKEN')
local token_file = os.getenv('INTEROP_ORTHANC_CALLBACK_TOKEN_FILE')
if (token == nil or token == '') and token_file ~= nil and token_file ~= '' then
  local f = io.open(token_file, 'r')
  if f == nil then
    print('interop deletion callback: cannot read INTEROP_ORTHANC_CALLBACK_TOKEN_FILE')
  else
    token = (f:read('*a') or ''):gsub('%s+$', '')
    f:close()
  end
end
if url == nil or url == '' then
  print('interop deletion callback: INTEROP_CALLBACK_URL is not set, callbacks are off')
else
  print('interop deletion callback: posting deletions to ' .. url)
end

local function notify(level, id)
  if url == nil or url == '' then
    return
  end
  local body = '{"ResourceType":"' .. level .. '","ID":"' .. id .. '"}'
  local headers = { ['Content-Type'] = 'application/json',
                    ['Authorization'] = 'Bearer ' .. (token or '') }
  print('interop deletion callback: ' .. level .. ' ' .. id)
  local ok, err = pcall(HttpPost, url, body, headers)
  if not ok then
    print('interop deletion callback failed for ' .. level .. ' ' .. id .. ': ' .. tostring(err))
  end
end

function OnDeletedStudy(studyId)
  notify('Study', studyId)
end

function OnDeletedSeries(seriesId)
  notify('Series', seriesId)
end

function OnDeletedInstance(instanceId)
  notify('Instance', instanceId)
end
