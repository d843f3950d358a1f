-- wrk script for POST /v1.0/identity/conditionalAccess/evaluate (docs/benchmarks.md, "The server").
--   GATEHOUSE_TOKEN=<bearer token> BODY=scripts/bench/evaluate-adele-fr.json \
--     wrk -t1 -c64 -d10s -s scripts/bench/evaluate.lua http://127.0.0.1:8080
-- Prints the p50/p90/p99/p99.9 latency and the count of non-2xx answers at the end. (No
-- `response` hook: defining one makes wrk parse every body, which costs the shared cores.)
local token = os.getenv("GATEHOUSE_TOKEN") or error("set GATEHOUSE_TOKEN")
local path = os.getenv("BODY") or "scripts/bench/evaluate-adele-fr.json"
local file = assert(io.open(path, "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.path = "/v1.0/identity/conditionalAccess/evaluate"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. token

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "evaluate: %.0f requests/s (%d in %.1f s); latency p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms; errors: %d connect, %d read, %d write, %d timeout, non-2xx %d\n",
    summary.requests / seconds, summary.requests, seconds,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000, latency.max / 1000,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    summary.errors.status))
end
