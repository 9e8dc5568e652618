/*
 * shim.c: the supervisor of one command, `beat-shim GRACE_MS PARENT_PID
 * FILE ARGV0 ARGS...`.
 *
 * beat starts every command through this shim, in a new session. The shim
 * is built from this file and proctree.c alone, linked only with libc,
 * and embedded in beat's binary (exec.c starts it from a memfd); the same
 * code is also reachable as `beat __shim ...` (main.c), the fallback where
 * the embedded one cannot run. The shim guarantees that no process of the
 * command outlives it or beat:
 *   - it is a child subreaper, so descendants that leave the process group
 *     (setsid, double fork) are reparented to it and still found;
 *   - it asks the kernel for BEAT_SIG_KILLALL when beat dies, even by
 *     SIGKILL, and then kills the whole tree at once;
 *   - on SIGTERM/SIGINT it forwards the signal to the command's group and
 *     every descendant, and after GRACE_MS sends SIGKILL to all of them;
 *   - when the command exits, leftovers get the same TERM-then-KILL.
 * A detached beat run (`--detached-run`, see detach.c) that the shim
 * adopted is neither killed nor waited for: it outlives the shim on purpose.
 * On fd 3 it reports "pid N" when the command has started (beat sends
 * job-control signals such as SIGSTOP straight to that process group), and
 * the command's fate as one line: "exit N", "signal N" or "error ERRNO" (it
 * could not be executed); then it exits with the same status (128+N for a
 * signal).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

static void report(const char *what, int n)
{
    char line[64];
    int len = snprintf(line, sizeof line, "%s %d\n", what, n);
    ssize_t w;
    do
        w = write(3, line, (size_t)len);
    while (w < 0 && errno == EINTR);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Signals the command's group and every process below the shim that left
 * it; each process gets the signal once. */
static void signal_all(pid_t group, int sig)
{
    kill(-group, sig);
    beat_kill_descendants(getpid(), sig, group);
}

/* Reaps every child that has exited; records the command's own status.
 * Returns 1 while children remain. */
static int reap(pid_t child, int *child_status, int *child_done)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            if (pid == child) {
                *child_status = status;
                *child_done = 1;
            }
            continue;
        }
        if (pid < 0 && errno == EINTR)
            continue;
        return !(pid < 0 && errno == ECHILD);
    }
}

/* Starts the command in a process group of its own, with every signal
 * unblocked (dispositions are all at their default: beat's spawn and the
 * shim's exec saw to it). vfork: the child borrows the shim's memory until
 * it executes the command, so the shim's page tables are not copied, and
 * the shim resumes only once the exec succeeded or failed, which the child
 * says in err. Returns the pid, or -errno. */
static pid_t start_command(const char *file, char **argv)
{
    volatile int err = 0;
    sigset_t none;
    pid_t pid;

    sigemptyset(&none);
    pid = vfork();
    if (pid == 0) {
        setpgid(0, 0);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execv(file, argv);
        err = errno;
        _exit(127);
    }
    if (pid < 0)
        return -errno;
    if (err != 0) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return -err;
    }
    return pid;
}

int beat_shim_main(int argc, char **argv)
{
    sigset_t set;
    long long grace_ms, deadline = -1;
    pid_t parent, child;
    int child_status = 0, child_done = 0, code;

    if (argc < 5) {
        fprintf(stderr, "beat shim: internal use only\n");
        return 2;
    }
    prctl(PR_SET_NAME, "beat-shim"); /* started from a memfd, it would be named "12" */
    grace_ms = atoll(argv[1]);
    parent = (pid_t)atoi(argv[2]);

    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGQUIT);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);
    sigaddset(&set, BEAT_SIG_KILLALL);
    sigprocmask(SIG_SETMASK, &set, NULL); /* beat starts it with all blocked */

    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_PDEATHSIG, BEAT_SIG_KILLALL);
    if (getppid() != parent) /* beat died before the death signal was armed */
        return 137;
    fcntl(3, F_SETFD, FD_CLOEXEC);

    child = start_command(argv[3], argv + 4);
    if (child < 0) {
        report("error", (int)-child);
        return 127;
    }
    report("pid", (int)child);

    for (;;) {
        siginfo_t info;
        int sig;
        if (deadline >= 0) {
            long long left = deadline - now_ms();
            struct timespec ts;
            if (left <= 0) {
                signal_all(child, SIGKILL);
                beat_kill_descendants(getpid(), SIGKILL, 0);
                deadline = now_ms() + 100; /* keep killing late forks */
                left = 100;
            }
            ts.tv_sec = (time_t)(left / 1000);
            ts.tv_nsec = (long)(left % 1000) * 1000000;
            sig = sigtimedwait(&set, &info, &ts);
        } else {
            sig = sigwaitinfo(&set, &info);
        }
        if (sig < 0) {
            if (errno != EAGAIN && errno != EINTR)
                break;
            if (!reap(child, &child_status, &child_done)
                || (child_done && beat_live_children(getpid()) == 0))
                break;
            continue;
        }
        if (sig == SIGCHLD) {
            int more = reap(child, &child_status, &child_done);
            if (!more || (child_done && beat_live_children(getpid()) == 0))
                break;
            if (child_done && deadline < 0) { /* leftovers of a finished command */
                signal_all(child, SIGTERM);
                deadline = now_ms() + grace_ms;
            }
        } else if (sig == BEAT_SIG_KILLALL) {
            signal_all(child, SIGKILL);
            beat_kill_descendants(getpid(), SIGKILL, 0);
            deadline = now_ms() + 100;
        } else if (sig == SIGTERM || sig == SIGINT) {
            signal_all(child, sig);
            signal_all(child, SIGCONT); /* a stopped process acts on it only once continued */
            if (deadline < 0)
                deadline = now_ms() + grace_ms;
        } else {
            kill(-child, sig);
        }
    }

    if (WIFSIGNALED(child_status)) {
        report("signal", WTERMSIG(child_status));
        code = 128 + WTERMSIG(child_status);
    } else {
        report("exit", WEXITSTATUS(child_status));
        code = WEXITSTATUS(child_status);
    }
    return code;
}

