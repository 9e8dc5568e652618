/*
 * exec.c: child processes for beat.exec and beat.spawn (lua/beat/exec.lua
 * holds the policy: argument checks, PATH lookup, environment, timeouts).
 *
 * Every command runs under the shim (shim.c) in a session of its own,
 * started from the copy embedded in beat's binary (see start_shim below).
 * Output is captured here, in C, so a command printing gigabytes costs
 * beat a bounded amount of memory: "capture" keeps the first and last
 * max/2 bytes, "file" hands the child the file itself, "lines" calls a Lua
 * function per line, "ignore" sends the stream to /dev/null.
 *
 * The shim is started by clone(CLONE_VM | CLONE_VFORK), as glibc's
 * posix_spawn does (no copy of beat's page tables, no copy-on-write faults
 * afterwards, where a fork would have both), but with less around it: the
 * child executes the memfd itself (execveat, no path walk through /proc),
 * gets /dev/null from descriptors beat opened once, and resets only the
 * signals beat ignores, where posix_spawn makes 64 sigaction calls.
 *
 * The shim writes "pid N" and later the command's fate to a pipe (fd 3 in
 * the shim, its only writer), and closes it: by exiting, or, a shim that
 * runs command after command (below), to wait for the next. beat does not
 * wake for those lines: it watches the pipe for the hang-up alone (uv_poll
 * with UV_DISCONNECT) and reads the lines then (the pid earlier only when
 * proc:kill needs it). A hang-up without the fate means the shim is in the
 * kernel's exit path, so the waitpid that reaps it then returns at once
 * (libuv never reaps here; beat installs no SIGCHLD handler). One wake-up
 * per command, where reading the lines as they came took three.
 *
 * A proc completes when its shim is done with it (reaped, or waiting for
 * the next command) and every pipe has reached end of file; then
 * on_exit(result) runs once, and the memory is freed in the last uv_close
 * callback.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs.h"
#include "runtime.h"
#include "shim.h"

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U
#endif

extern char **environ;

/* ---- the shim ------------------------------------------------------------
 * Commands start through the helper built from shim.c and proctree.c
 * alone (linked with libc only) and embedded in beat's binary: written once
 * per beat process into a sealed memfd and executed from it (execveat).
 * Starting it costs one exec of a small static binary, where `beat __shim`
 * (the same code in beat's own binary) costs the dynamic loader mapping
 * every library beat links. That remains the fallback where the memfd
 * cannot be made or executed (no memfd_create, vm.memfd_noexec=2, a
 * security policy): the first command whose exec of the memfd fails is
 * started again from beat's binary, and so is every later one (the child
 * that failed ran nothing: it dies before any exec). BEAT_SHIM=binary in
 * beat's environment forces the fallback, BEAT_SHIM=unexecutable makes the
 * embedded copy one the kernel refuses (for tests and diagnosis). */

static int shim_fd = -1;

/* ---- starting the shim ------------------------------------------------- */

typedef struct {
    const char *path;       /* the file to execute, when fd < 0 */
    int fd;                 /* the embedded shim's memfd, executed as is */
    char **argv, **env;
    const char *cwd;
    const int *fds;         /* the child's descriptors 0-3 */
    const sigset_t *reset;  /* signals to set back to their default */
    volatile int err;       /* why the child could not exec, or 0 */
    volatile int at_exec;   /* 1: err is the exec's own failure */
} spawn_args;

/* The vfork child: it shares beat's memory and runs on its own stack
 * until it executes the shim. Every signal is blocked the whole time, so
 * none of beat's handlers can run here; execve then puts the handled ones
 * back to their default, and this resets the ignored ones. The shim starts
 * with every signal blocked and sets its own mask (shim.c). Uninstrumented:
 * ASan's bookkeeping belongs to the parent. */
__attribute__((no_sanitize_address))
static int spawn_child(void *arg)
{
    spawn_args *a = arg;
    struct sigaction dfl;

    if (setsid() < 0)
        goto fail;
    for (int fd = 0; fd < 4; fd++) /* every source is 4 or above (lift) */
        if (dup2(a->fds[fd], fd) < 0)
            goto fail;
    if (a->cwd != NULL && chdir(a->cwd) != 0)
        goto fail;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(a->reset, sig) == 1)
            sigaction(sig, &dfl, NULL);
    if (a->fd >= 0)
        syscall(SYS_execveat, a->fd, "", a->argv, a->env, AT_EMPTY_PATH);
    else
        execve(a->path, a->argv, a->env);
    a->at_exec = 1;
