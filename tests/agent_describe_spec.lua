-- agent:describe(): what run_start records about an agent.
local beat = require "beat"

local function tmp_entries(prefix)
  local n = 0
  for _, name in ipairs(beat.fs.list(os.getenv("TMPDIR") or "/tmp") or {}) do
    if name:sub(1, #prefix) == prefix then n = n + 1 end
  end
  return n
end

describe("agent:describe", function()
  it("gives a CLI agent's name, program, argv template and plain options", function()
    local d = beat.agent.claude { model = "sonnet", max_turns = 5, extra_args = { "--x" } }:describe()
    assert.equal("claude", d.name)
    assert.equal("claude", d.program)
    assert.same({ "claude", "-p", "--output-format", "stream-json", "--verbose",
      "--permission-mode", "acceptEdits", "--model", "sonnet", "--max-turns", "5", "--x" }, d.argv)
    assert.equal("stdin", d.prompt_via)
    assert.same({ model = "sonnet", max_turns = 5 }, d.options)
  end)

  it("marks where the prompt goes and leaves no temporary prompt file behind", function()
    local before = tmp_entries("beat-aider")
    local d = beat.agent.aider { model = "gpt" }:describe()
    assert.equal("file", d.prompt_via)
    assert.equal("{prompt_file}", d.argv[3])
    assert.equal(before, tmp_entries("beat-aider"))
    d = beat.agent.command { argv = { "my-agent", "--task={prompt}" }, env = { A = "1" } }:describe()
    assert.same({ "my-agent", "--task={prompt}" }, d.argv)
    assert.equal("arg", d.prompt_via)
    assert.same({ A = "1" }, d.env)
  end)

  it("gives an in-process agent's name and options only, never code", function()
    local d = beat.agent.fn { fn = function() end, name = "mine", timeout = 5 }:describe()
    assert.equal("mine", d.name)
    assert.is_nil(d.program)
    assert.is_nil(d.argv)
    assert.same({ name = "mine", timeout = 5 }, d.options)
  end)
end)
