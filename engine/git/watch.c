/*
 * watch.c — the inotify watch: which work-tree paths changed since the last
 * tree, so the next tree costs what changed, not what the work tree holds.
 *
 * The watch covers every directory git looks into (ignored directories
 * without tracked files are not watched).  Whenever it may have missed an
 * event (queue overflow, watch limit, the work tree moved) it says so
 * (valid = 0) and scan.c falls back to a full scan.
 */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "fs.h"
#include "git.h"
#include "runtime.h"

#define WATCH_MASK (IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | \
    IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | \
    IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

/* Takes ownership of path (freed by pend_clear); -1 when out of memory, the
 * caller then still owns path. */
static int pend_add(pendings *p, char *path, int dir)
{
    pending *v = vec_room(p->v, p->n, &p->cap, sizeof *v, 64);
    if (!v)
        return -1;
    p->v = v;
    p->v[p->n].path = path;
    p->v[p->n].dir = dir;
    p->n++;
    return 0;
}

static void pend_clear(pendings *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->v[i].path);
    p->n = 0;
}

static int pend_cmp(const void *a, const void *b)
{
    return strcmp(((const pending *)a)->path, ((const pending *)b)->path);
}

/* ---- letting the kernel free a watch at exit ---------------------------
 * Closing the last descriptor of an inotify instance frees its marks and
 * waits for an SRCU grace period (fsnotify_destroy_group): ~0.1 ms on an
 * idle machine, 5-25 ms on a loaded one. beat closes its repositories as
 * it ends (lua_close), and a process's exit waits the same way for what is
 * left open: once per run, a third of what a short `beat loop` cost beyond
 * its commands (docs/performance.md). So once beat is ending, a watch is
 * not closed but handed to the kernel: its descriptor is sent, with the
 * receiving end of a new socket pair, to that end, and every descriptor is
 * closed. The receiving socket is then held only by its own queue, a cycle
 * that the kernel's unix-socket garbage collector ends, started by the
 * release of the sending end; the instance's last reference, and the wait,
 * go there, in a kernel worker since Linux 6.10: no process waits. Before
 * that, the collector ran in the closing process and the wait is where it
 * was. A process that goes on closes its watches itself: the kernel then
 * frees them in step with it, so a loop of opens and closes never holds
 * more instances than the user may have (fs.inotify.max_user_instances). */
static int ending;

void beat_git_ending(void)
{
    ending = 1;
}

static int hand_to_kernel(int fd)
{
    char byte = 0;
    int sv[2], fds[2];
    if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0)
        return -1;
    fds[0] = fd;
    fds[1] = sv[0];
    if (fs_send_fds(sv[1], &byte, 1, fds, 2) < 0) {
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    close(fd);
    close(sv[0]);
    close(sv[1]);  /* the sending end last: its release starts the collector */
    return 0;
}

/* Stops the watch and forgets what it saw: the next tree is a full scan.
 * Idempotent; the pending list's storage is kept for reuse. */
void watch_stop(watch *w)
{
    if (w->fd >= 0 && !(ending && hand_to_kernel(w->fd) == 0))
        close(w->fd);
    w->fd = -1;
    for (size_t i = 0; i < w->ndirs; i++)
        free(w->dirs[i]);
    free(w->dirs);
    w->dirs = NULL;
    w->ndirs = 0;
    pend_clear(&w->pend);
    w->valid = 0;
    w->has_base = 0;
    w->has_itree = 0;
}

/* Adds path (copied) to the paths the next tree looks at again, as if the
 * watch had seen it change; -1 when out of memory. */
int watch_pend(watch *w, const char *path)
{
    char *p = str_dup(path);
    if (!p || pend_add(&w->pend, p, 0) < 0) {
        free(p);
        return -1;
    }
    return 0;
}

/* watch_stop, and the pending list's storage freed too (repo_close). */
void watch_free(watch *w)
{
    watch_stop(w);
    free(w->pend.v);
    w->pend.v = NULL;
    w->pend.cap = 0;
}

/* Watches the directory rel (when the watch runs and is valid).  A watch
 * limit reached makes the watch invalid rather than failing; -1 only when
 * out of memory. */
