/*
 * detach.c: the process primitives for runs that outlive the beat that
 * started them (lua/beat/runs/ holds the policy):
 *
 *   spawn_detached(opts) starts a program in a new session, reparented away
 *       from beat, so neither beat's exit sweep, nor a shim's death signal,
 *       nor the terminal's SIGHUP or Ctrl-C reaches it;
 *   kill(pid, sig) signals any process (the control channel's wake-up, the
 *       cleanup of what a crashed run left behind).
 *
 * Why a double fork in C rather than `setsid -f` through beat.spawn: every
 * command beat.spawn starts runs under a shim that is a child subreaper and
 * ends its whole tree when the command exits, and beat itself is a
 * subreaper that kills every descendant at exit. A process started that way
 * is found and killed however it daemonizes. Here beat forks directly, the
 * child makes a new session and forks the program, and exits at once; the
 * program is orphaned while beat's subreaper flag is off, so the kernel
 * reparents it to init (or the nearest subreaper above beat) and it is no
 * longer a descendant of beat.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "runtime.h"

extern char **environ;

/* A NULL-terminated copy of the strings of t[field] (a list), or NULL with
 * *ok = 0 when it is not a list of strings; absent gives NULL with *ok = 1.
 * The strings stay owned by Lua (the table is on the stack). */
static char **string_list(lua_State *L, int idx, const char *field, int *ok)
{
    char **out;
    lua_Integer n;
    *ok = 1;
    lua_getfield(L, idx, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return NULL;
    }
    if (!lua_istable(L, -1)) {
        lua_pop(L, 1);
        *ok = 0;
        return NULL;
    }
    n = (lua_Integer)luaL_len(L, -1);
    out = calloc((size_t)n + 1, sizeof *out);
    if (out == NULL) {
        lua_pop(L, 1);
        *ok = 0;
        return NULL;
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 2);
            free(out);
            *ok = 0;
            return NULL;
        }
        out[i - 1] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1); /* still referenced by the table */
    }
    lua_pop(L, 1);
    return out;
}

static int read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return (int)got;
}

static void write_full(int fd, const void *buf, size_t n)
{
    ssize_t w;
    do
        w = write(fd, buf, n);
    while (w < 0 && errno == EINTR);
}

/* The program's side after the second fork: stdio, directory, a clean
 * signal state, no inherited descriptors; then exec. Only async-signal-safe
 * calls: the parent is multi-threaded (libuv's pool). */
static void become_program(const char *file, char **args, char **env, const char *cwd,
                           int in_fd, int out_fd, int report_fd)
{
    sigset_t none;
    struct sigaction dfl;
    struct rlimit rl;
    int err;
    dup2(in_fd, 0);
    dup2(out_fd, 1);
    dup2(out_fd, 2);
    if (report_fd <= 2) { /* keep it clear of the stdio just set up */
        int moved = fcntl(report_fd, F_DUPFD_CLOEXEC, 3);
        report_fd = moved;
    }
    if (cwd != NULL && chdir(cwd) != 0) {
        err = errno;
        write_full(report_fd, &err, sizeof err);
        _exit(127);
    }
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            sigaction(s, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* every other descriptor goes, except the report pipe (close-on-exec) */
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 65536)
        rl.rlim_cur = 65536;
    for (int fd = 3; fd < (int)rl.rlim_cur; fd++)
        if (fd != report_fd)
            close(fd);
    execve(file, args, env != NULL ? env : environ);
    err = errno;
    write_full(report_fd, &err, sizeof err);
    _exit(127);
}

/*
 * spawn_detached{file=, args={...}, env={"K=V", ...}|nil, cwd=, output=path}
 *   -> pid | nil, "why", errno
 * Starts file (an absolute path) with args (args[1] is argv[0]) in a new
 * session, stdin from /dev/null, stdout and stderr appended to output. The
 * program is not a descendant of beat once this returns, so it outlives
 * beat however beat ends. Returns once the program has been executed (or
 * failed to be: nil, "exec: why", errno).
 */
