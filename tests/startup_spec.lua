-- What beat does at start: its Lua embedded as bytecode (tools/embed.c),
-- the CLI loading a command's module only when that command runs, and
-- libgit2 initialised without what only a remote would use: the system's CA
-- bundle, libssh2's start, HAVEGE entropy (engine/git/init.c), Kerberos
-- loaded only when libgit2 first calls it (engine/git/gss.c).
local beat = require "beat"
local H = require "tests.helpers"

-- A copy of beat's Lua tree in which each module of `poisoned` raises
-- "<module> was loaded" when loaded; run beat on it with BEAT_LUA_PATH.
local function poisoned_tree(poisoned)
  local dir = H.tmpdir()
  assert(beat.exec { "cp", "-r", H.root .. "/lua", H.root .. "/strategies", dir })
  for _, name in ipairs(poisoned) do
    local path = dir .. "/lua/" .. name:gsub("%.", "/")
    path = beat.fs.is_dir(path) and path .. "/init.lua" or path .. ".lua"
    assert(beat.fs.read(path), path)
    H.write(path, ("error(%q)\n"):format(name .. " was loaded"))
  end
  return dir
end

-- What `beat version` or `beat help` never needs.
local HEAVY = { "beat.cli.loop", "beat.cli.loop_flags", "beat.cli.runs", "beat.cli.show", "beat.cli.restore",
  "beat.cli.control", "beat.cli.clean", "beat.cli.agents", "beat.cli.report", "beat.cli.mcp", "beat.cli.repl",
  "beat.journal", "beat.redact", "beat.runs", "beat.runs.status", "beat.runs.control", "beat.loop",
  "beat.report", "beat.mcp.server", "beat.ui", "beat.git", "beat.agent" }