int watch_dir(brepo *r, const char *rel)
{
    watch *w = &r->w;
    char *abs;
    int wd;
    if (w->fd < 0 || !w->valid)
        return 0;
    if (!(abs = path_abs(r, rel)))
        return -1;
    wd = inotify_add_watch(w->fd, abs, WATCH_MASK);
    free(abs);
    if (wd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        w->valid = 0;  /* ENOSPC (max_user_watches) and the like */
        w->state = "watch limit reached";
        return 0;
    }
    if ((size_t)wd >= w->ndirs) {
        size_t n = w->ndirs ? w->ndirs : 256;
        while (n <= (size_t)wd)
            n *= 2;
        char **v = realloc(w->dirs, n * sizeof *v);
        if (!v)
            return -1;
        memset(v + w->ndirs, 0, (n - w->ndirs) * sizeof *v);
        w->dirs = v;
        w->ndirs = n;
    }
    free(w->dirs[wd]);
    if (!(w->dirs[wd] = str_dup(rel)))
        return -1;
    return 0;
}

/* Stops watching rel and everything under it (it moved or went away). */
static void watch_forget(watch *w, const char *rel)
{
    size_t n = strlen(rel);
    for (size_t i = 0; i < w->ndirs; i++) {
        const char *d = w->dirs[i];
        if (!d)
            continue;
        if (n == 0 || (strncmp(d, rel, n) == 0 && (d[n] == '\0' || d[n] == '/'))) {
            inotify_rm_watch(w->fd, (int)i);
            free(w->dirs[i]);
            w->dirs[i] = NULL;
        }
    }
}

/* Reads every queued event into w->pend, keeping the watch set current;
 * an overflow or too many pending paths makes the watch invalid.  -1 only
 * when out of memory. */
int watch_drain(watch *w)
{
    char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
    for (;;) {
        ssize_t n = read(w->fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                w->valid = 0;
            break;
        }
        if (n == 0)
            break;
        for (char *p = buf; p < buf + n;) {
            struct inotify_event *ev = (struct inotify_event *)(void *)p;
            p += sizeof *ev + ev->len;
            if (ev->mask & IN_Q_OVERFLOW) {
                w->valid = 0;
                w->state = "event queue overflowed";
                continue;
            }
            if (ev->wd < 0 || (size_t)ev->wd >= w->ndirs || !w->dirs[ev->wd])
                continue;
            const char *dir = w->dirs[ev->wd];
            if (ev->mask & IN_IGNORED) {
                free(w->dirs[ev->wd]);
                w->dirs[ev->wd] = NULL;
                continue;
            }
            if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
                if (dir[0] == '\0') {
                    w->valid = 0;  /* the work tree itself went away */
                    w->state = "work tree moved";
                } else if (ev->mask & IN_MOVE_SELF) {
                    char *d = str_dup(dir);
                    if (!d)
                        return -1;
                    watch_forget(w, d);
                    if (pend_add(&w->pend, d, 0) < 0) {
                        free(d);
                        return -1;
                    }
                }
                continue;
            }
            if (ev->len == 0 || ev->name[0] == '\0')
                continue;
            char *path = path_join(dir, ev->name);
            if (!path)
                return -1;
            int isdir = 0;
            if (ev->mask & IN_ISDIR) {
                if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
                    isdir = 1;
                } else if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
                    watch_forget(w, path);
                } else {
                    free(path);  /* attribute change of a directory */
                    continue;
                }
            }
            if (pend_add(&w->pend, path, isdir) < 0) {
                free(path);
                return -1;
            }
        }
    }
    if (w->pend.n > MAX_PENDING) {
        w->valid = 0;
        w->state = "too many changes";
    }
    return 0;
}

/* The index entry whose blob a scan keeps at path whatever the work tree
 * holds there, as the full scan does (see scan.c): one marked
 * assume-unchanged, or skip-worktree while the file is there.  NULL when
 * the path is looked at as usual. */
