/*
 * exec.c: child processes for beat.exec and beat.spawn (lua/beat/exec.lua
 * holds the policy: argument checks, PATH lookup, environment, timeouts).
 *
 * Every command runs under the shim (shim.c) in a session of its own,
 * started from the copy embedded in beat's binary (see shim_file below).
 * Output is captured here, in C, so a command printing gigabytes costs
 * beat a bounded amount of memory: "capture" keeps the first and last
 * max/2 bytes, "file" hands the child the file itself, "lines" calls a Lua
 * function per line, "ignore" sends the stream to /dev/null.
 *
 * The shim is started with posix_spawn, which glibc implements with
 * clone(CLONE_VM | CLONE_VFORK): no copy of beat's page tables and no
 * copy-on-write faults afterwards, where libuv's uv_spawn forks. The shim
 * reports the command's pid and fate on fd 3 and exits; end of file on
 * that pipe means the shim is gone, and beat reaps it then (waitpid on its
 * pid only: libuv never reaps here, and beat installs no SIGCHLD handler).
 *
 * A proc completes when the shim has been reaped and every pipe has
 * reached end of file; then on_exit(result) runs once, and the memory is
 * freed in the last uv_close callback.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime.h"
#include "shim.h"

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

extern char **environ;

/* ---- the shim ------------------------------------------------------------
 * Commands start through the helper built from shim.c and proctree.c
 * alone (linked with libc only) and embedded in beat's binary: written once
 * per beat process into a sealed memfd and executed as /proc/self/fd/N.
 * Starting it costs one exec of a small static binary, where `beat __shim`
 * (the same code in beat's own binary) costs the dynamic loader mapping
 * every library beat links. That remains the fallback where the memfd
 * cannot be executed (no memfd_create, vm.memfd_noexec=2, no /proc, a
 * security policy): a probe run of the helper decides, once per process.
 * BEAT_SHIM=binary in beat's environment forces the fallback (for tests
 * and diagnosis). */

static char shim_path[64];

/* Writes the embedded helper into a sealed, close-on-exec memfd at fd 10
 * or above (libuv's child replaces fds 0-3 before it execs the shim) and
 * returns its /proc path, or NULL if it cannot be created or run. */