static int proc_spawn_detached(lua_State *L)
{
    const char *file, *cwd, *output;
    char **args, **env;
    int ok, in_fd, out_fd, pipefd[2], err = 0, was_subreaper = 0, status;
    pid_t child, program = -1;

    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "file"); /* the three strings stay on the stack */
    file = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "cwd");
    cwd = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 1, "output");
    output = luaL_checkstring(L, -1);
    args = string_list(L, 1, "args", &ok);
    if (!ok || args == NULL || args[0] == NULL) {
        free(args);
        return luaL_error(L, "spawn_detached: args must be a non-empty list of strings");
    }
    env = string_list(L, 1, "env", &ok);
    if (!ok) {
        free(args);
        return luaL_error(L, "spawn_detached: env must be a list of strings");
    }

    in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    out_fd = open(output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (in_fd < 0 || out_fd < 0 || pipe2(pipefd, O_CLOEXEC) != 0) {
        err = errno;
        if (in_fd >= 0)
            close(in_fd);
        if (out_fd >= 0)
            close(out_fd);
        free(args);
        free(env);
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", out_fd < 0 && in_fd >= 0 ? output : "spawn_detached", strerror(err));
        lua_pushinteger(L, err);
        return 3;
    }

    /* orphans go past beat while the flag is off; beat's own children are
     * shims (subreapers themselves) and the child below, so nothing else
     * can be orphaned in this short window */
    prctl(PR_GET_CHILD_SUBREAPER, &was_subreaper);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
    child = fork();
    if (child == 0) {
        pid_t pid;
        close(pipefd[0]);
        setsid();
        pid = fork();
        if (pid == 0)
            become_program(file, args, env, cwd, in_fd, out_fd, pipefd[1]);
        write_full(pipefd[1], &pid, sizeof pid);
        _exit(pid < 0 ? 1 : 0);
    }
    if (child < 0)
        err = errno;
    close(pipefd[1]);
    close(in_fd);
    close(out_fd);
    if (child > 0) {
        while (waitpid(child, &status, 0) < 0 && errno == EINTR)
            ;
        if (read_full(pipefd[0], &program, sizeof program) != (int)sizeof program || program < 0) {
            err = EAGAIN; /* the second fork failed */
            program = -1;
        } else if (read_full(pipefd[0], &err, sizeof err) != (int)sizeof err) {
            err = 0; /* end of file: the exec succeeded (close-on-exec) */
        }
    }
    prctl(PR_SET_CHILD_SUBREAPER, was_subreaper);
    close(pipefd[0]);
    free(args);
    free(env);
    if (err != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", program > 0 ? "cannot start it" : "cannot fork", strerror(err));
        lua_pushinteger(L, err);
        return 3;
    }
    lua_pushinteger(L, program);
    return 1;
}

/* kill(pid, sig) -> true | nil, "kill PID: why", errno. pid must be > 0:
 * process groups and "every process" are not for this function. */
static int proc_kill(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    int sig = (int)luaL_checkinteger(L, 2);
    luaL_argcheck(L, pid > 0 && pid <= 0x7fffffff, 1, "must be a process id > 0");
    if (kill((pid_t)pid, sig) != 0) {
        int err = errno;
        lua_pushnil(L);
        lua_pushfstring(L, "kill %d: %s", (int)pid, strerror(err));
        lua_pushinteger(L, err);
        return 3;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg funcs[] = {
    {"spawn_detached", proc_spawn_detached},
    {"kill", proc_kill},
    {NULL, NULL}
};

int luaopen_beat__proc(lua_State *L)
{
    luaL_newlib(L, funcs);
    lua_pushinteger(L, sysconf(_SC_CLK_TCK));
    lua_setfield(L, -2, "clk_tck");
    return 1;
}