describe("beat's start", function()
  it("beat version, beat help, beat --help and a mistyped command load no command module", function()
    local dir = poisoned_tree(HEAVY)
    local env = { env = { BEAT_LUA_PATH = dir } }
    local r = H.beat({ "version" }, env)
    assert.equal(0, r.code, r.stderr)
    assert.matches("^beat %d+%.%d+%.%d+", r.stdout)
    local help = H.beat({ "help" }, { env = { BEAT_LUA_PATH = false } }).stdout
    r = H.beat({ "help" }, env)
    assert.equal(0, r.code, r.stderr)
    assert.equal(help, r.stdout)
    r = H.beat({ "--help" }, env)
    assert.equal(0, r.code, r.stderr)
    assert.equal(help, r.stdout)
    r = H.beat({ "frobnicate" }, env)
    assert.equal(2, r.code)
    assert.equal("beat: unknown command 'frobnicate' (see 'beat help')\n", r.stderr)
    -- the poison works: a command's help loads that command's module
    r = H.beat({ "help", "show" }, env)
    assert.equal(1, r.code)
    assert.matches("beat.cli.show was loaded", r.stderr, 1, true)
  end)

  it("beat help COMMAND and COMMAND --help load that command's module only", function()
    local poisoned = {}
    for _, m in ipairs(HEAVY) do
      if m ~= "beat.cli.runs" and m ~= "beat.runs.status" then poisoned[#poisoned + 1] = m end
    end
    local dir = poisoned_tree(poisoned)
    local want = H.beat({ "help", "runs" }, { env = { BEAT_LUA_PATH = false } }).stdout
    assert.matches("^Usage: beat runs", want)
    for _, args in ipairs { { "help", "runs" }, { "runs", "--help" } } do
      local r = H.beat(args, { env = { BEAT_LUA_PATH = dir } })
      assert.equal(0, r.code, r.stderr)
      assert.equal(want, r.stdout)
    end
  end)

  it("an error in beat's embedded Lua names its [beat]/ file and the source's line, with local names kept", function()
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, [[
      local beat = require "beat"
      local _, tb = xpcall(beat.duration, debug.traceback, "abc")
      print(tb)
      print("param", debug.getlocal(beat.duration, 1))
      local info = debug.getinfo(require("beat.duration").parse, "S")
      print("defined", info.source, info.linedefined)
    ]])
    local r = H.beat({ "run", recipe }, { env = { BEAT_LUA_PATH = false } })
    assert.equal(0, r.code, r.stderr)
    local src = {}
    for l in (H.read(H.root .. "/lua/beat/init.lua") .. "\n"):gmatch("([^\n]*)\n") do src[#src + 1] = l end
    local line = tonumber(r.stdout:match("%[beat%]/lua/beat/init%.lua:(%d+): in function 'beat%.duration'"))
    assert.truthy(line, r.stdout)
    assert.matches('error%("beat%.duration: ', src[line], 1)
    assert.matches("\nparam\td\n", r.stdout, 1, true)
    local source, defined = r.stdout:match("\ndefined\t(%S+)\t(%d+)")
    assert.equal("@[beat]/lua/beat/duration.lua", source)
    local dsrc = {}
    for l in (H.read(H.root .. "/lua/beat/duration.lua") .. "\n"):gmatch("([^\n]*)\n") do dsrc[#dsrc + 1] = l end
    assert.matches("function", dsrc[tonumber(defined)])
  end)

  it("a syntax error in a Lua file fails the embed step with file:line", function()
    local embed = H.bin:match("^(.*)/[^/]*$") .. "/embed"
    if not beat.fs.read(embed) then pending("no " .. embed .. " beside the binary") return end
    local dir = H.tmpdir()
    assert(beat.fs.mkdir_p(dir .. "/lua/beat"))
    H.write(dir .. "/lua/beat/good.lua", "return 1\n")
    H.write(dir .. "/lua/beat/bad.lua", "local M = {}\nM.x = = 1\nreturn M\n")
    local r = assert(beat.exec({ embed, "lua/beat/good.lua", "lua/beat/bad.lua" }, { cwd = dir }))
    assert.equal(1, r.code)
    assert.matches("^lua/beat/bad%.lua:2: unexpected symbol near '='\n$", r.stderr)
    r = assert(beat.exec({ embed, "lua/beat/good.lua" }, { cwd = dir }))
    assert.equal(0, r.code, r.stderr)
    assert.matches('{"beat.good", "lua/beat/good.lua", bc1, sizeof bc1}', r.stdout, 1, true)
  end)

  it("refuses its embedded bytecode under another Lua release, naming both, and runs from source with BEAT_LUA_PATH", function()
    local cc = beat.exec { "sh", "-c", "command -v cc" }
    if cc.code ~= 0 then pending("no C compiler to build a stand-in Lua library") return end
    -- the lua_ident beat was built with is in its binary (engine/embedded.h)
    local ident = assert(H.read(H.bin):match("%$LuaVersion: [^%z]*"), "no $LuaVersion in " .. H.bin)
    assert.is_nil(ident:find('["\\]'))
    -- the same ident with another last release digit, the same length (beat copies it)
    local other, n = ident:gsub("(Lua %d+%.%d+%.)(%d)", function(p, d) return p .. (d == "9" and "8" or "9") end, 1)
    assert.equal(1, n)
    local dir = H.tmpdir()
    H.write(dir .. "/ident.c", ('const char lua_ident[] = "%s";\n'):format(other))
    local r = assert(beat.exec({ "cc", "-shared", "-fPIC", "-o", "ident.so", "ident.c" }, { cwd = dir }))
    assert.equal(0, r.code, r.stderr)
    -- lua_ident from ident.so wins over liblua's; ASan would refuse a preload before its runtime
    local env = { LD_PRELOAD = dir .. "/ident.so", BEAT_LUA_PATH = false,
      ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":verify_asan_link_order=0" }
    r = H.beat({ "version" }, { env = env })
    assert.equal(1, r.code)
    assert.equal("", r.stdout)
    assert.matches(("beat: the embedded Lua was compiled by %s, but beat runs with %s: rebuild beat")
      :format(ident:match("Lua [%d.]+"), other:match("Lua [%d.]+")), r.stderr, 1, true)
    env.BEAT_LUA_PATH = H.root
    r = H.beat({ "version" }, { env = env })
    assert.equal(0, r.code, r.stderr)
    assert.matches("^beat %d+%.%d+%.%d+", r.stdout)
  end)

  it("opening a repository does not read the system's CA bundle (beat never uses HTTPS)", function()
    local strace = beat.exec { "sh", "-c", "command -v strace" }
    if strace.code ~= 0 then pending("strace is not installed") return end
    local repo = H.git_repo { ["a.txt"] = "a\n" }
    local recipe = H.recipe(H.tmpdir(), ([[
      local repo = assert(require("beat").git.open(%q))
      print("snapshot", assert(repo:snapshot { ref = "t/base" }) ~= nil)
    ]]):format(repo))
    -- (LeakSanitizer cannot run under ptrace: the ASan build's leak check is off here)
    local r = assert(beat.exec({ "strace", "-f", "-e", "trace=openat,open,stat,newfstatat,statx", H.bin, "run", recipe },
      { env = { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":detect_leaks=0" } }))
    assert.equal(0, r.code, r.stderr)
    assert.matches("snapshot\ttrue", r.stdout, 1, true)
    -- libgit2 looks for its compiled-in bundle (Debian: /etc/ssl/certs/ca-certificates.crt)
    local bundle = r.stderr:match('stat%w*%([^"]*"([^"]*/certs/[^"]*)"')
    if not bundle then pending("this libgit2 looks for no CA bundle at start") return end
    assert.is_nil(r.stderr:match('open%w*%([^"]*"' .. bundle:gsub("%p", "%%%0") .. '"'), "libgit2 read " .. bundle)
  end)

  it("opening a repository neither starts libssh2's crypto nor uses HAVEGE (beat never uses SSH or TLS)", function()
    if not require("beat.exec").which("gdb") then pending("gdb is not installed") return end
    local repo = H.git_repo { ["a.txt"] = "a\n" }
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, ([[
      local repo = assert(require("beat").git.open(%q))
      print("snapshot", assert(repo:snapshot { ref = "t/base" }) ~= nil)
    ]]):format(repo))
    -- each function prints "reached NAME" when called; libgit2's start called all three
    -- (HAVEGE's first fill, and its poll as a source of the random generator's seed)
    local watched = { "_libssh2_openssl_crypto_init", "havege_fill", "mbedtls_havege_poll" }
    local script = {}
    for _, fn in ipairs(watched) do
      script[#script + 1] = ("break %s\ncommands\nsilent\necho reached %s\\n\ncontinue\nend"):format(fn, fn)
    end
    script[#script + 1] = "run"
    H.write(dir .. "/gdb.cmd", table.concat(script, "\n") .. "\n")
    -- (LeakSanitizer cannot run under ptrace: the ASan build's leak check is off here)
    local r = assert(beat.exec({ "gdb", "-batch", "-nx", "-x", dir .. "/gdb.cmd", "--args", H.bin, "run", recipe },
      { env = { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":detect_leaks=0" } }))
    local out = r.stdout .. r.stderr
    if out:find("ptrace", 1, true) and not out:find("snapshot\ttrue", 1, true) then
      pending("gdb cannot trace here: " .. out:sub(1, 200)) return
    end
    for i, fn in ipairs(watched) do   -- gdb found each function, so a call would be seen
      assert.matches(("Breakpoint %d at 0x"):format(i), out, 1, true)
    end
    assert.matches("snapshot\ttrue", out, 1, true)
    for _, fn in ipairs(watched) do assert.is_nil(out:find("reached " .. fn, 1, true), fn .. " ran") end
  end)

  it("opening a repository loads no Kerberos library; libgit2's first GSSAPI call loads it and is passed on", function()
    local repo = H.git_repo { ["a.txt"] = "a\n" }
    local dir = H.tmpdir()
    local recipe = H.recipe(dir, ([[
      local repo = assert(require("beat").git.open(%q))
      print("snapshot", assert(repo:snapshot { ref = "t/base" }) ~= nil)
      for line in io.lines("/proc/self/maps") do
        local lib = line:match("/(lib[%%w_]*krb5[^/]*)$") or line:match("/(libgssapi[^/]*)$")
        if lib then print("mapped", lib) end
      end
    ]]):format(repo))
    local r = H.beat({ "run", recipe })
    assert.equal(0, r.code, r.stderr)
    assert.matches("snapshot\ttrue", r.stdout, 1, true)
    assert.is_nil(r.stdout:match("mapped\t[^\n]*"))

    -- the forwarding: at beat's end, gdb calls two of the functions libgit2
    -- calls, and compares the name type's OID with the library's own
    if not require("beat.exec").which("gdb") then pending("gdb is not installed") return end
    H.write(dir .. "/gdb.cmd", [[
set pagination off
break lua_close
run
set $minor = (unsigned int *) malloc(4)
set $set = (void **) malloc(8)
printf "indicate_mechs %u mechs %lu\n", (unsigned int) gss_indicate_mechs($minor, $set), *(unsigned long *) *$set
printf "release_oid_set %u\n", (unsigned int) gss_release_oid_set($minor, $set)
set $theirs = *(gss_OID_desc **) ((void *(*)(void *, const char *)) dlsym)('gss.c'::library, "GSS_C_NT_HOSTBASED_SERVICE")
printf "oid %u %u %d\n", $theirs->length, GSS_C_NT_HOSTBASED_SERVICE->length, (int) memcmp($theirs->elements, GSS_C_NT_HOSTBASED_SERVICE->elements, $theirs->length)
kill
]])
    -- (LeakSanitizer cannot run under ptrace: the ASan build's leak check is off here)
    r = assert(beat.exec({ "gdb", "-batch", "-nx", "-x", dir .. "/gdb.cmd", "--args", H.bin, "run", recipe },
      { env = { ASAN_OPTIONS = (os.getenv("ASAN_OPTIONS") or "") .. ":detect_leaks=0" } }))
    local out = r.stdout .. r.stderr
    if out:find("ptrace", 1, true) and not out:find("snapshot\ttrue", 1, true) then
      pending("gdb cannot trace here: " .. out:sub(1, 200)) return
    end
    local status, mechs = out:match("indicate_mechs (%d+) mechs (%d+)")
    assert.equal("0", status, out)              -- GSS_S_COMPLETE, from the library's own
    assert.is_true(tonumber(mechs) >= 1, out)   -- krb5's mechanisms at least
    assert.matches("release_oid_set 0\n", out, 1, true)
    assert.matches("oid 10 10 0\n", out, 1, true)
  end)
end)
