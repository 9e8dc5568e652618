/*
 * uv.c: the beat._runtime module, the loop primitives the Lua scheduler in
 * lua/beat/task.lua is built on: timers, signals, interrupts (SIGINT and
 * SIGTERM, also while Lua is busy), running the loop, clocks, the process.
 *
 * One libuv loop (uv_default_loop). libuv callbacks call Lua on the main
 * thread through beat_call_ref(), always protected.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"

/* ---- timers ------------------------------------------------------------ */

typedef struct {
    uv_timer_t handle;
    lua_State *L;
    int cb_ref;
} beat_timer;

typedef struct {
    beat_timer *t; /* NULL once closed */
} timer_box;

static timer_box *checktimer(lua_State *L)
{
    return luaL_checkudata(L, 1, "beat.timer");
}

static void timer_free(uv_handle_t *h)
{
    free(h->data);
}

static void timer_fire(uv_timer_t *h)
{
    beat_timer *t = h->data;
    int ref = t->cb_ref;
    t->cb_ref = LUA_NOREF;
    if (ref == LUA_NOREF)
        return;
    beat_call_ref(t->L, ref, 0);
    luaL_unref(t->L, LUA_REGISTRYINDEX, ref);
}

static void timer_release(lua_State *L, timer_box *b)
{
    if (b->t == NULL)
        return;
    uv_timer_stop(&b->t->handle);
    luaL_unref(L, LUA_REGISTRYINDEX, b->t->cb_ref);
    b->t->cb_ref = LUA_NOREF;
    uv_close((uv_handle_t *)&b->t->handle, timer_free);
    b->t = NULL;
}

/* timer:start(ms, fn): fn() runs once, no sooner than ms milliseconds from
 * now, unless the timer is stopped or closed first. Restarting replaces the
 * previous callback. */
static int timer_start(lua_State *L)
{
    timer_box *b = checktimer(L);
    double ms = luaL_checknumber(L, 2);
    luaL_checktype(L, 3, LUA_TFUNCTION);
    if (b->t == NULL)
        return luaL_error(L, "timer is closed");
    if (ms < 0)
        ms = 0;
    luaL_unref(L, LUA_REGISTRYINDEX, b->t->cb_ref);
    lua_pushvalue(L, 3);
    b->t->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_update_time(beat_loop(L)); /* count from now, not from the loop's cached time */
    uv_timer_start(&b->t->handle, timer_fire, (uint64_t)ms, 0);
    return 0;
}

static int timer_stop(lua_State *L)
{
    timer_box *b = checktimer(L);
    if (b->t != NULL) {
        uv_timer_stop(&b->t->handle);
        luaL_unref(L, LUA_REGISTRYINDEX, b->t->cb_ref);
        b->t->cb_ref = LUA_NOREF;
    }
    return 0;
}

/* timer:unref(): the timer no longer keeps the loop alive on its own (a
 * spinner redrawn while other work runs); it still fires while the loop
 * runs for something else. */
static int timer_unref(lua_State *L)
{
    timer_box *b = checktimer(L);
    if (b->t != NULL)
        uv_unref((uv_handle_t *)&b->t->handle);
    return 0;
}

static int timer_close(lua_State *L)
{
    timer_release(L, checktimer(L));
    return 0;
}

/* core.timer() -> a stopped one-shot timer; closed by :close() or __gc. */
static int core_timer(lua_State *L)
{
    timer_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->t = NULL;
    luaL_setmetatable(L, "beat.timer");
    b->t = calloc(1, sizeof *b->t);
    if (b->t == NULL)
        return luaL_error(L, "out of memory");
    uv_timer_init(beat_loop(L), &b->t->handle);
    b->t->handle.data = b->t;
    b->t->L = beat_main_thread(L);
    b->t->cb_ref = LUA_NOREF;
    return 1;
}

/* ---- signals ----------------------------------------------------------- */

