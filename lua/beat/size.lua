--- Sizes in bytes: 1048576, "4096", "500K", "100M", "1G", "1GiB", "1.5G".
--- K, M, G, T (with or without "iB") are powers of 1024; "KB", "MB", "GB",
--- "TB" powers of 1000, as in coreutils.
local M = {}

local BINARY = { [""] = 1, K = 1024, M = 1024 ^ 2, G = 1024 ^ 3, T = 1024 ^ 4 }

--- Parses a size into a whole number of bytes; returns nil, reason for bad
--- input (the reason reads after the option's name: "must be ...").
---@param v string|number
---@return integer|nil bytes, string? reason
function M.parse(v)
  local n
  if type(v) == "number" then
    n = v
  elseif type(v) == "string" then
    local num, unit, suffix = v:match("^%s*(%d+%.?%d*)%s*(%a?)(%a*)%s*$")
    unit = unit and unit:upper()
    suffix = suffix and suffix:upper()
    local mult = unit and BINARY[unit]
    if mult and unit ~= "" and suffix == "B" then
      mult = 1000 ^ (({ K = 1, M = 2, G = 3, T = 4 })[unit])
    elseif mult and not (suffix == "" or (suffix == "IB" and unit ~= "")) then
      mult = nil
    elseif unit == "B" and suffix == "" then
      mult = 1
    end
    if not mult then
      return nil, ("must be a size like 500M, 2G or a number of bytes, got %q"):format(v)
    end
    n = tonumber(num) * mult
  else
    return nil, ("must be a size like 500M, 2G or a number of bytes, got %s"):format(type(v))
  end
  if n ~= n or n < 0 or n >= 2 ^ 62 then
    return nil, ("must be a size from 0 to 4 EiB, got %s"):format(tostring(v))
  end
  return math.floor(n)
end

--- "1.0 GiB", "512.0 MiB", "300 bytes".
---@param n integer bytes
---@return string
function M.format(n)
  for _, u in ipairs { { "TiB", 1024 ^ 4 }, { "GiB", 1024 ^ 3 }, { "MiB", 1024 ^ 2 }, { "KiB", 1024 } } do
    if n >= u[2] then return ("%.1f %s"):format(n / u[2], u[1]) end
  end
  return ("%d bytes"):format(n)
end

return M
