-- wrk script for the `dpop` scenario of bench/load.sh: every request carries the same
-- DPoP-bound access token and a proof never sent before (fapigate refuses a replayed proof).
--
--   wrk -t T -c C -d D -s bench/dpop.lua URL -- PROOFS_FILE TOKEN_FILE T
--
-- PROOFS_FILE holds one pre-signed proof per line (bench/gen_dpop.rs). Thread i of T takes
-- lines i, i+T, i+2T...: threads never share a proof, and all connections of a thread draw from
-- one index. When a thread runs out it resends its last proof: those requests are refused
-- (401, counted by wrk as non-2xx) and reported by done() as "dpop proofs exhausted".

local threads = {}

-- bench/load.sh RATE=N: a pause after every response (see bench/pace.lua). Defined only then:
-- wrk schedules a timer per request for a script that has delay().
local pause = tonumber(os.getenv("WRK_PAUSE_MS") or "")
if pause and pause > 0 then
    function delay()
        return pause
    end
end

function setup(thread)
    table.insert(threads, thread)
    thread:set("id", #threads)
end

function init(args)
    local proofs_file, token_file = args[1], args[2]
    local stride = tonumber(args[3] or "1")
    assert(proofs_file and token_file, "usage: -- PROOFS_FILE TOKEN_FILE THREADS")
    local f = assert(io.open(token_file, "r"))
    local token = f:read("*l")
    f:close()
    authorization = "DPoP " .. token
    proofs = {}
    local n = 0
    for line in io.lines(proofs_file) do
        if n % stride == id - 1 and #line > 0 then
            proofs[#proofs + 1] = line
        end
        n = n + 1
    end
    assert(#proofs > 0, "no DPoP proofs for this thread in " .. proofs_file)
    next_proof = 1
    available = #proofs
    exhausted = 0
end

function request()
    local proof = proofs[next_proof]
    if proof then
        proofs[next_proof] = nil -- never sent twice, and the memory goes back
        next_proof = next_proof + 1
        last = proof
    else
        proof = last
        exhausted = exhausted + 1
    end
    return wrk.format(nil, nil, { ["Authorization"] = authorization, ["DPoP"] = proof })
end

function done(summary, latency, requests)
    local used, available, exhausted = 0, 0, 0
    for _, thread in ipairs(threads) do
        used = used + (thread:get("next_proof") or 1) - 1
        available = available + (thread:get("available") or 0)
        exhausted = exhausted + (thread:get("exhausted") or 0)
    end
    io.write(string.format("dpop proofs used: %d of %d, exhausted: %d\n", used, available, exhausted))
end