typedef struct {
    uv_signal_t handle;
    lua_State *L;
    int cb_ref;
} beat_signal;

static void signal_fire(uv_signal_t *h, int signum)
{
    beat_signal *s = h->data;
    lua_pushinteger(s->L, signum);
    beat_call_ref(s->L, s->cb_ref, 1);
}

/* core.on_signal(signum, fn): fn(signum) for every delivery, for the life
 * of the process. The handle does not keep the loop alive. */
static int core_on_signal(lua_State *L)
{
    int signum = (int)luaL_checkinteger(L, 1);
    beat_signal *s;
    luaL_checktype(L, 2, LUA_TFUNCTION);
    s = calloc(1, sizeof *s);
    if (s == NULL)
        return luaL_error(L, "out of memory");
    s->L = beat_main_thread(L);
    lua_pushvalue(L, 2);
    s->cb_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    uv_signal_init(beat_loop(L), &s->handle);
    s->handle.data = s;
    if (uv_signal_start(&s->handle, signal_fire, signum) != 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, s->cb_ref);
        uv_close((uv_handle_t *)&s->handle, timer_free);
        return luaL_error(L, "cannot watch signal %d", signum);
    }
    uv_unref((uv_handle_t *)&s->handle);
    return 0;
}

/* ---- interrupts: SIGINT and SIGTERM --------------------------------------
 *
 * Ctrl-C must work whether beat waits in the loop or Lua is busy and never
 * returns to it (`while true do end` in a recipe, a hook, a score function).
 * The handler (sigaction) records the signal and
 *   - wakes the loop (uv_async_send is async-signal-safe): when the loop is
 *     idle the signal reaches Lua from the loop, between callbacks, like any
 *     other event, and tasks are cancelled at their blocking calls;
 *   - arms a count hook on the thread running Lua (lua_sethook may be called
 *     from a signal handler, as lua.c's laction does). If the signal has not
 *     reached Lua from the loop within INTERRUPT_GRACE_MS, the hook hands it
 *     to Lua right there, inside the busy code: the Lua handler cancels the
 *     tasks and the running task's cancellation is raised at that point, so
 *     pcall handlers, <close> variables and a run's cleanup still run.
 * A signal that arrives while the previous one has not reached Lua (Lua is
 * stuck where no hook runs, in a long C call) ends beat at once: a watchdog
 * thread kills every process below beat and exits with 128 + the signal.
 *
 * Hooks belong to one thread (coroutine), so beat tracks the thread running
 * Lua: coroutine.resume and coroutine.wrap are replaced by versions that
 * record it, the loop records the main thread while it runs callbacks, and
 * a thread resumed while a signal waits is armed too.
 *
 * Signal dispositions belong to the process, so this state is static. */

#define INTERRUPT_GRACE_MS 250   /* the loop's turn to take the signal first */
#define INTERRUPT_HOOK_COUNT 1000 /* instructions between two looks at the clock */

static _Atomic(lua_State *) running_thread; /* the thread running Lua now */
static atomic_int intr_pending;             /* a signal not yet given to Lua, or 0 */
static atomic_llong intr_since;             /* when it arrived (ms, monotonic) */
static atomic_int intr_ready;               /* the loop side is set up */
static atomic_int intr_exit_code;
static sem_t intr_exit_sem;
static uv_async_t intr_async;
static lua_State *intr_L;                   /* main thread, for the loop side */
static int intr_ref = LUA_NOREF;            /* the Lua handler */

static long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void interrupt_hook(lua_State *L, lua_Debug *ar);

/* Records that L runs Lua from now on; arms its hook if a signal waits. */
static void enter_thread(lua_State *L)
{
    atomic_store(&running_thread, L);
    if (atomic_load(&intr_pending) != 0 && atomic_load(&intr_ready))
        lua_sethook(L, interrupt_hook, LUA_MASKCOUNT, INTERRUPT_HOOK_COUNT);
}

