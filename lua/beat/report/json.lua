--- beat.report.json: the run model as one JSON document.
local M = {}

local json_value

local function json_string(s)
  return require("cjson").encode(require("beat.journal").utf8_clean(s))
end

local function is_array(t)
  if getmetatable(t) == "array" then return true end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n > 0 and #t == n
end

function json_value(v, out)
  local t = type(v)
  if t == "nil" then out[#out + 1] = "null"
  elseif t == "boolean" then out[#out + 1] = tostring(v)
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then out[#out + 1] = json_string(tostring(v):gsub("^%-?nan$", "nan"))
    elseif math.type(v) == "integer" then out[#out + 1] = ("%d"):format(v)
    else
      local s = ("%.15g"):format(v)
      if tonumber(s) ~= v then s = ("%.17g"):format(v) end
      out[#out + 1] = s
    end
  elseif t == "string" then out[#out + 1] = json_string(v)
  elseif t == "table" then
    if is_array(v) then
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        json_value(x, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do keys[#keys + 1] = tostring(k) end
      table.sort(keys)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = json_string(k)
        out[#out + 1] = ":"
        local x = v[k]
        if x == nil then x = v[tonumber(k)] end
        json_value(x, out)
      end
      out[#out + 1] = "}"
    end
  else
    out[#out + 1] = json_string("<" .. t .. ">")
  end
end

local function arr(t) return setmetatable(t or {}, { __metatable = "array" }) end

--- The run model as one JSON document (lists stay lists when empty).
---@param model table
---@return string
function M.json(model)
  local m = {}
  for k, v in pairs(model) do m[k] = v end
  m.metrics = arr({ table.unpack(model.metrics) })
  m.iterations = arr({ table.unpack(model.iterations) })
  m.warnings = arr({ table.unpack(model.warnings) })
  if model.front then m.front = arr({ table.unpack(model.front) }) end
  m.objective = { kind = model.objective.kind, metrics = arr({ table.unpack(model.objective.metrics) }) }
  local out = {}
  json_value(m, out)
  return table.concat(out)
end
return M
