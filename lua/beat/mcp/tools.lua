--- beat.mcp.tools: a registry of MCP tools and the checking of their
--- arguments.
---
--- A tool is {name, title, description, inputSchema, outputSchema,
--- annotations, handler}. handler(args, ctx) runs in a task of its own with
--- arguments already checked against inputSchema and defaults filled in; it
--- returns `structured, text` (structured content matching outputSchema, and
--- a short human summary), or `nil, message` for a tool error the caller
--- can act on. An error it raises becomes a tool error too ("internal
--- error: ...", with the traceback on stderr).
---
--- The checker knows the part of JSON Schema the tools use: type (one or a
--- list), enum, minimum/maximum, minLength/maxLength, items, minItems/
--- maxItems, properties, required, additionalProperties, default.
local json = require "beat.mcp.json"
local task = require "beat.task"

local M = {}

---@class beat.mcp.Registry
local Registry = {}
Registry.__index = Registry

--- A new, empty registry.
---@return beat.mcp.Registry
function M.new()
  return setmetatable({ order = {}, by_name = {} }, Registry)
end

local TOOL_FIELDS = { name = "string", title = "string", description = "string",
  inputSchema = "table", outputSchema = "table", annotations = "table", handler = "function" }

--- Adds (or replaces) a tool. Raises on a malformed definition.
---@param def table
function Registry:add(def)
  if type(def) ~= "table" then error("registry:add: def must be a table", 2) end
  for k, v in pairs(def) do
    if not TOOL_FIELDS[k] then error(("registry:add: unknown field %s"):format(tostring(k)), 2) end
    if type(v) ~= TOOL_FIELDS[k] then
      error(("registry:add: %s must be a %s, got %s"):format(k, TOOL_FIELDS[k], type(v)), 2)
    end
  end
  for _, k in ipairs { "name", "description", "inputSchema", "handler" } do
    if def[k] == nil then error(("registry:add: %s is required"):format(k), 2) end
  end
  if not def.name:match("^[%w_%-%.]+$") or #def.name > 128 then
    error(("registry:add: bad tool name %q"):format(def.name), 2)
  end
  if def.inputSchema.type ~= "object" then error("registry:add: inputSchema.type must be \"object\"", 2) end
  if def.outputSchema and def.outputSchema.type ~= "object" then
    error("registry:add: outputSchema.type must be \"object\"", 2)
  end
  if not self.by_name[def.name] then self.order[#self.order + 1] = def.name end
  self.by_name[def.name] = def
end

---@param name string
function Registry:get(name)
  return self.by_name[name]
end

--- Names of the tools, in the order they were added.
function Registry:names()
  return { table.unpack(self.order) }
end

-- What a protocol version knows of a tool: annotations came with
-- 2025-03-26, title and outputSchema with 2025-06-18.
local function since(version, first)
  return version >= first
end

--- The tools as tools/list shows them to a client of protocol `version`.
---@param version string
---@return table[]
function Registry:list(version)
  local out = json.array()
  for _, name in ipairs(self.order) do
    local d = self.by_name[name]
    local t = { name = d.name, description = d.description, inputSchema = d.inputSchema }
    if since(version, "2025-03-26") then t.annotations = d.annotations end
    if since(version, "2025-06-18") then
      t.title = d.title
      t.outputSchema = d.outputSchema
    end
    out[#out + 1] = t
  end
  return out
end

-- Checking values against a schema -----------------------------------------

local function describe(v)
  if v == json.null then return "null" end
  local t = type(v)
  if t == "string" then
    local shown = #v > 60 and (v:sub(1, 57) .. "...") or v
    return ("%s"):format(json.encode(shown))
  elseif t == "number" then
    return ("%s"):format(json.encode(v))
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "table" then
    return json.is_array(v) and next(v) ~= nil and "an array" or "an object"
  end
  return t
end

local function type_ok(kind, v)
  if kind == "string" then return type(v) == "string" end
  if kind == "boolean" then return type(v) == "boolean" end
  if kind == "number" then return type(v) == "number" and v == v and v ~= math.huge and v ~= -math.huge end
  if kind == "integer" then return type(v) == "number" and math.tointeger(v) ~= nil end
  if kind == "null" then return v == json.null end
  if kind == "array" then return type(v) == "table" and json.is_array(v) end
  if kind == "object" then return type(v) == "table" and json.is_object(v) end
  return false
end

local ARTICLE = { integer = "an integer", array = "an array", object = "an object", null = "null" }

local function kind_text(kinds)
  local parts = {}
  for i, k in ipairs(kinds) do parts[i] = ARTICLE[k] or ("a " .. k) end
  return table.concat(parts, " or ")
end

local function expected(schema)
  local kinds = type(schema.type) == "table" and schema.type or { schema.type }
  local text = kind_text(kinds)
  if schema.enum then
    local vals = {}
    for i, e in ipairs(schema.enum) do vals[i] = json.encode(e) end
    text = "one of " .. table.concat(vals, ", ")
  end
  if schema.minimum and schema.maximum then
    text = ("%s from %s to %s"):format(text, json.encode(schema.minimum), json.encode(schema.maximum))
  elseif schema.minimum then
    text = ("%s >= %s"):format(text, json.encode(schema.minimum))
  elseif schema.maximum then
    text = ("%s <= %s"):format(text, json.encode(schema.maximum))
  end
  return text
end

local check

-- Checks v against schema; returns the value to use (integers made
-- integers, defaults filled) or nil and a message naming `path`.
function check(schema, v, path)
  local kinds = schema.type and (type(schema.type) == "table" and schema.type or { schema.type })
  if kinds then
    local ok = false
    for _, k in ipairs(kinds) do
      if type_ok(k, v) then ok = true break end
    end
    if not ok then
      return nil, ("argument %s must be %s, got %s"):format(path, expected(schema), describe(v))
    end
  end
  if math.type(v) == "float" and kinds then
    for _, k in ipairs(kinds) do
      if k == "integer" then v = math.tointeger(v) or v break end
    end
  end
  if schema.enum then
    local found = false
    for _, e in ipairs(schema.enum) do
      if e == v then found = true break end
    end
    if not found then
      return nil, ("argument %s must be %s, got %s"):format(path, expected(schema), describe(v))
    end
  end
  if type(v) == "number" then
    if (schema.minimum and v < schema.minimum) or (schema.maximum and v > schema.maximum) then
      return nil, ("argument %s must be %s, got %s"):format(path, expected(schema), describe(v))
    end
  elseif type(v) == "string" then
    local n = utf8.len(v) or #v
    if schema.minLength and n < schema.minLength then
      return nil, schema.minLength == 1 and ("argument %s must not be empty"):format(path)
        or ("argument %s must be at least %d characters long, got %d"):format(path, schema.minLength, n)
    end
    if schema.maxLength and n > schema.maxLength then
      return nil, ("argument %s must be at most %d characters long, got %d"):format(path, schema.maxLength, n)
    end
  elseif type(v) == "table" and json.is_array(v) and (schema.items or schema.minItems or schema.maxItems)
      and not (schema.properties and next(v) == nil) then
    if schema.minItems and #v < schema.minItems then
      return nil, ("argument %s must have at least %d item%s, got %d"):format(path, schema.minItems,
        schema.minItems == 1 and "" or "s", #v)
    end
    if schema.maxItems and #v > schema.maxItems then
      return nil, ("argument %s must have at most %d items, got %d"):format(path, schema.maxItems, #v)
    end
    local out = json.array()
    for i, item in ipairs(v) do
      local c, err = check(schema.items or {}, item, ("%s[%d]"):format(path, i - 1))
      if c == nil then return nil, err end
      out[i] = c
    end
    v = out
  elseif type(v) == "table" and (schema.properties or schema.additionalProperties ~= nil) then
    local c, err = M.check_object(schema, v, path)
    if c == nil then return nil, err end
    v = c
  end
  return v
end

--- Checks an object against an object schema: required properties,
--- unknown ones (when additionalProperties is false), each property's own
--- schema; fills defaults. A JSON null given for an optional property counts
--- as not given. Returns the checked copy, or nil and a message naming the
--- argument and what was expected.
---@param schema table
---@param obj table
---@param prefix? string path of obj ("" at the top)
---@return table|nil
---@return string? err
function M.check_object(schema, obj, prefix)
  local function name(k) return prefix and prefix ~= "" and (prefix .. "." .. k) or k end
  local props = schema.properties or {}
  local out = {}
  for _, k in ipairs(schema.required or {}) do
    if obj[k] == nil or obj[k] == json.null then
      return nil, ("missing required argument %s (%s)"):format(name(k), props[k] and expected(props[k]) or "any value")
    end
  end
  local keys = {}
  for k in pairs(obj) do keys[#keys + 1] = tostring(k) end
  table.sort(keys)
  for _, k in ipairs(keys) do
    local v = obj[k]
    local ps = props[k]
    if ps == nil then
      if schema.additionalProperties == false then
        local known = {}
        for p in pairs(props) do known[#known + 1] = p end
        table.sort(known)
        return nil, ("unknown argument %s (expected %s)"):format(name(k),
          #known > 0 and table.concat(known, ", ") or "no arguments")
      elseif type(schema.additionalProperties) == "table" then
        local c, err = check(schema.additionalProperties, v, name(k))
        if c == nil then return nil, err end
        out[k] = c
      else
        out[k] = v
      end
    elseif v ~= json.null then
      local c, err = check(ps, v, name(k))
      if c == nil then return nil, err end
      out[k] = c
    end
  end
  for k, ps in pairs(props) do
    if out[k] == nil and ps.default ~= nil then out[k] = ps.default end
  end
  return out
end

-- Results ------------------------------------------------------------------

--- A tool result carrying an error the model can act on.
---@param message string
function M.error_result(message)
  return { content = json.array { { type = "text", text = message } }, isError = true }
end

--- A successful tool result: the human text, then the structured content
--- serialized (for clients that only read `content`, as the specification
--- recommends), and structuredContent itself.
---@param structured table
---@param text string
---@param version string protocol version of the client
function M.result(structured, text, version)
  local content = json.array { { type = "text", text = text } }
  if structured ~= nil then
    content[2] = { type = "text", text = json.encode(structured) }
  end
  local r = { content = content }
  if structured ~= nil and since(version, "2025-06-18") then r.structuredContent = structured end
  return r
end

--- Calls a tool: checks the arguments, runs the handler, builds the result.
--- Raises only the task's cancellation (the caller sends no answer then).
---@param name string
---@param args table|nil
---@param ctx table
---@return table result
function Registry:call(name, args, ctx)
  local def = self.by_name[name]
  if not def then return M.error_result(("unknown tool %s"):format(tostring(name))) end
  local checked, err = M.check_object(def.inputSchema, args or {}, "")
  if not checked then return M.error_result(("%s: %s"):format(name, err)) end
  local res = table.pack(xpcall(def.handler, function(e)
    if task.is_cancelled(e) then return e end
    return { traceback = debug.traceback(tostring(e), 2), message = tostring(e) }
  end, checked, ctx))
  if not res[1] then
    local e = res[2]
    if task.is_cancelled(e) then error(e, 0) end
    if ctx and ctx.log then ctx:log("error", ("%s failed: %s"):format(name, e.traceback)) end
    return M.error_result(("%s: internal error: %s"):format(name, e.message))
  end
  local structured, text = res[2], res[3]
  if structured == nil then
    return M.error_result(type(text) == "string" and text or (name .. " failed"))
  end
  if type(structured) ~= "table" then
    return M.error_result(("%s: internal error: the handler returned a %s"):format(name, type(structured)))
  end
  return M.result(structured, type(text) == "string" and text or "", ctx and ctx.version or "2025-11-25")
end

return M
