--- beat.transcript: an agent's log (iter-N/agent.log) made readable.
---
--- The log holds what the agent CLI printed, one line each (stderr lines
--- prefixed "[stderr] "). For the JSON-lines CLIs — Claude Code's
--- stream-json, Codex's `exec --json`, Gemini's stream-json — `render`
--- shows the conversation: the assistant's text, each tool call (→ name and
--- its main argument), each tool result (← its first line), errors, and the
--- final result (turns, cost, time). Other logs are returned as they are.
---
---   local text = require("beat.transcript").render(beat.fs.read(path), {color = false})
local cjson = require "cjson"

local M = {}

local function paint(s, cls, color)
  return require("beat.ui").paint(s, cls, color)
end

local function one_line(s, max)
  s = tostring(s or ""):gsub("\r", "")
  local first = s:match("^%s*([^\n]*)") or ""
  local more = s:find("\n", #first + 1, true) and s:match("\n%s*%S") ~= nil
  if #first > max then first = first:sub(1, max - 1) .. "…"
  elseif more then first = first .. " …" end
  return first
end

-- The argument that says most about a tool call.
local MAIN_ARG = { "command", "file_path", "path", "pattern", "url", "query", "description", "prompt" }

local function tool_args(input)
  if type(input) ~= "table" then return input ~= nil and one_line(input, 160) or "" end
  for _, k in ipairs(MAIN_ARG) do
    if type(input[k]) == "string" then return one_line(input[k], 160) end
  end
  local ok, s = pcall(cjson.encode, input)
  return ok and one_line(s:gsub("\\/", "/"), 160) or ""
end

local function content_text(c)
  if type(c) == "string" then return c end
  if type(c) ~= "table" then return "" end
  local parts = {}
  for _, b in ipairs(c) do
    if type(b) == "table" and type(b.text) == "string" then parts[#parts + 1] = b.text
    elseif type(b) == "string" then parts[#parts + 1] = b end
  end
  return table.concat(parts, "\n")
end

local function money(v)
  v = tonumber(v)
  return v and ("$%.4f"):format(v) or nil
end

local function secs(ms)
  ms = tonumber(ms)
  return ms and ("%.1fs"):format(ms / 1000) or nil
end

-- Claude Code stream-json ---------------------------------------------------------------------

local function claude(ev, out, color)
  local t = ev.type
  if t == "system" then
    if ev.subtype == "init" then
      out[#out + 1] = paint(("session %s · model %s"):format(tostring(ev.session_id or "?"),
        tostring(ev.model or "?")), "dim", color)
    elseif ev.subtype == "api_retry" then
      out[#out + 1] = paint(("API retry %s (status %s), waiting %s"):format(tostring(ev.attempt or "?"),
        tostring(ev.error_status or ev.error or "?"), secs(ev.retry_delay_ms) or "?"), "discard", color)
    end
  elseif t == "assistant" or t == "user" then
    local msg = type(ev.message) == "table" and ev.message or {}
    local content = msg.content
    if type(content) == "string" then content = { { type = "text", text = content } } end
    for _, b in ipairs(type(content) == "table" and content or {}) do
      if type(b) ~= "table" then
        -- skip
      elseif b.type == "text" and t == "assistant" then
        out[#out + 1] = b.text
      elseif b.type == "thinking" then
        out[#out + 1] = paint("(thinking) " .. one_line(b.thinking or b.text, 160), "dim", color)
      elseif b.type == "tool_use" then
        out[#out + 1] = paint("→ " .. tostring(b.name or "?"), "bold", color) .. " " .. tool_args(b.input)
      elseif b.type == "tool_result" then
        local text = one_line(content_text(b.content), 160)
        out[#out + 1] = b.is_error and paint("  ← error: " .. text, "crash", color) or paint("  ← " .. text, "dim", color)
      elseif b.type == "text" then
        out[#out + 1] = paint("user: " .. one_line(b.text, 160), "dim", color)
      end
    end
  elseif t == "rate_limit_event" then
    local info = type(ev.rate_limit_info) == "table" and ev.rate_limit_info or {}
    if info.status == "rejected" then
      local at = tonumber(info.resetsAt)
      out[#out + 1] = paint("rate limited" .. (at and os.date(" (resets at %H:%M)", math.floor(at)) or ""),
        "discard", color)
    end
  elseif t == "result" then
    local parts = { ev.is_error and "failed" or tostring(ev.subtype or "done") }
    local turns = math.tointeger(tonumber(ev.num_turns))
    if turns then parts[#parts + 1] = ("%d turn%s"):format(turns, turns == 1 and "" or "s") end
    if money(ev.total_cost_usd) then parts[#parts + 1] = money(ev.total_cost_usd) end
    if secs(ev.duration_ms) then parts[#parts + 1] = secs(ev.duration_ms) end
    out[#out + 1] = ""
    out[#out + 1] = paint("result: " .. table.concat(parts, " · "), ev.is_error and "crash" or "keep", color)
    if type(ev.errors) == "table" then
      for _, e in ipairs(ev.errors) do out[#out + 1] = paint("  " .. tostring(e), "crash", color) end
    end
    if ev.is_error and type(ev.result) == "string" then out[#out + 1] = "  " .. one_line(ev.result, 200) end
  end
end

-- Codex exec --json -------------------------------------------------------------------------------

local function codex(ev, out, color)
  local t = ev.type
  local item = type(ev.item) == "table" and ev.item or {}
  if t == "thread.started" then
    out[#out + 1] = paint("thread " .. tostring(ev.thread_id or "?"), "dim", color)
  elseif t == "item.completed" then
    if item.type == "agent_message" then
      out[#out + 1] = tostring(item.text or "")
    elseif item.type == "reasoning" then
      out[#out + 1] = paint("(reasoning) " .. one_line(item.text, 160), "dim", color)
    elseif item.type == "command_execution" then
      out[#out + 1] = paint("→ $ ", "bold", color) .. one_line(item.command, 160)
        .. (item.exit_code and paint((" (exit %s)"):format(tostring(math.tointeger(tonumber(item.exit_code))
          or item.exit_code)), "dim", color) or "")
      local o = item.aggregated_output
      if type(o) == "string" and o:match("%S") then out[#out + 1] = paint("  ← " .. one_line(o, 160), "dim", color) end
    elseif item.type == "file_change" then
      local paths = {}
      for _, c in ipairs(type(item.changes) == "table" and item.changes or {}) do
        if type(c) == "table" and c.path then paths[#paths + 1] = tostring(c.path) end
      end
      out[#out + 1] = paint("→ edit ", "bold", color) .. table.concat(paths, ", ")
    elseif item.type then
      out[#out + 1] = paint("→ " .. tostring(item.type), "bold", color) .. " " .. tool_args(item)
    end
  elseif t == "turn.completed" then
    local u = type(ev.usage) == "table" and ev.usage or {}
    out[#out + 1] = ""
    out[#out + 1] = paint(("result: turn completed · %s input, %s output tokens"):format(
      tostring(math.tointeger(tonumber(u.input_tokens)) or "?"),
      tostring(math.tointeger(tonumber(u.output_tokens)) or "?")), "keep", color)
  elseif t == "turn.failed" then
    local e = type(ev.error) == "table" and ev.error.message or ev.error
    out[#out + 1] = paint("result: turn failed: " .. one_line(e, 200), "crash", color)
  elseif t == "error" then
    out[#out + 1] = paint("error: " .. one_line(ev.message, 200), "discard", color)
  end
end

-- Gemini CLI stream-json ----------------------------------------------------------------------------

local function gemini(ev, out, color, st)
  local t = ev.type
  if t ~= "message" or ev.role ~= "assistant" then
    if st.text then out[#out + 1] = st.text st.text = nil end
  end
  if t == "init" then
    out[#out + 1] = paint(("session %s · model %s"):format(tostring(ev.session_id or "?"),
      tostring(ev.model or "?")), "dim", color)
  elseif t == "message" and ev.role == "assistant" then
    st.text = (st.text or "") .. tostring(ev.content or "")
  elseif t == "tool_use" then
    out[#out + 1] = paint("→ " .. tostring(ev.tool_name or "?"), "bold", color) .. " " .. tool_args(ev.parameters)
  elseif t == "tool_result" then
    local text = one_line(ev.output or (type(ev.error) == "table" and ev.error.message) or "", 160)
    out[#out + 1] = ev.status == "error" and paint("  ← error: " .. text, "crash", color) or paint("  ← " .. text, "dim", color)
  elseif t == "error" then
    out[#out + 1] = paint("error: " .. one_line(ev.message, 200), "discard", color)
  elseif t == "result" then
    local stats = type(ev.stats) == "table" and ev.stats or {}
    local parts = { tostring(ev.status or "done") }
    local tokens = math.tointeger(tonumber(stats.total_tokens))
    if tokens then parts[#parts + 1] = ("%d tokens"):format(tokens) end
    if secs(stats.duration_ms) then parts[#parts + 1] = secs(stats.duration_ms) end
    out[#out + 1] = ""
    out[#out + 1] = paint("result: " .. table.concat(parts, " · "), ev.status == "success" and "keep" or "crash", color)
    local e = type(ev.error) == "table" and ev.error.message
    if e then out[#out + 1] = paint("  " .. one_line(e, 200), "crash", color) end
  end
end

-- Which CLI wrote these records.
local function flavor(ev)
  local t = ev.type
  if t == "system" or t == "assistant" or t == "rate_limit_event" or (t == "user" and ev.message) then return "claude" end
  if type(t) == "string" and (t:match("^thread%.") or t:match("^turn%.") or t:match("^item%.")) then return "codex" end
  if t == "init" or t == "message" or t == "tool_use" or t == "tool_result" then return "gemini" end
  return nil
end

--- The log made readable (see the module comment); text that holds no
--- records of a known CLI is returned unchanged. Returns the text and the
--- CLI recognised ("claude", "codex", "gemini", or nil).
---@param text string
---@param opts? {color?: boolean}
---@return string text, string|nil flavor
function M.render(text, opts)
  local color = opts and opts.color or false
  local kind
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, 1) == "{" then
      local ok, ev = pcall(cjson.decode, line)
      if ok and type(ev) == "table" then
        kind = flavor(ev)
        if kind then break end
      end
    end
  end
  if not kind then return text, nil end
  local render = kind == "claude" and claude or kind == "codex" and codex or gemini
  local out, st = {}, {}
  for line in text:gmatch("([^\n]*)\n?") do
    local ok, ev = false, nil
    if line:sub(1, 1) == "{" then ok, ev = pcall(cjson.decode, line) end
    if ok and type(ev) == "table" then
      render(ev, out, color, st)
    elseif line:match("^%[stderr%] ") then
      if st.text then out[#out + 1] = st.text st.text = nil end
      out[#out + 1] = paint(line, "dim", color)
    elseif line ~= "" then
      out[#out + 1] = line
    end
  end
  if st.text then out[#out + 1] = st.text end
  return table.concat(out, "\n") .. "\n", kind
end

return M
