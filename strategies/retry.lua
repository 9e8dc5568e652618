-- retry: run the agent until a check command passes.
--
--   beat.strategy("retry"){agent = ..., prompt = "fix the failing test", check = "npm test"}
--
-- Each iteration: the agent works on the prompt (carrying the failing check's
-- output) → snapshot → the check runs → exit 0 passes the run. Progress is
-- kept between iterations unless reset_on_failure is set. A run that ends
-- failed leaves the work tree as it was before the run (the last attempt is
-- the snapshot `last`) unless keep_last is set. A run resumed after its
-- process died (beat loop resume) goes on after its last decision with the
-- counters that decision recorded (`run.resumed.state`). Copy this file to
-- strategies/retry.lua next to your recipe to change it: yours wins.
local beat = require "beat"

local DEFAULTS = {
  max_iterations = 10, max_consecutive_failures = 3, max_no_progress = 3,
  cooldown = 0, check_first = true, reset_on_failure = false, feedback_bytes = 4000, keep_last = false,
}
local OPTIONS = {
  check = "string|table|function", check_timeout = "number|string", check_first = "boolean",
  reset_on_failure = "boolean", feedback_bytes = "number", keep_last = "boolean",
}

-- The tail of the failing check's output, for the next prompt.
local function default_feedback(r, limit)
  local out = ((r.stdout or "") .. (r.stderr ~= "" and ("\n" .. (r.stderr or "")) or ""))
  if #out > limit then out = "[...]\n" .. out:sub(-limit) end
  local what = r.timed_out and "timed out" or ("exited %d"):format(r.code)
  return ("The check %s. Its output ends with:\n%s"):format(what, out)
end

-- What the next prompt says about the last failing check: the initial
-- check (no agent ran yet) is not a "previous attempt".
local function feedback_note(feedback_text, from, max)
  if from == 0 then return "The check fails before any change: " .. feedback_text end
  if not from then return "Previous attempt: " .. feedback_text end
  return ("Previous attempt (iteration %d of %s): %s"):format(from, max > 0 and max or "no limit", feedback_text)
end

return function(opts)
  local o = beat.loop.options("retry", opts, OPTIONS, DEFAULTS)
  if o.check == nil then error('beat.strategy("retry"): opts.check is required (the command that must pass)', 2) end
  beat.loop.check_command("retry", "check", o.check)

  return beat.loop.run("retry", o, function(run)
    -- a failed run gives the user back the original tree, not a half fix
    if not o.keep_last then run.restore_on_failure = run.base end
    -- what carries over from one iteration to the next (and into a resumed run)
    local carried = run.resumed and run.resumed.state or {}
    local feedback_text = carried.feedback   -- what the last failing check said,
    local feedback_from = carried.feedback_from   -- and in which iteration
    local no_progress = carried.no_progress or 0
    local last = carried.last or run.base

    -- iteration 0: is there anything to fix?
    if o.check_first and not run.resumed then
      local r = run:command(0, "check", o.check, o.check_timeout)
      run:restore()   -- what the check wrote is not the agent's work
      if r.code == 0 then
        local ending = { "passed", "the check already passes; the agent was not run" }
        run:record { iteration = 0, status = "pass", summary = "the check already passes", stop = ending }
        return ending[1], ending[2]
      end
      feedback_text = o.feedback and run:text_hook("feedback", r) or default_feedback(r, o.feedback_bytes)
      feedback_from = 0
      run:record { iteration = 0, status = "fail", summary = ("check exited %d before any change"):format(r.code),
        state = { feedback = feedback_text, feedback_from = 0, no_progress = 0, last = last } }
    end

    for n in run:iterations() do
      local stop = run:budget_stop() or run:user_stop()
      if stop then return "failed", stop end
      run.iteration = n
      local t0 = beat.clock()
      run:hook("on_iteration", run:state { iteration = n })

      -- propose
      local prompt = type(o.prompt) == "function"
        and run:text_hook("prompt", run:state { iteration = n, feedback = feedback_text })
        or o.prompt
      if feedback_text and type(o.prompt) ~= "function" then
        prompt = ("%s\n\n%s"):format(prompt, feedback_note(feedback_text, feedback_from, o.max_iterations))
      end
      local agent = run:propose(n, prompt)
      local changed = run:changed_since(last)
      local snap, rejected, kind = run:snapshot(n)
      last = snap or last

      -- check
      local status, summary, r
      if rejected then
        status, summary, changed = kind or "rejected", rejected, true
      elseif not agent.ok then
        status, summary = "crash", "agent failed: " .. tostring(agent.error or ("exit " .. tostring(agent.code)))
      else
        r = run:command(n, "check", o.check, o.check_timeout)
        run:restore(snap)   -- what the check wrote is not the agent's work
        if r.code == 0 then
          status, summary = "pass", "check passed"
        else
          status = "fail"
          summary = ("check %s%s"):format(r.timed_out and "timed out" or r.error and ("error: " .. r.error) or ("exited " .. r.code),
            changed and "" or "; agent changed nothing")
        end
      end

      -- decide
      no_progress = changed and 0 or no_progress + 1
      local failure = status == "crash" or rejected ~= nil or (status == "fail" and not changed)
      run.consecutive_failures = failure and run.consecutive_failures + 1 or 0
      if status == "pass" then
        run:keep(snap)
      elseif rejected then
        run:restore()    -- back to the last kept attempt: the rejected one is not built on
        last = run.best
      elseif o.reset_on_failure then
        run:restore(run.base)
        last = run.base
      elseif snap then
        run:keep(snap)   -- progress is kept: the next attempt builds on this one
      end
      if r and r.code ~= 0 then
        feedback_text = o.feedback and run:text_hook("feedback", r) or default_feedback(r, o.feedback_bytes)
        feedback_from = n
      elseif rejected then
        feedback_text = "The attempt was rejected and undone: " .. (kind and rejected or ("it left files " .. rejected))
        feedback_from = n
      end

      -- stop? (decided before the record, so a resumed run knows it too)
      local ending
      local budget = run:budget_stop()
      if status == "pass" then
        ending = { "passed", ("the check passed on iteration %d"):format(n) }
      elseif budget then
        ending = { "failed", budget }
      elseif run.consecutive_failures >= o.max_consecutive_failures then
        ending = { "failed", ("%d consecutive failures"):format(run.consecutive_failures) }
      elseif no_progress >= o.max_no_progress then
        ending = { "failed", ("no progress: the agent changed nothing %d times in a row"):format(no_progress) }
      end

      -- record
      run:record { iteration = n, status = status, snapshot = snap, cost_usd = agent.cost_usd,
        duration_s = beat.clock() - t0, summary = summary, stop = ending,
        history = { iteration = n, status = status, summary = summary },
        state = { feedback = feedback_text, feedback_from = feedback_from, no_progress = no_progress, last = last } }
      run:hook(status == "pass" and "on_keep" or "on_discard", run:state { iteration = n, status = status })
      if ending then return ending[1], ending[2] end
      run:cooldown(n)
    end
    return "failed", ("the check still fails after %d iteration%s"):format(o.max_iterations,
      o.max_iterations == 1 and "" or "s")
  end)
end
