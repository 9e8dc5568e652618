/*
 * runtime.c: the one Lua state: its allocator and panic, beat's module
 * searcher over the embedded Lua (bytecode), the preloaded C modules, and
 * protected calls with a traceback (beat_pcall, beat_call_ref). The loop
 * primitives Lua sees as beat._runtime are in uv.c.
 *
 * One Lua state, one libuv loop (uv_default_loop).
 */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include <lualib.h>

#include "embedded.h"
#include "runtime.h"

static char exe_path[PATH_MAX];

const char *beat_exe_path(void)
{
    return exe_path;
}

uv_loop_t *beat_loop(lua_State *L)
{
    (void)L;
    return uv_default_loop();
}

/* The main thread: libuv callbacks run Lua on it, never on a coroutine. */
lua_State *beat_main_thread(lua_State *L)
{
    lua_State *main;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    main = lua_tothread(L, -1);
    lua_pop(L, 1);
    return main;
}

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL && !lua_isnoneornil(L, 1)) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* lua_pcall with a traceback handler; on error leaves the message with its
 * traceback on the stack, like lua.c's docall. */
int beat_pcall(lua_State *L, int nargs, int nresults)
{
    int base = lua_gettop(L) - nargs;
    int status;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

/* Calls the function anchored at ref with the nargs values on top of the
 * stack. An error here is a bug in beat's own Lua (task code catches its
 * own errors), so it is reported on stderr and the loop goes on. */
void beat_call_ref(lua_State *L, int ref, int nargs)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_insert(L, -(nargs + 1));
    if (beat_pcall(L, nargs, 0) != LUA_OK) {
        fprintf(stderr, "beat: internal error in callback: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
}

/* ---- module loading ------------------------------------------------------ */

static const beat_embedded *find_embedded(const char *name)
{
    for (const beat_embedded *e = beat_embedded_modules; e->module != NULL; e++)
        if (strcmp(e->module, name) == 0)
            return e;
    return NULL;
}

/* "Lua 5.4.4" out of a lua_ident ("$LuaVersion: Lua 5.4.4  Copyright ..."). */
static const char *lua_release(lua_State *L, const char *ident)
{
    const char *p = strstr(ident, "Lua ");
    size_t n;
    if (p == NULL)
        return lua_pushstring(L, ident);
    n = strspn(p + 4, "0123456789.");
    return lua_pushlstring(L, p, 4 + n);
}

/* Searcher for beat's own Lua: the bytecode embedded at build time, or the
 * source in the tree named by BEAT_LUA_PATH (development without a
 * rebuild). Lua does not verify bytecode, so the embedded chunks load only
 * into the Lua library release that compiled them; another one (the
 * library upgraded under the binary) is an error naming both, as beat
 * cannot run without its Lua. */
static int searcher(lua_State *L)
{
    const char *name = luaL_checkstring(L, 1);
    const beat_embedded *e = find_embedded(name);
    const char *root = getenv("BEAT_LUA_PATH");
    if (e == NULL) {
        lua_pushfstring(L, "no embedded module '%s'", name);
        return 1;
    }
    if (root != NULL && *root != '\0') {
        const char *file = lua_pushfstring(L, "%s/%s", root, e->path);
        if (luaL_loadfile(L, file) != LUA_OK)
            return lua_error(L);
        lua_pushstring(L, file);
        return 2;
    }
    if (strcmp(beat_embedded_lua, lua_ident) != 0)
        return luaL_error(L, "the embedded Lua was compiled by %s, but beat runs with %s: "
                          "rebuild beat (or set BEAT_LUA_PATH to its source tree)",
                          lua_release(L, beat_embedded_lua), lua_release(L, lua_ident));
    lua_pushfstring(L, "@[beat]/%s", e->path);
    if (luaL_loadbufferx(L, (const char *)e->chunk, e->size, lua_tostring(L, -1), "b") != LUA_OK)
        return lua_error(L);
    lua_pushfstring(L, "[beat]/%s", e->path);
    return 2;
}

static void install_searcher(lua_State *L)
{
    lua_Integer n;
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "searchers");
    n = (lua_Integer)luaL_len(L, -1);
    for (lua_Integer i = n; i >= 2; i--) { /* make room at position 2 */
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, searcher);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 1);

    lua_getfield(L, -1, "preload");
#define BEAT_MODULE(name, opener) lua_pushcfunction(L, opener), lua_setfield(L, -2, name);
#include "modules.h"
#undef BEAT_MODULE
    lua_pop(L, 2);
}

int beat_thread_start(pthread_t *t, void *(*fn)(void *), void *arg)
{
    sigset_t all, old;
    int rc;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);  /* the new thread inherits it */
    rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

static void *l_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    return realloc(ptr, nsize);
}

static int l_panic(lua_State *L)
{
    fprintf(stderr, "beat: unprotected Lua error: %s\n", lua_tostring(L, -1));
    return 0;
}

/* Creates the one Lua state: standard libraries, beat's searcher and the
 * preloaded C modules, the global `arg` table, and beat as a subreaper. */
lua_State *beat_new_state(int argc, char **argv)
{
    size_t len = sizeof exe_path;
    lua_State *L = lua_newstate(l_alloc, NULL);
    if (L == NULL)
        return NULL;
    lua_atpanic(L, l_panic);
    if (uv_exepath(exe_path, &len) != 0)
        snprintf(exe_path, sizeof exe_path, "%s", argv[0]);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    signal(SIGPIPE, SIG_IGN);
    luaL_openlibs(L);
    /* generational: a long run's garbage is mostly young (records, results),
     * and the heap's peak stays near what is live instead of twice it */
    lua_gc(L, LUA_GCGEN, 0, 0);
    beat_track_coroutines(L);
    install_searcher(L);
    lua_createtable(L, argc, 1);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i);
    }
    lua_setglobal(L, "arg");
    return L;
}

/* Closes the state (running every __gc, which closes handles) and lets the
 * loop run the close callbacks that free handle memory. The repositories
 * closed now hand their watches to the kernel (git/watch.c). */
void beat_close_state(lua_State *L)
{
    uv_loop_t *loop = beat_loop(L);
    beat_interrupts_close();
    beat_git_ending();
    lua_close(L);
    uv_run(loop, UV_RUN_NOWAIT);
    uv_loop_close(loop);
}
