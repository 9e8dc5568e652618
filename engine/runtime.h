/*
 * Private declarations shared by the C half of beat's runtime.
 * Nothing here is visible to Lua except through the luaopen_* functions.
 */
#ifndef BEAT_RUNTIME_H
#define BEAT_RUNTIME_H

#include <sys/types.h>
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

#include "shim.h" /* BEAT_SIG_KILLALL, the shim, the /proc walk */

#define BEAT_MODULE(name, opener) int opener(lua_State *L);
#include "modules.h"
#undef BEAT_MODULE

/* runtime.c */
lua_State *beat_new_state(int argc, char **argv);
void beat_close_state(lua_State *L);
uv_loop_t *beat_loop(lua_State *L);
lua_State *beat_main_thread(lua_State *L);
int beat_pcall(lua_State *L, int nargs, int nresults);
void beat_call_ref(lua_State *L, int ref, int nargs);
const char *beat_exe_path(void);

/* shim.c */
int beat_shim_main(int argc, char **argv);

/* proctree.c */
int beat_kill_descendants(pid_t root, int sig, pid_t skip_group);
int beat_live_children(pid_t parent);
void beat_kill_all_descendants(void);

#endif
