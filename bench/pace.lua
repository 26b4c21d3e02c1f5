-- wrk script for bench/load.sh RATE=N, for requests that need no script of their own: each
-- connection waits WRK_PAUSE_MS after every response before it sends the next request, so that
-- C connections offer about C * 1000 / WRK_PAUSE_MS requests/s (a little less: the response
-- time adds to the pause). The headers come from wrk's -H options.
local pause = tonumber(os.getenv("WRK_PAUSE_MS") or "")
assert(pause and pause > 0, "WRK_PAUSE_MS: milliseconds between a response and the next request")

function delay()
    return pause
end
