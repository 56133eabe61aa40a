-- wrk script for POST /v1/events (benches/http_ingest.rs starts wrk with it; it can also
-- be run by hand against a running runtime, see docs/benchmarks.md).
--
-- Every request is one envelope (docs/contract.md) with an id unique in the run (a UUID
-- made of a per-run nonce, the wrk thread's index and a per-thread counter), over
-- BENCH_PATIENTS patients (MRN and phone) and three sites. The mix, by each thread's
-- counter: a quarter `appointment.booked` two days ahead (a `notify.send` confirmation
-- in the outbox), half `contact.started` with intent `scheduling`
-- (routed to a queue for a human), a quarter `survey.completed`.
--
-- Environment: FRONTDOOR_BENCH_TOKEN (bearer token of a principal that may post
-- events, required), BENCH_PATIENTS (2000), BENCH_TAG (names MRNs and contacts; "wrk").
--
-- At the end it prints lines the bench parses:
--   frontdoor-status <code> <count>   responses by HTTP status, over all threads
--   frontdoor-sent <n>                requests sent (sent - answered = cut off at the end)
--   frontdoor-duration-us <n>         wrk's measured duration

local token = os.getenv("FRONTDOOR_BENCH_TOKEN")
if token == nil or token == "" then
  error("FRONTDOOR_BENCH_TOKEN is not set")
end
local patients = tonumber(os.getenv("BENCH_PATIENTS") or "2000")
local tag = os.getenv("BENCH_TAG") or "wrk"
local sites = { "north", "south", "west" }

wrk.method = "POST"
wrk.path = "/v1/events"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"

-- Main state: the threads, so done() can read their counters.
local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

-- Thread state.
function init(args)
  counter = 0
  sent = 0
  statuses = {}
  math.randomseed(os.time() * 1000 + thread_index * 7919)
  nonce = math.random(0, 0x7fffffff)
end

local function uuid()
  -- Version 4 layout; unique by (thread_index, counter) within a run.
  return string.format("%08x-%04x-4%03x-%04x-%012x",
    nonce, thread_index % 0x10000, math.random(0, 0xfff),
    0x8000 + math.random(0, 0x3fff), counter)
end

local function envelope()
  local p = math.random(0, patients - 1)
  local site = sites[(p % #sites) + 1]
  local now = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local head = string.format(
    '{"id":"%s","occurred_at":"%s","site":"%s","patient":{"mrn":"MRN-%s-%d","phone":"+1555%07d"},',
    uuid(), now, site, tag, p, p)
  local pick = counter % 4
  if pick == 0 then
    local starts = os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 2 * 86400)
    return head .. string.format(
      '"type":"appointment.booked","channel":"portal","appointment_id":"a-%s-%d-%d",'
      .. '"starts_at":"%s","department":"cardiology","location":"Clinic 3"}',
      tag, thread_index, counter, starts)
  elseif pick == 1 or pick == 2 then
    return head .. string.format(
      '"type":"contact.started","channel":"voice","contact_id":"c-%s-%d-%d","intent":"scheduling"}',
      tag, thread_index, counter)
  else
    return head .. string.format(
      '"type":"survey.completed","channel":"sms","score":%d}', counter % 10)
  end
end

function request()
  counter = counter + 1
  sent = sent + 1
  return wrk.format(nil, nil, nil, envelope())
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  local sent_total = 0
  for _, thread in ipairs(threads) do
    sent_total = sent_total + thread:get("sent")
    for code, n in pairs(thread:get("statuses")) do
      total[code] = (total[code] or 0) + n
    end
  end
  for code, n in pairs(total) do
    io.write(string.format("frontdoor-status %d %d\n", code, n))
  end
  io.write(string.format("frontdoor-sent %d\n", sent_total))
  io.write(string.format("frontdoor-duration-us %d\n", summary.duration))
end
