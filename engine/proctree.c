/*
 * proctree.c: find and signal every descendant of a process by walking
 * /proc. Used by the shim (its command's whole tree, including processes
 * that left the process group with setsid) and by beat at exit. Built into
 * the embedded shim too, so it uses libc only.
 *
 * One kind of descendant is left alone, with its whole subtree: a beat run
 * started with --detach (`beat loop ... --detached-run`, see detach.c). It
 * asked to outlive whoever started it — a test, an agent, an MCP client
 * under beat — and it ends its own commands itself. The mark is in its
 * argv, which its children do not inherit.
 */
#include <ctype.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shim.h"

typedef struct {
    pid_t pid, ppid;
} pid_pair;

/* The parent of a live process, or -1 if it is gone or has finished
 * exiting. A zombie whose other threads are not gone has not: its main
 * thread ended first (pthread_exit, or killed before them), and the others
 * may run on indefinitely. */
static pid_t read_ppid(pid_t pid)
{
    char path[64], buf[512];
    FILE *f;
    size_t n;
    char *close_paren, *field;
    int ppid = -1;
    long threads;
    char state = '?';
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* the command name may hold spaces and parentheses: parse after the last ')' */
    close_paren = strrchr(buf, ')');
    /* fields 3 (state), 4 (ppid), ..., 20 (num_threads) */
    if (close_paren == NULL || sscanf(close_paren + 1, " %c %d", &state, &ppid) != 2)
        return -1;
    field = close_paren + 2;
    for (int k = 3; k < 20 && field != NULL; k++)
        if ((field = strchr(field, ' ')) != NULL)
            field++;
    threads = field != NULL ? strtol(field, NULL, 10) : 0;
    if (state == 'X' || (state == 'Z' && threads <= 1)) /* dead, only waiting to be reaped */
        return -1;
    return (pid_t)ppid;
}

/* Whether pid is a detached beat run: "--detached-run" is one of its
 * arguments. */
static int is_detached_run(pid_t pid)
{
    char path[64], buf[4096];
    FILE *f;
    size_t n;
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i += strlen(buf + i) + 1)
        if (strcmp(buf + i, "--detached-run") == 0)
            return 1;
    return 0;
}

/* How many live children parent has, not counting detached beat runs
 * (which outlive it on purpose) nor zombies. */
int beat_live_children(pid_t parent)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    int count = 0;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        pid_t pid;
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        pid = (pid_t)atoi(e->d_name);
        if (read_ppid(pid) == parent && !is_detached_run(pid))
            count++;
    }
    closedir(d);
    return count;
}

/* Sends sig to every live descendant of root (not root itself), except the
 * members of process group skip_group (0: none) and detached beat runs with
 * their subtrees, and returns how many were signalled. A caller that loops until it returns 0 also catches processes
 * forked while it ran. */
int beat_kill_descendants(pid_t root, int sig, pid_t skip_group)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_pair *all = NULL;
    size_t n = 0, cap = 0;
    pid_t *found;
    size_t nfound = 0, scan = 0;
    int count = 0;

    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL) {
        pid_t pid, ppid;
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        pid = (pid_t)atoi(e->d_name);
        ppid = read_ppid(pid);
        if (ppid < 0)
            continue;
        if (n == cap) {
            pid_pair *grown = realloc(all, (cap = cap ? cap * 2 : 256) * sizeof *all);
            if (grown == NULL)
                break;
            all = grown;
        }
        all[n].pid = pid;
        all[n].ppid = ppid;
        n++;
    }
    closedir(d);

    found = malloc((n + 1) * sizeof *found);
    if (found == NULL) {
        free(all);
        return 0;
    }
    found[nfound++] = root;
    while (scan < nfound) { /* breadth-first over the parent links */
        pid_t parent = found[scan++];
        for (size_t i = 0; i < n; i++)
            if (all[i].ppid == parent && all[i].pid != root) {
                all[i].ppid = -1;
                if (!is_detached_run(all[i].pid))
                    found[nfound++] = all[i].pid;
            }
    }
    for (size_t i = 1; i < nfound; i++) {
        if (skip_group > 0 && getpgid(found[i]) == skip_group)
            continue;
        if (kill(found[i], sig) == 0)
            count++;
    }
    free(found);
    free(all);
    return count;
}