static const char *embedded_shim(void)
{
    const char *force = getenv("BEAT_SHIM");
    char *probe_argv[] = {"beat-shim", "probe", NULL};
    size_t done = 0;
    pid_t pid;
    int fd, high, status = -1;

    if (force != NULL && strcmp(force, "binary") == 0)
        return NULL;
    fd = memfd_create("beat-shim", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (fd < 0 && errno == EINVAL) /* a kernel before 6.3 knows no MFD_EXEC */
        fd = memfd_create("beat-shim", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return NULL;
    while (done < beat_shim_blob_size) {
        ssize_t w = write(fd, beat_shim_blob + done, beat_shim_blob_size - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return NULL;
        }
        done += (size_t)w;
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    high = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    if (high < 0)
        return NULL;
    snprintf(shim_path, sizeof shim_path, "/proc/self/fd/%d", high);
    if (posix_spawn(&pid, shim_path, NULL, NULL, probe_argv, environ) == 0)
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
        close(high);
        return NULL;
    }
    return shim_path;
}

/* The file to start the shim from, and whether it takes beat's "__shim"
 * argument: the embedded helper, else beat's own binary. */
static const char *shim_file(int *is_beat)
{
    static const char *file;
    static int tried;
    if (!tried) {
        tried = 1;
        file = embedded_shim();
    }
    *is_beat = file == NULL;
    return file != NULL ? file : beat_exe_path();
}

static proc **checkproc(lua_State *L)
{
    return luaL_checkudata(L, 1, "beat.proc");
}

static void handle_closed(uv_handle_t *h)
{
    proc *p = h->data;
    if (--p->handles == 0) {
        free(p->out.head);
        free(p->out.tail);
        free(p->out.line);
        free(p->err.head);
        free(p->err.tail);
        free(p->err.line);
        free(p->cb_error);
        free(p);
    }
}

static void close_handle(proc *p, uv_handle_t *h)
{
    h->data = p;
    p->handles++;
    uv_close(h, handle_closed);
}

/* Finds "key N" among the shim's report lines. */
static int report_value(const char *report, const char *key, int *out)
{
    size_t klen = strlen(key);
    for (const char *line = report; line != NULL && *line != '\0';) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ' ') {
            *out = atoi(line + klen + 1);
            return 1;
        }
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return 0;
}

/* Runs on_exit(result) once the shim has exited and all pipes are drained. */
void exec_maybe_complete(proc *p)
{
    lua_State *L = p->L;
    int on_exit = p->on_exit_ref;
    if (!p->exited || p->out.open || p->err.open || p->status_open || on_exit == LUA_NOREF)
        return;
    p->on_exit_ref = LUA_NOREF;

    lua_createtable(L, 0, 8);
    {
        int code = -1, sig = 0, err = 0;
        if (report_value(p->report, "exit", &code)) {
        } else if (report_value(p->report, "signal", &sig)) {
            code = 128 + sig;
        } else if (report_value(p->report, "error", &err)) {
            code = 127;
        } else if (p->term_signal != 0) { /* the shim itself was killed */
            sig = p->term_signal;
            code = 128 + sig;
        } else {
            code = (int)p->exit_status;
        }
        lua_pushinteger(L, code);
        lua_setfield(L, -2, "code");
        lua_pushinteger(L, sig);
        lua_setfield(L, -2, "signal");
        if (err != 0) {
            lua_pushstring(L, strerror(err));
            lua_setfield(L, -2, "exec_error");
        }
    }
    exec_push_captured(L, &p->out);
    lua_setfield(L, -2, "stdout");
    exec_push_captured(L, &p->err);
    lua_setfield(L, -2, "stderr");
    lua_pushboolean(L, (p->out.mode == OUT_CAPTURE && p->out.total > p->out.max) ||
                       (p->err.mode == OUT_CAPTURE && p->err.total > p->err.max));
    lua_setfield(L, -2, "truncated");
    lua_pushinteger(L, (lua_Integer)p->out.total);
    lua_setfield(L, -2, "stdout_bytes");
    lua_pushinteger(L, (lua_Integer)p->err.total);
    lua_setfield(L, -2, "stderr_bytes");
    if (p->cb_error != NULL) {
        lua_pushstring(L, p->cb_error);
        lua_setfield(L, -2, "callback_error");
    }

    *p->box = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, p->self_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, p->out.fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, p->err.fn_ref);
    p->handles = 1; /* held until every close below is queued */
    if (p->reap_timer_on)
        close_handle(p, (uv_handle_t *)&p->reap_timer);
    if (p->in_open)
        close_handle(p, (uv_handle_t *)&p->in);
    if (p->out.mode == OUT_CAPTURE || p->out.mode == OUT_LINES)
        close_handle(p, (uv_handle_t *)&p->out.pipe);
    if (p->err.mode == OUT_CAPTURE || p->err.mode == OUT_LINES)
        close_handle(p, (uv_handle_t *)&p->err.pipe);
    close_handle(p, (uv_handle_t *)&p->status);
    beat_call_ref(L, on_exit, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, on_exit);
    p->handles--;
    if (p->handles == 0) /* cannot happen: the status pipe's close is pending */
        free(p);
}

/* The shim is gone: its status and whether it was hard-killed decide. */
static void shim_exited(proc *p, int status)
{
    if (p->abandoned) { /* hard-killed: stop waiting for pipes held by orphans */
        if (p->out.open)
            uv_read_stop((uv_stream_t *)&p->out.pipe);
        if (p->err.open)
            uv_read_stop((uv_stream_t *)&p->err.pipe);
        p->out.open = p->err.open = 0;
    }
    p->exited = 1;
    if (status < 0) { /* reaped elsewhere (beat's exit sweep): the report decides */
        p->exit_status = -1;
    } else if (WIFSIGNALED(status)) {
        p->term_signal = WTERMSIG(status);
    } else {
        p->exit_status = WEXITSTATUS(status);
    }
    exec_maybe_complete(p);
}

/* Reaps the shim once its status pipe has closed, which it does only by
 * exiting. Returns 0 while it has not quite finished exiting. */