fail:
    a->err = errno;
    _exit(127);
}

/* The signals beat ignores, read once: SIGPIPE (runtime.c) and whatever
 * beat was started with ignored (nohup, a shell's background job) and did
 * not take over. beat never ignores a signal later. SIGCHLD ignored would
 * make the kernel reap the shims itself and a waitpid wait for all of
 * them: it goes back to its default here, in beat. */
static const sigset_t *ignored_signals(void)
{
    static sigset_t set;
    static int known;
    if (!known) {
        struct sigaction sa;
        known = 1;
        sigemptyset(&set);
        if (sigaction(SIGCHLD, NULL, &sa) == 0 &&
            (sa.sa_handler == SIG_IGN || (sa.sa_flags & SA_NOCLDWAIT)))
            signal(SIGCHLD, SIG_DFL);
        for (int sig = 1; sig < NSIG; sig++)
            if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
                sigaddset(&set, sig);
    }
    return &set;
}

/* /dev/null for reading (0) or writing (1), opened once at fd 10 or above,
 * close-on-exec. Returns the fd, or -1 with errno. */
static int dev_null(int writing)
{
    static int fds[2] = {-1, -1};
    if (fds[writing] < 0) {
        int fd = open("/dev/null", (writing ? O_WRONLY : O_RDONLY) | O_CLOEXEC);
        if (fd < 0)
            return -1;
        fds[writing] = fcntl(fd, F_DUPFD_CLOEXEC, 10);
        close(fd);
    }
    return fds[writing];
}

/* Starts the shim (the memfd fd, else the file path) in a new session,
 * with fds 0-3 from child[] (-1: /dev/null), in cwd, every signal at its
 * default and all of them blocked (the shim sets its mask). Returns 0 or
 * an errno (exec and chdir failures included); *at_exec is 1 when the
 * errno is the exec's. */
