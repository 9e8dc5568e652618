/*
 * main.c: boot. Either become a process shim (`beat __shim`, the fallback
 * of the shim embedded in beat, see exec.c and shim.c), or create the
 * Lua state and hand argv to the CLI written in Lua (lua/beat/cli.lua),
 * whose return value is the exit status.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

int main(int argc, char **argv)
{
    lua_State *L;
    int status;

    if (argc > 1 && strcmp(argv[1], "__shim") == 0)
        return beat_shim_main(argc - 1, argv + 1);

    L = beat_new_state(argc, argv);
    if (L == NULL) {
        fprintf(stderr, "beat: cannot create Lua state: out of memory\n");
        return 1;
    }
    lua_getglobal(L, "require");
    lua_pushliteral(L, "beat.cli");
    if (beat_pcall(L, 1, 1) != LUA_OK) {
        fprintf(stderr, "beat: %s\n", lua_tostring(L, -1));
        status = 1;
    } else {
        lua_getfield(L, -1, "main");
        lua_getglobal(L, "arg");
        if (beat_pcall(L, 1, 1) != LUA_OK) {
            fprintf(stderr, "beat: %s\n", lua_tostring(L, -1));
            status = 1;
        } else {
            status = (int)luaL_optinteger(L, -1, 0);
        }
    }
    fflush(stdout);
    beat_kill_all_descendants();
    beat_close_state(L);
    return status;
}