/* Gives the waiting signal (if any) to the Lua handler, on thread L. From
 * the loop the call is protected; from the hook it is not, so the handler's
 * error (the running task's cancellation) is raised in the busy code. */
static void interrupt_deliver(lua_State *L, int from_hook)
{
    int sig = atomic_exchange(&intr_pending, 0);
    if (sig == 0 || intr_ref == LUA_NOREF)
        return;
    if (!from_hook) {
        lua_pushinteger(L, sig);
        beat_call_ref(L, intr_ref, 1);
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, intr_ref);
    lua_pushinteger(L, sig);
    lua_call(L, 1, 0);
}

/* The count hook: once the loop had its grace period and the signal still
 * waits, Lua is busy: deliver it here. A hook left on a thread after the
 * signal was delivered removes itself. */
static void interrupt_hook(lua_State *L, lua_Debug *ar)
{
    (void)ar;
    if (atomic_load(&intr_pending) == 0) {
        lua_sethook(L, NULL, 0, 0);
        return;
    }
    if (monotonic_ms() - atomic_load(&intr_since) < INTERRUPT_GRACE_MS)
        return;
    lua_sethook(L, NULL, 0, 0);
    interrupt_deliver(L, 1);
}

static void interrupt_wake(uv_async_t *h)
{
    (void)h;
    interrupt_deliver(intr_L, 0);
}

/* Async-signal-safe: atomics, lua_sethook, uv_async_send, write, sem_post. */
static void interrupt_handler(int sig)
{
    int saved = errno;
    lua_State *L;
    atomic_store(&intr_since, monotonic_ms());
    if (atomic_exchange(&intr_pending, sig) != 0) {
        static const char msg[] = "\nbeat: interrupted again, exiting now\n";
        atomic_store(&intr_exit_code, 128 + sig);
        (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
        sem_post(&intr_exit_sem);
    } else if (atomic_load(&intr_ready)) {
        L = atomic_load(&running_thread);
        if (L != NULL)
            lua_sethook(L, interrupt_hook, LUA_MASKCOUNT, INTERRUPT_HOOK_COUNT);
        uv_async_send(&intr_async);
    }
    errno = saved;
}

/* Ends beat when a signal finds the previous one still undelivered. */
static void *interrupt_watchdog(void *arg)
{
    (void)arg;
    while (sem_wait(&intr_exit_sem) != 0)
        ;
    beat_kill_all_descendants();
    _exit(atomic_load(&intr_exit_code));
    return NULL;
}

/* core.take_interrupt(): gives a signal that arrived but was not handed to
 * Lua yet to the handler now, and says whether there was one. For when the
 * loop is done: its wake-up for the signal may never be seen (a command that
 * the same Ctrl-C ended can finish the main task first). */
static int core_take_interrupt(lua_State *L)
{
    int waiting = atomic_load(&intr_pending) != 0;
    interrupt_deliver(L, 0);
    lua_pushboolean(L, waiting);
    return 1;
}

/* core.on_interrupt(fn): fn(signum) once for every SIGINT or SIGTERM, for
 * the life of the process: from the loop when it is idle, or from inside
 * running Lua when Lua is busy (then an error fn raises is raised there).
 * Only the first call installs anything; later calls replace fn. */
static int core_on_interrupt(lua_State *L)
{
    struct sigaction sa;
    pthread_t tid;
    luaL_checktype(L, 1, LUA_TFUNCTION);
    if (intr_ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, intr_ref);
        lua_pushvalue(L, 1);
        intr_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        return 0;
    }
    if (sem_init(&intr_exit_sem, 0, 0) != 0)
        return luaL_error(L, "cannot watch signals: %s", strerror(errno));
    if (beat_thread_start(&tid, interrupt_watchdog, NULL) != 0) /* it takes no signal */
        return luaL_error(L, "cannot watch signals: cannot start a thread");
    pthread_detach(tid);
    lua_pushvalue(L, 1);
    intr_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    intr_L = beat_main_thread(L);
    uv_async_init(beat_loop(L), &intr_async, interrupt_wake);
    uv_unref((uv_handle_t *)&intr_async);
    atomic_store(&intr_ready, 1);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = interrupt_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    return 0;
}