static int reap(proc *p)
{
    int status;
    pid_t r;
    do
        r = waitpid(p->pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    shim_exited(p, r == p->pid ? status : -1);
    return 1;
}

static void on_reap_timer(uv_timer_t *t)
{
    proc *p = t->data;
    if (!p->exited && reap(p))
        uv_timer_stop(t);
}

/* The status pipe reached end of file: the shim is exiting or gone. */
static void status_closed(proc *p)
{
    if (p->exited || reap(p))
        return;
    uv_timer_init(beat_loop(p->L), &p->reap_timer);
    p->reap_timer.data = p;
    p->reap_timer_on = 1;
    uv_timer_start(&p->reap_timer, on_reap_timer, 1, 1);
}

static void on_status(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    proc *p = h->data;
    if (nread > 0) {
        size_t room = sizeof p->report - 1 - p->report_len;
        size_t k = (size_t)nread < room ? (size_t)nread : room;
        memcpy(p->report + p->report_len, buf->base, k);
        p->report_len += k;
        p->report[p->report_len] = '\0';
        if (p->cmd_pid == 0) {
            int pid;
            if (report_value(p->report, "pid", &pid))
                p->cmd_pid = (pid_t)pid;
        }
    }
    if (nread < 0) {
        uv_read_stop(h);
        p->status_open = 0;
        status_closed(p);
    }
}

static char **string_array(lua_State *L, int idx, const char *field, int *ok)
{
    char **arr;
    lua_Integer n;
    *ok = 1;
    lua_getfield(L, idx, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    n = luaL_len(L, -1);
    arr = calloc((size_t)n + 1, sizeof *arr);
    if (arr == NULL) {
        *ok = 0;
        lua_pop(L, 1);
        return NULL;
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        arr[i - 1] = (char *)lua_tostring(L, -1); /* kept alive by the table */
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return arr;
}

/* Starts the shim with fds 0-3 from child[] (-1: /dev/null) in a new
 * session, every signal at its default and none blocked. Returns 0 or an
 * errno (exec and chdir failures included). */
static int start_shim(pid_t *pid, const char *shim, char **argv, char **env,
                      const char *cwd, const int child[4])
{
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int rc;

    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    for (int fd = 0; fd < 4; fd++) {
        if (child[fd] >= 0)
            posix_spawn_file_actions_adddup2(&fa, child[fd], fd);
        else
            posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
    }
    if (cwd != NULL)
        posix_spawn_file_actions_addchdir_np(&fa, cwd);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
                                    POSIX_SPAWN_SETSIGDEF);
    rc = posix_spawn(pid, shim, &fa, &attr, argv, env != NULL ? env : environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    return rc;
}

/* core.spawn(spec, on_exit) -> proc | nil, err, errno
 * spec = {file=, args={...}, env={"K=V", ...} | nil (inherit), cwd=,
 *         stdin = nil (/dev/null) | "pipe", stdout = spec, stderr = spec,
 *         grace_ms = n}; on_exit(result) runs once when the command is done. */
static int exec_spawn(lua_State *L)
{
    char **args = NULL, **env = NULL, **shim_args = NULL;
    char grace[32], parent[32];
    const char *file, *cwd, *shim;
    int child[4] = {-1, -1, -1, -1};
    proc **box;
    proc *p;
    int ok, rc = 0, nargs = 0, file_error, is_beat, a = 0, status_inited = 0;

    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_getfield(L, 1, "file");
    file = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "cwd");
    cwd = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 1, "grace_ms");
    snprintf(grace, sizeof grace, "%lld", (long long)luaL_checkinteger(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, 1, "args");
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_pop(L, 1);

    box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, "beat.proc");
    p = calloc(1, sizeof *p);
    if (p == NULL)
        return luaL_error(L, "out of memory");
    p->L = beat_main_thread(L);
    p->box = box;
    p->self_ref = p->on_exit_ref = LUA_NOREF;

    lua_getfield(L, 1, "stdin");
    if (!lua_isnil(L, -1)) {
        int err = exec_open_pipe(beat_loop(L), &p->in, p, 0, &child[0], &p->in_open);
        if (err != 0)
            rc = -err;
    }
    lua_pop(L, 1);
    exec_read_spec(L, 1, "stdout", &p->out, &child[1], p);
    exec_read_spec(L, 1, "stderr", &p->err, &child[2], p);
    if (rc == 0) {
        int err = exec_open_pipe(beat_loop(L), &p->status, p, 1, &child[3], &status_inited);
        if (err != 0)
            rc = -err;
    }
    p->status_open = status_inited;

    args = string_array(L, 1, "args", &ok);
    if (p->out.open_errno != 0 || p->err.open_errno != 0)
        ok = 0;
    if (ok)
        env = string_array(L, 1, "env", &ok);
    if (args != NULL)
        while (args[nargs] != NULL)
            nargs++;
    shim = shim_file(&is_beat);
    shim_args = ok && rc == 0 ? calloc((size_t)nargs + 6, sizeof *shim_args) : NULL;
    if (shim_args == NULL) {
        rc = p->out.open_errno ? -p->out.open_errno
           : p->err.open_errno ? -p->err.open_errno
           : rc != 0 ? rc : UV_ENOMEM;
    } else {
        snprintf(parent, sizeof parent, "%d", (int)getpid());
        if (is_beat) {
            shim_args[a++] = (char *)shim;
            shim_args[a++] = "__shim";
        } else {
            shim_args[a++] = "beat-shim";
        }
        shim_args[a++] = grace;
        shim_args[a++] = parent;
        shim_args[a++] = (char *)file;
        for (int i = 0; i < nargs; i++)
            shim_args[a++] = args[i];
        rc = -start_shim(&p->pid, shim, shim_args, env, cwd, child);
    }
    free(args);
    free(env);
    free(shim_args);
    for (int fd = 0; fd < 4; fd++) /* the child's ends (the output files among them) */
        if (child[fd] >= 0)
            close(child[fd]);

    if (rc != 0) {
        /* nothing started: undo what was set up, report the world's failure */
        p->handles = 1;
        file_error = p->out.open_errno != 0 || p->err.open_errno != 0;
        if (p->in_open)
            close_handle(p, (uv_handle_t *)&p->in);
        if (p->out.open)
            close_handle(p, (uv_handle_t *)&p->out.pipe);
        if (p->err.open)
            close_handle(p, (uv_handle_t *)&p->err.pipe);
        if (status_inited)
            close_handle(p, (uv_handle_t *)&p->status);
        luaL_unref(L, LUA_REGISTRYINDEX, p->out.fn_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, p->err.fn_ref);
        if (--p->handles == 0)
            free(p);
        lua_pushnil(L);
        if (file_error)
            lua_pushfstring(L, "cannot set up output: %s", uv_strerror(rc));
        else
            lua_pushstring(L, uv_strerror(rc));
        lua_pushinteger(L, -rc);
        return 3;
    }
    *box = p;
    if (p->out.open)
        uv_read_start((uv_stream_t *)&p->out.pipe, exec_alloc_cb, exec_on_read);
    if (p->err.open)
        uv_read_start((uv_stream_t *)&p->err.pipe, exec_alloc_cb, exec_on_read);
    uv_read_start((uv_stream_t *)&p->status, exec_alloc_cb, on_status);
    lua_pushvalue(L, 2);
    p->on_exit_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, -1);
    p->self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 1;
}