static const ientry *kept_entry(const bindex *ix, const char *path, int present)
{
    const ientry *ie = bindex_get(ix, path);
    if (ie && ((ie->flags & IENTRY_VALID) ||
            (present && (ie->fext & IENTRY_SKIP_WORKTREE))))
        return ie;
    return NULL;
}

/*
 * Walks the directory rel (already known to be a directory): watches it and
 * every directory under it that git would look into, and with out != NULL
 * emits an upsert for every file a snapshot holds (tracked, or untracked and
 * not ignored).  Nested repositories are not entered: a tracked submodule
 * keeps the index's gitlink, an untracked nested repository is left out, as
 * in the full scan.
 */
int watch_walk(brepo *r, const bindex *ix, const char *rel, changes *out,
    size_t *nhashed, errbuf *e)
{
    char *abs;
    DIR *d;
    struct dirent *de;
    int rc = 0;

    if (rel[0]) {
        char *gitp = path_join(rel, ".git");
        char *agit = gitp ? path_abs(r, gitp) : NULL;
        struct stat st;
        int nested = agit && lstat(agit, &st) == 0;
        free(gitp);
        free(agit);
        if (nested) {
            const ientry *ie = bindex_get(ix, rel);
            if (out && ie && ie->mode == GIT_FILEMODE_COMMIT &&
                changes_add(out, rel, &ie->id, GIT_FILEMODE_COMMIT) < 0)
                return err_set(e, "snapshot: out of memory");
            return 0;
        }
        if (!tree_has_tracked_under(ix, rel) && tree_is_ignored(r, rel))
            return 0;
    }
    if (watch_dir(r, rel) < 0)
        return err_set(e, "snapshot: out of memory");
    if (!(abs = path_abs(r, rel)))
        return err_set(e, "snapshot: out of memory");
    d = opendir(abs);
    free(abs);
    if (!d) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        return err_os(e, "snapshot", rel[0] ? rel : ".");
    }
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
            continue;
        char *child = path_join(rel, nm);
        if (!child) {
            rc = err_set(e, "snapshot: out of memory");
            break;
        }
        if (path_excluded(r, child)) {
            free(child);
            continue;
        }
        unsigned char type = de->d_type;
        if (type == DT_UNKNOWN) {
            struct stat st;
            char *ac = path_abs(r, child);
            type = DT_REG;
            if (ac && lstat(ac, &st) == 0) {
                if (S_ISDIR(st.st_mode))
                    type = DT_DIR;
                else if (S_ISLNK(st.st_mode))
                    type = DT_LNK;
                else if (!S_ISREG(st.st_mode))
                    type = DT_FIFO;
            }
            free(ac);
        }
        if (type == DT_DIR) {
            rc = watch_walk(r, ix, child, out, nhashed, e);
        } else if (out && (type == DT_REG || type == DT_LNK) &&
               (tree_is_tracked(ix, child) || !tree_is_ignored(r, child))) {
            git_oid oid;
            uint32_t mode;
            const ientry *ke = kept_entry(ix, child, 1);
            int h = 1;
            if (ke) {
                git_oid_cpy(&oid, &ke->id);  /* kept, not read */
                mode = tree_mode(ke->mode);
            } else if ((h = tree_hash_path(r, ix, child, 0, &oid, &mode, NULL, e)) == 1) {
                (*nhashed)++;
            }
            if (h < 0)
                rc = -1;
            else if (h == 1 && changes_add(out, child, &oid, mode) < 0)
                rc = err_set(e, "snapshot: out of memory");
            else if (h == 2)
                rc = watch_walk(r, ix, child, out, nhashed, e);
        }
        free(child);
        if (rc < 0)
            break;
    }
    closedir(d);
    return rc;
}

/* Whether path or one of its ancestors was walked already in this pass. */
static int is_rescanned(const strvec *done, const char *path)
{
    /* done holds sorted paths; look for path itself or any ancestor */
    size_t len = strlen(path);
    for (size_t i = 0; i < done->n; i++) {
        size_t n = strlen(done->v[i]);
        if (n <= len && strncmp(done->v[i], path, n) == 0 &&
            (path[n] == '\0' || path[n] == '/'))
            return 1;
    }
    return 0;
}

