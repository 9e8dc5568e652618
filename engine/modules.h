/*
 * The C modules preloaded into every Lua state: BEAT_MODULE(name, opener).
 * Internal modules start with an underscore; their public faces are Lua
 * modules under lua/beat/.
 */
BEAT_MODULE("beat._runtime", luaopen_beat__runtime)
BEAT_MODULE("beat._exec", luaopen_beat__exec)
BEAT_MODULE("beat._fs", luaopen_beat__fs)
BEAT_MODULE("beat._git", luaopen_beat__git)
BEAT_MODULE("beat._readline", luaopen_beat__readline)
BEAT_MODULE("beat._stdio", luaopen_beat__stdio)
BEAT_MODULE("beat._proc", luaopen_beat__proc)
BEAT_MODULE("cjson", luaopen_cjson)