/* Before the state closes: signals are still counted (a second one still
 * ends beat at once) but no longer reach Lua. */
void beat_interrupts_close(void)
{
    atomic_store(&running_thread, NULL);
    if (!atomic_exchange(&intr_ready, 0))
        return;
    intr_ref = LUA_NOREF;
    uv_close((uv_handle_t *)&intr_async, NULL);
}

/* Calls the library's function (upvalue 1) with the arguments on the
 * stack, recording that co (when not NULL) runs until it yields or ends,
 * and L again afterwards; its errors propagate unchanged. */
static int call_tracked(lua_State *L, lua_State *co)
{
    int status;
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    if (co != NULL)
        enter_thread(co);
    status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    enter_thread(L);
    if (status != LUA_OK)
        return lua_error(L);
    return lua_gettop(L);
}

/* coroutine.resume(co, ...), the library's (upvalue 1), recording that co
 * runs until it yields or ends. */
static int tracked_resume(lua_State *L)
{
    lua_State *co = lua_tothread(L, 1);
    luaL_argexpected(L, co != NULL, 1, "coroutine");
    return call_tracked(L, co);
}

/* A function made by coroutine.wrap: the library's (upvalue 1) for the
 * coroutine upvalue 2, recording that the coroutine runs. */
static int tracked_wrapped(lua_State *L)
{
    return call_tracked(L, lua_tothread(L, lua_upvalueindex(2)));
}

/* coroutine.wrap(f): the library's (upvalue 1), tracked. */
static int tracked_wrap(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TFUNCTION);
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, 1);
    if (lua_getupvalue(L, -1, 1) == NULL) /* the library keeps the thread there */
        lua_pushnil(L);
    lua_pushcclosure(L, tracked_wrapped, 2);
    return 1;
}

/* Replaces coroutine.resume and coroutine.wrap by versions that record the
 * thread running Lua (where an interrupt's hook is armed), and records L. */
void beat_track_coroutines(lua_State *L)
{
    lua_getglobal(L, "coroutine");
    lua_getfield(L, -1, "resume");
    lua_pushcclosure(L, tracked_resume, 1);
    lua_setfield(L, -2, "resume");
    lua_getfield(L, -1, "wrap");
    lua_pushcclosure(L, tracked_wrap, 1);
    lua_setfield(L, -2, "wrap");
    lua_pop(L, 1);
    enter_thread(L);
}

/* ---- loop, clocks, process ---------------------------------------------- */

/* core.run(mode) runs the loop ("default", "once" or "nowait") and returns
 * whether work remains. Only the top level (cli.lua) calls it. Callbacks
 * run Lua on the main thread. */
static int core_run(lua_State *L)
{
    static const char *const modes[] = {"default", "once", "nowait", NULL};
    static const uv_run_mode m[] = {UV_RUN_DEFAULT, UV_RUN_ONCE, UV_RUN_NOWAIT};
    int i = luaL_checkoption(L, 1, "default", modes);
    int more;
    enter_thread(beat_main_thread(L));
    more = uv_run(beat_loop(L), m[i]) != 0;
    enter_thread(L);
    lua_pushboolean(L, more);
    return 1;
}

static int core_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    return 1;
}

static int core_clock(lua_State *L)
{
    lua_pushnumber(L, (double)uv_hrtime() / 1e9);
    return 1;
}

static int core_pid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

/* cpus() -> how many CPUs this process may run on (its affinity mask, as
 * nproc counts them; at least 1). */
static int core_cpus(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)uv_available_parallelism());
    return 1;
}

static int core_exepath(lua_State *L)
{
    lua_pushstring(L, beat_exe_path());
    return 1;
}

