--- `beat report [RUN]`: a run's scores as a terminal chart, a standalone
--- SVG, a self-contained HTML page, or the run model as JSON.
local M = {}

local USAGE = "beat report [RUN|last|DIR] [-o FILE.svg|FILE.html] [--width N] [--height N] [--json] [--color|--no-color] [-w DIR]"

local HELP = [[
Charts the score of each iteration of run RUN (an id, a unique prefix of
one, or "last", the default; or the path of a run directory): kept points
(●), discarded ones (○), the baseline (◆), the best so far (a step line),
and iterations without a score marked on the x axis (× crash or fail).
A multi-metric run gets one chart per metric; a Pareto run marks its front
(★) and adds a chart of its trade-off. A value far outside the rest (a
"diverged" sentinel such as 1000000, inf) is drawn at the edge of a
clipped axis (▲ ▼) and named under the chart. Numbers keep their
magnitude: 0.007312, 1.235e+06.

  -o FILE.svg     write the charts as a standalone SVG instead
  -o FILE.html    write a self-contained HTML page (charts and the iteration
                  table: iteration, decision, score, best, duration, cost,
                  reason); it loads nothing from the network
  --width N       columns of the terminal chart (40-1000; default $COLUMNS
                  on a terminal, else 80)
  --height N      rows of each terminal chart (5-200, default 14)
  --json          print the run model as one JSON document (see docs/runs.md)
  --color, --no-color
                  colour the terminal chart; by default only on a terminal
                  and when NO_COLOR is not set
  -w DIR          the work tree whose .beat/runs holds RUN (default: here)

Exit status: 0, 1 when the run's journal cannot be read, 2 for bad input.]]

local function int_arg(cli, flag, v, lo, hi)
  local n = math.tointeger(tonumber(v or ""))
  if not n or n < lo or n > hi then
    cli.usage_error("report: %s needs a whole number from %d to %d, got '%s'", flag, lo, hi, tostring(v))
  end
  return n
end

local function parse(cli, args)
  local o = { color = nil }
  local i = 1
  local function value(flag)
    local v = args[i + 1]
    if v == nil then cli.usage_error("report: %s needs a value", flag) end
    i = i + 2
    return v
  end
  while i <= #args do
    local a = args[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if flag then a = flag end
    local function val(f)
      if inline then i = i + 1 return inline end
      return value(f)
    end
    if a == "-o" or a == "--output" then
      o.output = val(a)
    elseif a == "--width" then
      o.width = int_arg(cli, a, val(a), 40, 1000)
    elseif a == "--height" then
      o.height = int_arg(cli, a, val(a), 5, 200)
    elseif a == "-w" or a == "--working-directory" then
      o.dir = val(a)
    elseif a == "--json" and not inline then
      o.json = true
      i = i + 1
    elseif a == "--color" and not inline then
      o.color = true
      i = i + 1
    elseif a == "--no-color" and not inline then
      o.color = false
      i = i + 1
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      cli.usage_error("report: unknown option '%s' (see 'beat report --help')", args[i])
    else
      if o.run then cli.usage_error("report: unexpected argument '%s' (one RUN at a time)", a) end
      o.run = a
      i = i + 1
    end
  end
  if o.output then
    local ext = o.output:lower():match("%.([%w]+)$")
    if ext == "htm" then ext = "html" end
    if ext ~= "svg" and ext ~= "html" then
      cli.usage_error("report: -o needs a file ending in .svg or .html, got '%s'", o.output)
    end
    o.format = ext
  end
  return o
end

-- The run directory for RUN: a path to a run directory, or a run of the work tree.
local function run_dir(cli, o)
  local fs = require "beat.fs"
  if o.run and o.run:find("/", 1, true) then
    if not fs.exists(o.run .. "/journal.jsonl") then
      cli.usage_error("report: %s is not a run directory (it has no journal.jsonl)", o.run)
    end
    return o.run, o.run:match("([^/]+)/*$")
  end
  local runs = require "beat.cli.runs"
  local repo, root = runs.work_tree(cli, o.dir)
  local r = runs.find_run(cli, root, o.run, repo)
  if r.journal_gone then
    io.stderr:write(("beat: report: run %s has no journal left (its snapshots are in refs/beat/%s/); nothing to chart\n")
      :format(r.id, r.id))
    return nil
  end
  return r.dir, r.id
end

function M.register(cli)
  cli.command("report", {
    usage = USAGE,
    help = HELP,
    run = function(args)
      local o = parse(cli, args)
      if o.dir and not require("beat.fs").is_dir(o.dir) then
        cli.usage_error("report: working directory %s does not exist", o.dir)
      end
      local dir = run_dir(cli, o)
      if not dir then return 1 end
      local report = require "beat.report"
      local model, err = report.load(dir)
      if not model then
        io.stderr:write("beat: report: ", tostring(err), "\n")
        return 1
      end
      if o.output then
        local data = o.format == "svg" and report.svg(model) or report.html(model)
        local ok, werr = require("beat.fs").write(o.output, data)
        if not ok then cli.usage_error("report: cannot write %s: %s", o.output, tostring(werr)) end
      end
      if o.json then
        io.write(report.json(model), "\n")
      elseif o.output then
        print(("wrote %s (%s; %d iteration record%s)"):format(o.output, o.format, #model.iterations,
          #model.iterations == 1 and "" or "s"))
      else
        local rt = require "beat._runtime"
        local tty = rt.isatty(1)
        local color = o.color
        if color == nil then
          local nc = os.getenv("NO_COLOR")
          color = tty and (nc == nil or nc == "") and os.getenv("TERM") ~= "dumb"
        end
        local width = o.width
        if not width then
          local cols = math.tointeger(tonumber(os.getenv("COLUMNS") or ""))
          width = tty and cols and cols >= 40 and math.min(cols, 1000) or 80
        end
        io.write(report.terminal(model, { width = width, height = o.height, color = color }))
      end
      return 0
    end,
  })
end

return M