/*
 * Turns the pending paths into changes (out != NULL) or, in maintenance mode
 * (out == NULL), only brings the watch set up to date with the directories
 * that appeared.  Consumes the pending list.
 */
int watch_process(brepo *r, const bindex *ix, changes *out,
    size_t *nhashed, errbuf *e)
{
    watch *w = &r->w;
    strvec done = {0};
    int rc = 0;

    if (w->pend.n)
        qsort(w->pend.v, w->pend.n, sizeof *w->pend.v, pend_cmp);
    for (size_t i = 0; i < w->pend.n && rc == 0; i++) {
        pending *p = &w->pend.v[i];
        /* several events for one path: it is one change */
        while (i + 1 < w->pend.n && strcmp(p->path, w->pend.v[i + 1].path) == 0)
            p->dir |= w->pend.v[++i].dir;
        if (path_excluded(r, p->path) || is_rescanned(&done, p->path))
            continue;
        git_oid oid;
        uint32_t mode;
        char *abs = path_abs(r, p->path);
        struct stat st;
        int kind;  /* 0 nothing, 1 file, 2 dir */
        if (!abs) {
            rc = err_set(e, "snapshot: out of memory");
            break;
        }
        if (!path_parents_real(r, p->path) || lstat(abs, &st) < 0)
            kind = 0;
        else if (S_ISDIR(st.st_mode))
            kind = 2;
        else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))
            kind = 1;
        else
            kind = 0;
        free(abs);
        if (kind == 2) {
            if (strvec_add(&done, p->path) < 0) {
                rc = err_set(e, "snapshot: out of memory");
                break;
            }
            if (out && changes_add(out, p->path, NULL, 0) < 0) {
                rc = err_set(e, "snapshot: out of memory");
                break;
            }
            rc = watch_walk(r, ix, p->path, out, nhashed, e);
            continue;
        }
        if (!out)
            continue;
        const ientry *ke = kept_entry(ix, p->path, kind == 1);
        if (ke) {
            if (changes_add(out, p->path, &ke->id, tree_mode(ke->mode)) < 0)
                rc = err_set(e, "snapshot: out of memory");
        } else if (kind == 1 && (tree_is_tracked(ix, p->path) || !tree_is_ignored(r, p->path))) {
            int h = tree_hash_path(r, ix, p->path, S_ISREG(st.st_mode), &oid, &mode, NULL, e);
            if (h < 0) {
                rc = -1;
            } else if (h == 1) {
                (*nhashed)++;
                if (changes_add(out, p->path, &oid, mode) < 0)
                    rc = err_set(e, "snapshot: out of memory");
            } else if (changes_add(out, p->path, NULL, 0) < 0) {
                rc = err_set(e, "snapshot: out of memory");
            }
        } else if (changes_add(out, p->path, NULL, 0) < 0) {
            rc = err_set(e, "snapshot: out of memory");
        }
    }
    strvec_free(&done);
    pend_clear(&w->pend);
    return rc;
}

/* True when a pending path may change which files are included: then only a
 * full scan is right.  (.gitattributes does not matter here: files are stored
 * as their bytes, whatever the attributes say.) */
int watch_touches_rules(const watch *w)
{
    for (size_t i = 0; i < w->pend.n; i++) {
        const char *s = strrchr(w->pend.v[i].path, '/');
        s = s ? s + 1 : w->pend.v[i].path;
        if (strcmp(s, ".gitignore") == 0)
            return 1;
    }
    return 0;
}

/* Opens the inotify instance; the full scan then watches each directory
 * it walks (watch_dir), before it reads it.  Where inotify does not allow
 * it, the repo falls back to full scans for good (use_watch = 0) and
 * w->off says why; that is not an error.  Returns whether it runs. */
int watch_init(brepo *r)
{
    watch *w = &r->w;
    w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->fd < 0) {
        w->off = "inotify unavailable";
        r->use_watch = 0;  /* EMFILE and the like: full scans from now on */
        return 0;
    }
    w->valid = 1;
    w->has_base = 0;
    return 1;
}