static int spawn_shim(pid_t *pid, int fd, const char *path, char **argv, char **env,
                      const char *cwd, const int child[4], int *at_exec)
{
    static char stack[32 * 1024] __attribute__((aligned(16)));
    int fds[4];
    spawn_args a;
    unsigned long all[16], old[16];
    int err;

    for (int i = 0; i < 4; i++) {
        fds[i] = child[i] >= 0 ? child[i] : dev_null(i > 0);
        if (fds[i] < 0)
            return errno;
    }
    a.path = path;
    a.fd = fd;
    a.argv = argv;
    a.env = env != NULL ? env : environ;
    a.cwd = cwd;
    a.fds = fds;
    a.reset = ignored_signals();
    a.err = 0;
    a.at_exec = 0;
    /* glibc's own signals too (pthread_sigmask leaves them out): none of
     * beat's handlers may run in the child */
    memset(all, 0xff, sizeof all);
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, all, old, NSIG / 8);
    *pid = clone(spawn_child, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, &a);
    err = *pid < 0 ? errno : 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, old, NULL, NSIG / 8);
    *at_exec = 0;
    if (err == 0 && a.err != 0) { /* it exited without executing the shim */
        err = a.err;
        *at_exec = a.at_exec;
        while (waitpid(*pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
    return err;
}

/* Writes the embedded helper into a sealed, close-on-exec memfd at fd 10
 * or above (the child puts its fds 0-3 in place before it executes the
 * shim) and keeps its fd, or returns -1 if it cannot be created. Whether
 * the kernel will execute it, the first command finds out (spawn). */
static int embedded_shim(void)
{
    const char *force = getenv("BEAT_SHIM");
    const unsigned char *blob = beat_shim_blob;
    size_t size = beat_shim_blob_size, done = 0;
    int fd, high;

    if (force != NULL && strcmp(force, "binary") == 0)
        return -1;
    if (force != NULL && strcmp(force, "unexecutable") == 0) {
        blob = (const unsigned char *)"not an executable\n";
        size = 18;
    }
    fd = memfd_create("beat-shim", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (fd < 0 && errno == EINVAL) /* a kernel before 6.3 knows no MFD_EXEC */
        fd = memfd_create("beat-shim", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -1;
    while (done < size) {
        ssize_t w = write(fd, blob + done, size - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)w;
    }
    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    high = fcntl(fd, F_DUPFD_CLOEXEC, 10);
    close(fd);
    return high;
}

/* The embedded shim's memfd, made on first use; -1 when there is none or
 * the kernel refused to execute it (then beat's own binary is the shim). */
static int shim_memfd(void)
{
    static int tried;
    if (!tried) {
        tried = 1;
        shim_fd = embedded_shim();
    }
    return shim_fd;
}

/* Starts the shim with the arguments after argv[0..1], which are free for
 * beat's binary and its "__shim": from the memfd when there is one, else,
 * or when the kernel refuses to execute the memfd (then never again), from
 * beat's binary. Returns 0 or an errno (see spawn_shim). */
static int start_shim(pid_t *pid, char **argv, char **env, const char *cwd, const int child[4])
{
    int at_exec, err;
    if (shim_memfd() >= 0) {
        argv[1] = "beat-shim";
        err = spawn_shim(pid, shim_fd, NULL, argv + 1, env, cwd, child, &at_exec);
        if (!(err != 0 && at_exec))
            return err;
        close(shim_fd);
        shim_fd = -1;
    }
    argv[0] = (char *)beat_exe_path();
    argv[1] = "__shim";
    return spawn_shim(pid, -1, argv[0], argv, env, cwd, child, &at_exec);
}

/* Writes n in decimal into buf (room for any 64-bit value); the two
 * snprintf calls this replaces were a sixth of exec_spawn's instructions. */
static void decimal(char buf[32], long long n)
{
    char tmp[32];
    unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    int len = 0;
    do
        tmp[len++] = (char)('0' + u % 10);
    while ((u /= 10) > 0);
    if (n < 0)
        *buf++ = '-';
    while (len > 0)
        *buf++ = tmp[--len];
    *buf = '\0';
}

/* ---- shims that run command after command ------------------------------
 * The embedded shim is started as `beat-shim warm PID` (shim.c): it waits
 * on a socket for a command (its descriptors with SCM_RIGHTS, its
 * arguments, environment and directory), runs it with every guarantee of
 * the one-shot shim, and when the command and its leftovers are gone, says
 * so with its last report line and the hang-up of the command's status
 * pipe, and waits for the next. A command then costs a message, where it
 * cost starting a shim (an exec) and its exit. The shims waiting are kept
 * here, at most IDLE_MAX; when none waits as a command starts, one is
 * started for the next, while this one runs. Each is beat's child like any
 * shim, in a session of its own, killed if beat dies; beat lets them go
 * (closes the socket, kills and reaps them) before its exit sweep and when
 * a run pauses. A command whose message would be too long, or when no
 * shim can be had, starts a one-shot shim as before. */

#define IDLE_MAX 4

static struct {
    pid_t pid;
    int sock;
} idle[IDLE_MAX];
static int nidle;

/* Lets one shim go. It holds nothing but the socket, and is killed rather
 * than told: a stopped one could not read the end of file, and the reap
 * must not wait. */
static void dismiss(pid_t pid, int sock)
{
    close(sock);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
}

/* Lets every waiting shim go: all are killed, then all reaped, so their
 * exits overlap. */
void beat_exec_dismiss_warm(void)
{
    for (int i = 0; i < nidle; i++) {
        close(idle[i].sock);
        kill(idle[i].pid, SIGKILL);
    }
    for (; nidle > 0; nidle--)
        while (waitpid(idle[nidle - 1].pid, NULL, 0) < 0 && errno == EINTR)
            ;
}

/* A shim done with its command waits for the next (or goes, when enough
 * wait). */
static void idle_return(pid_t pid, int sock)
{
    if (nidle < IDLE_MAX) {
        idle[nidle].pid = pid;
        idle[nidle].sock = sock;
        nidle++;
    } else {
        dismiss(pid, sock);
    }
}

/* Starts a shim to wait for commands, if none waits. */
static void warm_start(void)
{
    int sv[2], high, at_exec, err, child[4] = {-1, -1, -1, -1};
    char parent[32];
    char *argv[] = {"beat-shim", "warm", parent, NULL};
    pid_t pid;

    if (nidle > 0 || shim_memfd() < 0)
        return;
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        return;
    high = fcntl(sv[1], F_DUPFD_CLOEXEC, 10);  /* the child's sources are 4 and above */
    close(sv[1]);
    if (high < 0) {
        close(sv[0]);
        return;
    }
    child[3] = high;
    decimal(parent, getpid());
    err = spawn_shim(&pid, shim_fd, NULL, argv, NULL, NULL, child, &at_exec);
    close(high);
    if (err != 0) {
        close(sv[0]);
        if (at_exec) { /* the kernel will not execute the memfd: beat's binary is the shim */
            close(shim_fd);
            shim_fd = -1;
        }
        return;
    }
    idle[nidle].pid = pid;
    idle[nidle].sock = sv[0];
    nidle++;
}

/* Appends s and its NUL to buf[*len..cap); 0, or -1 when it does not fit. */
static int put_string(char *buf, size_t *len, size_t cap, const char *s)
{
    size_t n = strlen(s) + 1;
    if (n > cap - *len)
        return -1;
    memcpy(buf + *len, s, n);
    *len += n;
    return 0;
}

/* Hands a command to a waiting shim: args = {GRACE_MS, PARENT_PID, FILE,
 * ARGV0, ARGS..., NULL}. 0 (and *pid, *sock) when one took it; EAGAIN when
 * none waits, E2BIG when the message cannot be made (too long, or beat's
 * directory cannot be named: then start one as usual); another errno when a
 * descriptor cannot be had. */
static int warm_send(pid_t *pid, int *sock, char **args, char **env, const char *cwd,
                     const int child[4])
{
    static char buf[BEAT_WARM_MAX], here[PATH_MAX];
    char count[32];
    size_t len = 0;
    int fds[4], nargs = 0, nenv = 0, fail = 0;

    if (nidle == 0)
        return EAGAIN;
    if (env == NULL)
        env = environ;
    if (cwd == NULL) {  /* beat's directory now, not when the shim started */
        if (getcwd(here, sizeof here) == NULL)
            return E2BIG;
        cwd = here;
    }
    while (args[3 + nargs] != NULL)
        nargs++;
    while (env[nenv] != NULL)
        nenv++;
    for (int i = 0; i < 3; i++)
        fail |= put_string(buf, &len, sizeof buf, args[i]);
    decimal(count, nargs);
    fail |= put_string(buf, &len, sizeof buf, count);
    for (int i = 0; i < nargs; i++)
        fail |= put_string(buf, &len, sizeof buf, args[3 + i]);
    decimal(count, nenv);
    fail |= put_string(buf, &len, sizeof buf, count);
    for (int i = 0; i < nenv; i++)
        fail |= put_string(buf, &len, sizeof buf, env[i]);
    fail |= put_string(buf, &len, sizeof buf, cwd);
    if (fail)
        return E2BIG;
    for (int i = 0; i < 4; i++) {
        fds[i] = child[i] >= 0 ? child[i] : dev_null(i > 0);
        if (fds[i] < 0)
            return errno;
    }
    while (nidle > 0) {
        nidle--;
        if (fs_send_fds(idle[nidle].sock, buf, len, fds, 4) == (ssize_t)len) {
            *pid = idle[nidle].pid;
            *sock = idle[nidle].sock;
            return 0;
        }
        dismiss(idle[nidle].pid, idle[nidle].sock);  /* it died waiting: the next one */
    }
    return EAGAIN;
}

/* ---- children beat does not know ----------------------------------------
 * beat is a child subreaper, so a process orphaned below it becomes its
 * child. Shims end every such process but one kind: a detached beat run
 * (`beat loop --detach` run as a command) that a shim adopted is handed up
 * to beat, alive, and when it ends it is a zombie child of beat, which
 * reaps only its shims. At each command's end beat reaps the children that
 * ended and are not its shims, so a long-lived beat that starts detached
 * runs that way does not pile up zombies. */

static proc *live;  /* procs whose shim is busy with their command */

static int is_shim(pid_t pid)
{
    for (int i = 0; i < nidle; i++)
        if (idle[i].pid == pid)
            return 1;
    for (proc *q = live; q != NULL; q = q->next_live)
        if (q->pid == pid)
            return 1;
    return 0;
}

static void unlist(proc *p)
{
    for (proc **at = &live; *at != NULL; at = &(*at)->next_live)
        if (*at == p) {
            *at = p->next_live;
            return;
        }
}

/* Reaps the children that ended and are not shims. waitid with WNOWAIT
 * names one that ended without reaping it; a shim that ended is left for
 * its proc (it is reaped at once, when its pipe hangs up), and the rest
 * wait for the next command's end. */
static void reap_strays(void)
{
    for (;;) {
        siginfo_t si;
        si.si_pid = 0;
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) != 0 || si.si_pid == 0 ||
            is_shim(si.si_pid))
            return;
        while (waitpid(si.si_pid, NULL, 0) < 0 && errno == EINTR)
            ;
    }
}

static proc **checkproc(lua_State *L)
{
    return luaL_checkudata(L, 1, "beat.proc");
}

/* Procs whose handles are all closed, kept for the next commands: a proc
 * is over a kilobyte, and a malloc of that size makes glibc consolidate
 * its small free chunks, every command. */
#ifdef __SANITIZE_ADDRESS__
#define SPARE_PROCS 1 /* none kept: ASan must see a use after free */
#define KEEP_SPARES 0
#else
#define SPARE_PROCS 8
#define KEEP_SPARES SPARE_PROCS
#endif
static proc *spare[SPARE_PROCS];
static int nspare;

static proc *new_proc(void)
{
    if (nspare > 0) {
        proc *p = spare[--nspare];
        memset(p, 0, sizeof *p);
        return p;
    }
    return calloc(1, sizeof(proc));
}

static void free_proc(proc *p)
{
    unlist(p);  /* freed with its command still running: the loop closed at exit */
    free(p->out.head);
    free(p->out.tail);
    free(p->out.line);
    free(p->err.head);
    free(p->err.tail);
    free(p->err.line);
    free(p->cb_error);
    if (nspare < KEEP_SPARES)
        spare[nspare++] = p;
    else
        free(p);
}

static void handle_closed(uv_handle_t *h)
{
    proc *p = h->data;
    if (--p->handles == 0)
        free_proc(p);
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
    lua_pushboolean(L, (p->out.mode == OUT_CAPTURE && (p->out.total > p->out.max || p->out.lost)) ||
                       (p->err.mode == OUT_CAPTURE && (p->err.total > p->err.max || p->err.lost)));
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
    if (p->in_open)
        close_handle(p, (uv_handle_t *)&p->in);
    if (p->out.mode == OUT_CAPTURE || p->out.mode == OUT_LINES)
        close_handle(p, (uv_handle_t *)&p->out.pipe);
    if (p->err.mode == OUT_CAPTURE || p->err.mode == OUT_LINES)
        close_handle(p, (uv_handle_t *)&p->err.pipe);
    close_handle(p, (uv_handle_t *)&p->status);
    close(p->status_fd);
    beat_call_ref(L, on_exit, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, on_exit);
    p->handles--;
    if (p->handles == 0) /* cannot happen: the status pipe's close is pending */
        free_proc(p);
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

/* Reads what the shim has reported so far into p->report; returns 1 once
 * its end of file is reached (the shim has exited, or is exiting). */
static int read_report(proc *p)
{
    for (;;) {
        char buf[128];
        ssize_t n = read(p->status_fd, buf, sizeof buf);
        if (n > 0) {
            size_t room = sizeof p->report - 1 - p->report_len;
            size_t k = (size_t)n < room ? (size_t)n : room;
            memcpy(p->report + p->report_len, buf, k);
            p->report_len += k;
            p->report[p->report_len] = '\0';
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        return n == 0;
    }
}

/* The command's pid (its process group), once the shim has reported it;
 * 0 before. */
static pid_t command_pid(proc *p)
{
    int pid;
    if (p->cmd_pid == 0 && p->status_open)
        read_report(p);
    if (p->cmd_pid == 0 && report_value(p->report, "pid", &pid))
        p->cmd_pid = (pid_t)pid;
    return p->cmd_pid;
}

/* The status pipe hung up: the shim closed it (it is its only writer),
 * by exiting or, a shim that runs command after command, once the command
 * and its leftovers were gone, after the command's fate and "idle": then
 * it waits for the next command. The kernel closes an exiting
 * process's descriptors in order, flushing each (an output file on NFS:
 * its data), so fd 3 goes after stdout and stderr, and the shim's pipes to
 * beat hang up together: one wake-up. What is left of the exit is short
 * and waits on nothing in user space, so the waitpid below, blocking,
 * returns at once. */
static void on_status(uv_poll_t *h, int status, int events)
{
    proc *p = h->data;
    int wstatus, idle_line;
    pid_t r;
    (void)status;
    (void)events;
    if (!read_report(p))
        return; /* not the end yet */
    uv_poll_stop(h);
    p->status_open = 0;
    unlist(p);
    if (p->sock >= 0) {
        if (!p->abandoned && report_value(p->report, "idle", &idle_line)) {
            /* done with the command, it waits for the next */
            idle_return(p->pid, p->sock);
            p->sock = -1;
            reap_strays();
            shim_exited(p, -1);
            return;
        }
        close(p->sock); /* it exits, died or was killed: reaped below */
        p->sock = -1;
    }
    do
        r = waitpid(p->pid, &wstatus, 0);
    while (r < 0 && errno == EINTR);
    reap_strays();
    shim_exited(p, r == p->pid ? wstatus : -1);
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

static int not_found(lua_State *L, const char *why)
{
    lua_pushnil(L);
    lua_pushstring(L, why);
    return 2;
}

/* core.which(name, path, cwd) -> absolute file | nil, why
 * The file execvp would run for name: a name with a slash is that file
 * (relative to cwd when given), any other is looked up in the
 * colon-separated path (an empty entry is "."). Costs one stat per entry
 * tried, which is why it is C: exec.lua calls it for every command. */
static int exec_which(lua_State *L)
{
    size_t nlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    const char *path = luaL_checkstring(L, 2);
    const char *cwd = luaL_optstring(L, 3, NULL);
    char full[PATH_MAX];
    struct stat st;
    int denied = 0;

    if (nlen == 0)
        return not_found(L, "empty command");
    if (strchr(name, '/') != NULL) {
        if (name[0] != '/' && cwd != NULL) {
            lua_pushfstring(L, "%s/%s", cwd, name);
            name = lua_tostring(L, -1);
        }
        if (stat(name, &st) != 0)
            return not_found(L, "no such file or directory");
        if (S_ISDIR(st.st_mode))
            return not_found(L, "is a directory");
        if (access(name, X_OK) != 0)
            return not_found(L, "permission denied");
        lua_pushstring(L, name);
        return 1;
    }
    for (const char *dir = path;; dir++) {
        const char *end = strchrnul(dir, ':');
        size_t dlen = (size_t)(end - dir);
        const char *d = dlen > 0 ? dir : ".";
        if (dlen == 0)
            dlen = 1;
        if (dlen + 1 + nlen < sizeof full) {
            memcpy(full, d, dlen);
            full[dlen] = '/';
            memcpy(full + dlen + 1, name, nlen + 1);
            if (stat(full, &st) == 0 && !S_ISDIR(st.st_mode)) {
                if (access(full, X_OK) == 0) {
                    char here[PATH_MAX];
                    if (full[0] != '/' && getcwd(here, sizeof here) != NULL)
                        lua_pushfstring(L, "%s/%s", here, full);
                    else
                        lua_pushstring(L, full);
                    return 1;
                }
                denied = 1;
            }
        }
        dir = end;
        if (*end == '\0')
            break;
    }
    return not_found(L, denied ? "permission denied" : "command not found");
}


/* core.spawn(spec, on_exit) -> proc | nil, err, errno
 * spec = {file=, args={...}, env={"K=V", ...} | nil (inherit), cwd=,
 *         stdin = nil (/dev/null) | "pipe", stdout = spec, stderr = spec,
 *         grace_ms = n}; on_exit(result) runs once when the command is done. */
static int exec_spawn(lua_State *L)
{
    char **args = NULL, **env = NULL, **shim_args = NULL;
    char grace[32], parent[32];
    const char *file, *cwd;
    int child[4] = {-1, -1, -1, -1};
    proc **box;
    proc *p;
    int ok, rc = 0, nargs = 0, file_error, a = 0, status_inited = 0;

    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_getfield(L, 1, "file");
    file = luaL_checkstring(L, -1);
    lua_getfield(L, 1, "cwd");
    cwd = luaL_optstring(L, -1, NULL);
    lua_getfield(L, 1, "grace_ms");
    decimal(grace, luaL_checkinteger(L, -1));
    lua_pop(L, 1);
    lua_getfield(L, 1, "args");
    luaL_checktype(L, -1, LUA_TTABLE);
    lua_pop(L, 1);

    box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    luaL_setmetatable(L, "beat.proc");
    p = new_proc();
    if (p == NULL)
        return luaL_error(L, "out of memory");
    p->L = beat_main_thread(L);
    p->sock = -1;
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
        int err = exec_open_status(beat_loop(L), &p->status, p, &p->status_fd, &child[3],
                                   &status_inited);
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
    shim_args = ok && rc == 0 ? calloc((size_t)nargs + 6, sizeof *shim_args) : NULL;
    if (shim_args == NULL) {
        rc = p->out.open_errno ? -p->out.open_errno
           : p->err.open_errno ? -p->err.open_errno
           : rc != 0 ? rc : UV_ENOMEM;
    } else {
        decimal(parent, getpid());
        a = 2; /* shim_args[0..1]: the shim's own name, see start_shim */
        shim_args[a++] = grace;
        shim_args[a++] = parent;
        shim_args[a++] = (char *)file;
        for (int i = 0; i < nargs; i++)
            shim_args[a++] = args[i];
        rc = -warm_send(&p->pid, &p->sock, shim_args + 2, env, cwd, child);
        if (rc == -EAGAIN) { /* none waits: start one, and it takes this command */
            warm_start();
            rc = -warm_send(&p->pid, &p->sock, shim_args + 2, env, cwd, child);
        }
        if (rc == -EAGAIN || rc == -E2BIG)
            rc = -start_shim(&p->pid, shim_args, env, cwd, child);
        if (rc == 0)
            warm_start();  /* for the next command, while this one runs */
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
        if (status_inited) {
            close_handle(p, (uv_handle_t *)&p->status);
            close(p->status_fd);
        }
        luaL_unref(L, LUA_REGISTRYINDEX, p->out.fn_ref);
        luaL_unref(L, LUA_REGISTRYINDEX, p->err.fn_ref);
        if (--p->handles == 0)
            free_proc(p);
        lua_pushnil(L);
        if (file_error)
            lua_pushfstring(L, "cannot set up output: %s", uv_strerror(rc));
        else
            lua_pushstring(L, uv_strerror(rc));
        lua_pushinteger(L, -rc);
        return 3;
    }
    *box = p;
    p->next_live = live;
    live = p;
    if (p->out.open)
        uv_read_start((uv_stream_t *)&p->out.pipe, exec_alloc_cb, exec_on_read);
    if (p->err.open)
        uv_read_start((uv_stream_t *)&p->err.pipe, exec_alloc_cb, exec_on_read);
    uv_poll_start(&p->status, UV_DISCONNECT, on_status);
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
    if (sig == SIGTERM || sig == SIGINT || sig == BEAT_SIG_KILLALL || command_pid(p) <= 0)
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
    if (command_pid(p) > 0) {
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

/* warm(): starts the shim the next command will take, unless one waits:
 * its start then overlaps the caller's work before that command. */
static int exec_warm(lua_State *L)
{
    (void)L;
    warm_start();
    return 0;
}

/* release_warm(): lets go the shims waiting for the next command (a run
 * about to wait a long while, paused, keeps nothing below it). */
static int exec_release_warm(lua_State *L)
{
    (void)L;
    beat_exec_dismiss_warm();
    return 0;
}

static const luaL_Reg funcs[] = {
    {"spawn", exec_spawn},
    {"warm", exec_warm},
    {"release_warm", exec_release_warm},
    {"which", exec_which},
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