/* core.isatty(fd) -> boolean: whether fd is a terminal (colour, redraws). */
static int core_isatty(lua_State *L)
{
    lua_pushboolean(L, isatty((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* core.winsize(fd) -> columns, rows of the terminal on fd; nil, message
 * when fd is not a terminal (or the size is unknown, reported as 0). */
static int core_winsize(lua_State *L)
{
    struct winsize ws;
    int fd = (int)luaL_checkinteger(L, 1);
    if (ioctl(fd, TIOCGWINSZ, &ws) != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    if (ws.ws_col == 0) {
        lua_pushnil(L);
        lua_pushstring(L, "terminal size unknown");
        return 2;
    }
    lua_pushinteger(L, ws.ws_col);
    lua_pushinteger(L, ws.ws_row);
    return 2;
}

/* Kills every process below beat, sweeping again until none is left, so
 * processes forked during a sweep (and children of killed shims, which beat
 * inherits as subreaper) are caught too. Called only on the way out. beat
 * is a subreaper, so every descendant is a child of beat or below one:
 * once the children that already exited are reaped and none is left
 * (ECHILD), there is nothing to sweep and /proc is not read at all. */
void beat_kill_all_descendants(void)
{
    beat_exec_dismiss_warm();
    for (;;) {
        pid_t pid = waitpid(-1, NULL, WNOHANG);
        if (pid > 0 || (pid < 0 && errno == EINTR))
            continue;
        if (pid < 0 && errno == ECHILD)
            return;
        break; /* children are alive */
    }
    for (int i = 0; i < 100; i++)
        if (beat_kill_descendants(getpid(), SIGKILL, 0) == 0)
            return;
}

/* core.exit(code): leaves at once, with no unwinding; every process below
 * beat is killed first so none outlives it. */
static int core_exit(lua_State *L)
{
    int code = (int)luaL_optinteger(L, 1, 0);
    fflush(stdout);
    fflush(stderr);
    beat_kill_all_descendants();
    _exit(code);
    return 0;
}

static const luaL_Reg timer_meth[] = {
    {"start", timer_start},
    {"stop", timer_stop},
    {"unref", timer_unref},
    {"close", timer_close},
    {NULL, NULL}
};

static const luaL_Reg core_funcs[] = {
    {"timer", core_timer},
    {"on_signal", core_on_signal},
    {"on_interrupt", core_on_interrupt},
    {"take_interrupt", core_take_interrupt},
    {"run", core_run},
    {"now", core_now},
    {"clock", core_clock},
    {"pid", core_pid},
    {"cpus", core_cpus},
    {"exepath", core_exepath},
    {"isatty", core_isatty},
    {"winsize", core_winsize},
    {"exit", core_exit},
    {NULL, NULL}
};

int luaopen_beat__runtime(lua_State *L)
{
    luaL_newmetatable(L, "beat.timer");
    luaL_newlib(L, timer_meth);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, timer_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, timer_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);

    luaL_newlib(L, core_funcs);
    lua_newtable(L);
#define SIG(name) lua_pushinteger(L, name), lua_setfield(L, -2, #name)
    SIG(SIGINT); SIG(SIGTERM); SIG(SIGKILL); SIG(SIGHUP); SIG(SIGQUIT);
    SIG(SIGUSR1); SIG(SIGUSR2); SIG(SIGPIPE); SIG(SIGALRM); SIG(SIGCONT);
    SIG(SIGSTOP); SIG(SIGSEGV); SIG(SIGABRT); SIG(SIGWINCH);
    SIG(SIGILL); SIG(SIGTRAP); SIG(SIGBUS); SIG(SIGFPE); SIG(SIGXCPU); SIG(SIGXFSZ);
#undef SIG
    lua_setfield(L, -2, "signals");
    lua_pushstring(L, uv_version_string());
    lua_setfield(L, -2, "uv_version");
    return 1;
}