/* proc:pid() -> the pid of the shim (the leader of the command's session). */
static int proc_pid(lua_State *L)
{
    proc **box = checkproc(L);
    if (*box == NULL)
        return 0;
    lua_pushinteger(L, (*box)->pid);
    return 1;
}

/* proc:kill(sig) -> true, or false if the command has already completed.
 * SIGTERM and SIGINT go to the shim, which ends the whole tree with the
 * grace period; SIGKILL makes it end the tree at once; other signals
 * (SIGSTOP, SIGUSR1, ...) go straight to the command's process group. */
static int proc_kill(lua_State *L)
{
    proc **box = checkproc(L);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    proc *p = *box;
    if (p == NULL) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (sig == SIGKILL)
        sig = BEAT_SIG_KILLALL;
    if (sig == SIGTERM || sig == SIGINT || sig == BEAT_SIG_KILLALL || p->cmd_pid <= 0)
        lua_pushboolean(L, kill(p->pid, sig) == 0);
    else
        lua_pushboolean(L, kill(-p->cmd_pid, sig) == 0);
    return 1;
}

/* proc:hard_kill(): SIGKILL to the shim itself, the last resort when a shim
 * does not answer; beat's exit sweep ends what it leaves behind. */
static int proc_hard_kill(lua_State *L)
{
    proc **box = checkproc(L);
    proc *p = *box;
    if (p == NULL)
        return 0;
    p->abandoned = 1;
    if (p->cmd_pid > 0) {
        kill(-p->cmd_pid, SIGCONT);
        kill(-p->cmd_pid, SIGKILL);
    }
    kill(p->pid, SIGCONT);
    kill(p->pid, SIGKILL);
    return 0;
}

/* proc:write(data) -> true | nil, err: queues data on the child's stdin. */
static int proc_write(lua_State *L)
{
    proc **box = checkproc(L);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    int rc;
    if (*box == NULL || !(*box)->in_open) {
        lua_pushnil(L);
        lua_pushliteral(L, "stdin is closed");
        return 2;
    }
    rc = exec_queue_write(*box, data, n);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushstring(L, uv_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int proc_close_stdin(lua_State *L)
{
    proc **box = checkproc(L);
    if (*box != NULL)
        exec_close_stdin(*box);
    return 0;
}

static const luaL_Reg proc_meth[] = {
    {"pid", proc_pid},
    {"kill", proc_kill},
    {"hard_kill", proc_hard_kill},
    {"write", proc_write},
    {"close_stdin", proc_close_stdin},
    {NULL, NULL}
};

static const luaL_Reg funcs[] = {
    {"spawn", exec_spawn},
    {NULL, NULL}
};

int luaopen_beat__exec(lua_State *L)
{
    luaL_newmetatable(L, "beat.proc");
    luaL_newlib(L, proc_meth);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
