-- Shared by the wrk scripts in bench/: report one JSON line that run.py parses, so the
-- figures (and every error) come from wrk's own counters rather than scraped text output.
local common = {}

-- Read non-empty lines of a file (paths or ids written by run.py).
function common.read_lines(path)
  local lines = {}
  local f = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  for line in f:lines() do
    if #line > 0 then
      lines[#lines + 1] = line
    end
  end
  f:close()
  assert(#lines > 0, "no lines in " .. path)
  return lines
end

-- Seed differently per thread so threads do not walk the same random sequence.
function common.seed()
  local addr = tonumber(tostring({}):match("0x(%x+)") or "0", 16) or 0
  math.randomseed(os.time() + addr % 100000)
end

-- Print the summary as JSON; `extra` is a table of extra numeric fields.
function common.report(summary, latency, extra)
  local e = summary.errors
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_us":%d', summary.duration),
    string.format('"bytes":%d', summary.bytes),
    string.format('"p50_us":%d', latency:percentile(50)),
    string.format('"p99_us":%d', latency:percentile(99)),
    string.format('"max_us":%d', latency.max),
    string.format('"mean_us":%.1f', latency.mean),
    string.format('"non2xx3xx":%d', e.status),
    string.format('"connect_errors":%d', e.connect),
    string.format('"read_errors":%d', e.read),
    string.format('"write_errors":%d', e.write),
    string.format('"timeouts":%d', e.timeout),
  }
  for k, v in pairs(extra or {}) do
    parts[#parts + 1] = string.format('"%s":%d', k, v)
  end
  io.write("BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end

return common
