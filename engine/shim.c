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
 * signal). The shim beat embeds is started as `beat-shim warm PARENT_PID`
 * instead and runs one command after another, each sent on a socket, with
 * the same guarantees for each (beat_shim_warm below).
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

/* The signals a shim takes from sigwaitinfo: every other is unblocked. */
static sigset_t handled;

/* What a shim does once, before its first command: its name (started from
 * a memfd, it would be named "12"), its signal mask (beat starts it with
 * every signal blocked), the child subreaper and the death signal. -1 when
 * beat died before the death signal was armed. */
static int shim_setup(pid_t parent)
{
    prctl(PR_SET_NAME, "beat-shim");
    sigemptyset(&handled);
    sigaddset(&handled, SIGCHLD);
    sigaddset(&handled, SIGTERM);
    sigaddset(&handled, SIGINT);
    sigaddset(&handled, SIGHUP);
    sigaddset(&handled, SIGQUIT);
    sigaddset(&handled, SIGUSR1);
    sigaddset(&handled, SIGUSR2);
    sigaddset(&handled, BEAT_SIG_KILLALL);
    sigprocmask(SIG_SETMASK, &handled, NULL);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_PDEATHSIG, BEAT_SIG_KILLALL);
    return getppid() == parent ? 0 : -1;
}

/* Runs one command to its end and its leftovers' (fd 3, close-on-exec, is
 * the status pipe): reports "pid N", then its fate, and returns the exit
 * status the one-shot shim exits with. */
static int supervise(long long grace_ms, const char *file, char **argv)
{
    long long deadline = -1;
    pid_t child;
    int child_status = 0, child_done = 0;

    child = start_command(file, argv);
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
            sig = sigtimedwait(&handled, &info, &ts);
        } else {
            sig = sigwaitinfo(&handled, &info);
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
        return 128 + WTERMSIG(child_status);
    }
    report("exit", WEXITSTATUS(child_status));
    return WEXITSTATUS(child_status);
}

int beat_shim_main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "beat shim: internal use only\n");
        return 2;
    }
    if (shim_setup((pid_t)atoi(argv[2])) != 0)
        return 137;
    fcntl(3, F_SETFD, FD_CLOEXEC);
    return supervise(atoll(argv[1]), argv[3], argv + 4);
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

/* n strings of the message into a NULL-terminated array, or NULL. */
static char **string_list(char **at, char *end, long n)
{
    char **v;
    if (n < 0 || n > BEAT_WARM_MAX)
        return NULL;
    v = calloc((size_t)(n + 1), sizeof *v);
    for (long i = 0; v != NULL && i < n; i++)
        if ((v[i] = next_string(at, end)) == NULL) {
            free(v);
            v = NULL;
        }
    return v;
}

/* Signals that came while the shim waited for a command: a death signal
 * from a beat that is gone ends it (1); children that ended (detached runs
 * it adopted) are reaped; anything else was meant for the command before,
 * which had ended when it came, and is dropped. */
static int drain_signals(pid_t parent)
{
    struct timespec zero = {0, 0};
    siginfo_t info;
    int sig;
    while ((sig = sigtimedwait(&handled, &info, &zero)) > 0) {
        if (sig == SIGCHLD)
            while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
        else if (sig == BEAT_SIG_KILLALL && getppid() != parent)
            return 1;
    }
    return 0;
}

/* Whether the shim has a child left (reaping those that ended): between
 * commands, only a detached beat run it adopted can be one. */
static int has_children(void)
{
    pid_t pid;
    while ((pid = waitpid(-1, NULL, WNOHANG)) > 0)
        ;
    return pid == 0;
}

/* Takes one command from the message in buf (n bytes) and its descriptors,
 * runs it, and lets go of what it was given. 1 when the shim is free for the
 * next command, and has said so ("idle" on the report pipe); 0 when it must
 * go instead: it adopted a detached run (beat loop --detach) that still
 * lives, and a shim waiting for commands would be the subreaper of what
 * that run leaves when it ends, and end it with a later command's
 * leftovers; exiting, it hands the run up to beat, as a one-shot shim
 * does. -1 when the message is not one beat sends. */
