-- What beat does at start: libgit2 initialised without the system's CA
-- bundle (engine/git/init.c).
local beat = require "beat"
local H = require "tests.helpers"

describe("beat's start", function()
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
end)
