/*
 * readline.c: line editing for `beat repl`, driven by the event loop.
 *
 * GNU readline's callback interface reads stdin only when uv_poll says a
 * key is waiting, so tasks started from earlier lines keep running while
 * the user types, and Ctrl-C arrives as an ordinary libuv signal.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <readline/history.h>
#include <readline/readline.h>

#include "runtime.h"

typedef struct {
    uv_poll_t poll;
    lua_State *L;
    int on_line_ref; /* LUA_NOREF while no prompt is shown */
    int active;
} editor;

static editor *ed; /* readline's callbacks carry no user data */

static void on_line(char *line)
{
    lua_State *L = ed->L;
    int ref = ed->on_line_ref;
    rl_callback_handler_remove();
    uv_poll_stop(&ed->poll);
    ed->active = 0;
    ed->on_line_ref = LUA_NOREF;
    if (line == NULL)
        lua_pushnil(L);
    else
        lua_pushstring(L, line);
    free(line);
    beat_call_ref(L, ref, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)events;
    if (status == 0)
        rl_callback_read_char();
}

/* readline.prompt(text, fn) -> true | nil, err: shows the prompt; fn(line)
 * runs once with the line, or nil at end of input (Ctrl-D). Fails when
 * standard input cannot be polled (a regular file). */
static int ed_prompt(lua_State *L)
{
    const char *prompt = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (ed == NULL) {
        ed = calloc(1, sizeof *ed);
        if (ed == NULL)
            return luaL_error(L, "out of memory");
        int rc;
        ed->L = beat_main_thread(L);
        ed->on_line_ref = LUA_NOREF;
        rc = uv_poll_init(beat_loop(L), &ed->poll, STDIN_FILENO);
        if (rc != 0) { /* a regular file or /dev/null cannot be polled */
            free(ed);
            ed = NULL;
            lua_pushnil(L);
            lua_pushfstring(L, "cannot watch standard input: %s", uv_strerror(rc));
            return 2;
        }
        rl_catch_signals = 0;
        rl_catch_sigwinch = 1;
    }
    if (ed->active)
        return luaL_error(L, "a prompt is already shown");
    lua_pushvalue(L, 2);
    ed->on_line_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ed->active = 1;
    rl_callback_handler_install(prompt, on_line);
    uv_poll_start(&ed->poll, UV_READABLE, on_readable);
    lua_pushboolean(L, 1);
    return 1;
}

/* readline.interrupt(): Ctrl-C at the prompt drops the line being typed
 * and shows a fresh prompt. */
static int ed_interrupt(lua_State *L)
{
    (void)L;
    if (ed != NULL && ed->active) {
        rl_free_line_state();
        rl_callback_sigcleanup();
        rl_replace_line("", 0);
        fputs("^C\n", stdout);
        rl_on_new_line();
        rl_redisplay();
    }
    return 0;
}

static int ed_add_history(lua_State *L)
{
    add_history(luaL_checkstring(L, 1));
    return 0;
}

static int ed_read_history(lua_State *L)
{
    read_history(luaL_checkstring(L, 1));
    return 0;
}

static int ed_write_history(lua_State *L)
{
    lua_pushboolean(L, write_history(luaL_checkstring(L, 1)) == 0);
    return 1;
}

static void editor_free(uv_handle_t *h)
{
    free(h); /* the poll handle is the editor's first member */
}

/* readline.close(): restores the terminal and releases the poll handle. */
static int ed_close(lua_State *L)
{
    if (ed == NULL)
        return 0;
    if (ed->active)
        rl_callback_handler_remove();
    luaL_unref(L, LUA_REGISTRYINDEX, ed->on_line_ref);
    ed->poll.data = ed;
    uv_close((uv_handle_t *)&ed->poll, editor_free);
    ed = NULL;
    return 0;
}

static const luaL_Reg funcs[] = {
    {"prompt", ed_prompt},
    {"interrupt", ed_interrupt},
    {"add_history", ed_add_history},
    {"read_history", ed_read_history},
    {"write_history", ed_write_history},
    {"close", ed_close},
    {NULL, NULL}
};

int luaopen_beat__readline(lua_State *L)
{
    luaL_newlib(L, funcs);
    return 1;
}