static int run_message(char *buf, ssize_t n, const int fds[4], int devnull)
{
    static char *no_env[] = {NULL};
    char *at = buf, *end = buf + n, *grace, *parent_pid, *file, *count, *cwd;
    char **argv, **envv = NULL;
    int rc = -1;

    /* descriptors 0-2 are open (/dev/null between commands), so each
     * received one is 3 or above, and one at 3 is moved before fd 3 is
     * replaced */
    for (int i = 0; i < 4; i++)
        if (dup2(fds[i], i) < 0)
            goto out;
    for (int i = 0; i < 4; i++)
        if (fds[i] > 3)
            close(fds[i]);
    fcntl(3, F_SETFD, FD_CLOEXEC);
    *end = '\0';
    grace = next_string(&at, end);
    parent_pid = next_string(&at, end);  /* the one-shot shim's; this one checked its parent once */
    file = next_string(&at, end);
    count = next_string(&at, end);
    if (parent_pid == NULL || count == NULL || (argv = string_list(&at, end, atol(count))) == NULL)
        goto out;
    count = next_string(&at, end);
    if (count == NULL || (envv = string_list(&at, end, atol(count))) == NULL)
        goto out_argv;
    cwd = next_string(&at, end);
    if (cwd == NULL)
        goto out_env;
    rc = 0;
    if (cwd[0] != '\0' && chdir(cwd) != 0) {
        report("error", errno);
    } else {
        environ = envv;
        supervise(atoll(grace), file, argv);
        environ = no_env;
    }
out_env:
    free(envv);
out_argv:
    free(argv);
out:
    /* the command's descriptors go: its pipes to beat reach their end,
     * the report pipe last, so that beat wakes once for all of them */
    for (int i = 0; i < 3; i++)
        dup2(devnull, i);
    if (rc == 0 && !has_children()) {
        chdir("/"); /* it holds no directory of the command's while it waits */
        report("idle", 0);
        rc = 1;
    }
    close(3);
    return rc;
}

/*
 * A shim that runs command after command, each when beat sends it: started
 * ahead of need, while an earlier command runs, it waits on the socket at
 * fd 3 for a message (see shim.h): the command's descriptors 0-3
 * (SCM_RIGHTS), its arguments, environment and directory. It runs it as
 * the one-shot shim does (its session, the subreaper, the death signal
 * are set up once), reports on fd 3, says "idle", closes fd 3 — beat takes
 * that hang-up after "idle" as "done, and free again" — and waits for the
 * next. Between commands it holds nothing of theirs (0-2
 * are /dev/null) and no child but detached runs it adopted. It exits when
 * beat closes the socket (beat let it go, or died) or kills it.
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
    int fds[4], sock, devnull;
    ssize_t n;

    if (shim_setup(parent) != 0)
        return 137;
    sock = fcntl(3, F_DUPFD_CLOEXEC, 10); /* fd 3 is each command's status pipe */
    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (sock < 0 || devnull < 0)
        return 126;
    close(3);
    for (;;) {
        memset(&m, 0, sizeof m);
        m.msg_iov = &io;
        m.msg_iovlen = 1;
        m.msg_control = ctl.space;
        m.msg_controllen = sizeof ctl.space;
        do
            n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
            return 0;
        c = CMSG_FIRSTHDR(&m);
        if (c == NULL || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
            c->cmsg_len != CMSG_LEN(sizeof fds) || (m.msg_flags & (MSG_TRUNC | MSG_CTRUNC)))
            return 126;
        memcpy(fds, CMSG_DATA(c), sizeof fds);
        if (drain_signals(parent))
            return 137;
        switch (run_message(buf, n, fds, devnull)) {
        case 1:
            break;
        case 0:
            return 0;
        default:
            return 126;
        }
    }
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