/* The next NUL-terminated string of the message at *at (before end), or
 * NULL when there is none. */
static char *next_string(char **at, char *end)
{
    char *s = *at, *nul = s < end ? memchr(s, '\0', (size_t)(end - s)) : NULL;
    if (nul == NULL)
        return NULL;
    *at = nul + 1;
    return s;
}

/* n strings of the message into a NULL-terminated array (after the `skip`
 * first slots, left NULL), or NULL. */
static char **string_list(char **at, char *end, long n, int skip)
{
    char **v;
    if (n < 0 || n > BEAT_WARM_MAX)
        return NULL;
    v = calloc((size_t)(n + skip + 1), sizeof *v);
    for (long i = 0; v != NULL && i < n; i++)
        if ((v[skip + i] = next_string(at, end)) == NULL) {
            free(v);
            v = NULL;
        }
    return v;
}

/*
 * A shim started ahead of need, by beat's side of the spawn while an
 * earlier command runs, so that starting the next command costs a message
 * instead of an exec (see exec.c). It waits, every signal blocked and
 * killed if beat dies, for one message on fd 3 (see shim.h), puts the
 * command's descriptors at 0-3, its directory and environment in place,
 * and from there on is the shim of that command. No message (beat let it
 * go, or died): it exits. beat started it in a session of its own, as it
 * starts every shim.
 */
int beat_shim_warm(pid_t parent)
{
    static char buf[BEAT_WARM_MAX + 1];
    union {
        char space[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec io = {buf, BEAT_WARM_MAX};
    struct msghdr m;
    struct cmsghdr *c;
    int fds[4];
    ssize_t n;
    char *at = buf, *end, *grace, *parent_pid, *file, *count, *cwd;
    char **argv, **envv;

    prctl(PR_SET_NAME, "beat-shim");
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) /* beat died before the death signal was armed */
        return 137;
    memset(&m, 0, sizeof m);
    m.msg_iov = &io;
    m.msg_iovlen = 1;
    m.msg_control = ctl.space;
    m.msg_controllen = sizeof ctl.space;
    do
        n = recvmsg(3, &m, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return 0;
    c = CMSG_FIRSTHDR(&m);
    if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
        c->cmsg_len != CMSG_LEN(sizeof fds) || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
        return 126;
    memcpy(fds, CMSG_DATA(c), sizeof fds);
    close(3);  /* the socket: received descriptors are 4 and above (0-2 are open) */
    for (int i = 0; i < 4; i++)
        if (dup2(fds[i], i) < 0)
            return 126;
    for (int i = 0; i < 4; i++)
        if (fds[i] > 3)
            close(fds[i]);
    end = buf + n;
    *end = '\0';
    grace = next_string(&at, end);
    parent_pid = next_string(&at, end);
    file = next_string(&at, end);
    count = next_string(&at, end);
    if (count == NULL || (argv = string_list(&at, end, atol(count), 4)) == NULL)
        return 126;
    argv[0] = "beat-shim";
    argv[1] = grace;
    argv[2] = parent_pid;
    argv[3] = file;
    count = next_string(&at, end);
    if (count == NULL || (envv = string_list(&at, end, atol(count), 0)) == NULL)
        return 126;
    cwd = next_string(&at, end);
    if (cwd == NULL)
        return 126;
    if (cwd[0] != '\0' && chdir(cwd) != 0) {
        report("error", errno);
        return 127;
    }
    environ = envv;
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    return beat_shim_main(argc, argv);
}

#ifdef BEAT_SHIM_STANDALONE
/* The embedded helper (exec.c): a shim, or a warm one. */
int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "warm") == 0)
        return beat_shim_warm((pid_t)atoi(argv[2]));
    return beat_shim_main(argc, argv);
}
#endif
