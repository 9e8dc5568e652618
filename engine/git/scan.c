/*
 * scan.c — the tree of the work tree as it is now, by the cheapest way that
 * is right: from the previous tree and the paths the watch saw change, or
 * from a full scan (the index's tree, plus every path whose stat data does
 * not match its index entry, read and hashed — the index is the stat cache,
 * so unchanged files are not read — plus every untracked file that is not
 * ignored, plus every tracked file a filter may have applied to, see
 * filter.c).
 *
 * The full scan walks the work tree once: each directory is watched (when
 * the watch starts with the scan) before it is read, its names are matched
 * with the index's entries below it, and its tracked files are queued, to
 * be stat'ed by other threads while the walk goes on: each once its
 * directory is watched, so a change after the stat is an event, a change
 * before it is seen by the scan.  The index is read by index.c, ignore
 * rules mostly answered by ignore.c.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "git.h"
#include "runtime.h"

/* One entry of a directory being walked: its name in the walk's arena. */
typedef struct {
    size_t off, len;
    unsigned char type;  /* DT_DIR, DT_REG, DT_LNK, or DT_UNKNOWN: other */
    unsigned char seen;  /* matched with the index's entries */
} dent;

/* A subdirectory to walk once the directory's own files are done, with the
 * index entries below it, v[lo..hi). */
typedef struct {
    size_t off, len;  /* its name in the arena */
    size_t lo, hi;
    int dign;         /* 0: known not to be ignored; -1: not known */
} subdir;

typedef struct {
    brepo *r;
    const bindex *ix;
    changes *c;
    strvec *seen;      /* tracked paths read, gone or retyped (for filter.c) */
    size_t *nhashed;
    errbuf *e;
    int watch;         /* watch each directory before reading it */
    int root;          /* the work tree's fd */
    char *path;        /* the path being looked at, relative */
    size_t plen, pcap;
    char *key;         /* room for a search key */
    size_t kcap;
    struct jobq *q;    /* tracked files to stat, each once its directory is watched */
    ignstack *ign;     /* the ignore rules of the directories walked, or NULL */
    int attrs;         /* a directory with tracked files has a .gitattributes */
} walker;

/* A tracked file to stat, and what its stat data say. */
typedef struct sjob {
    const ientry *te;
    int res;  /* JOB_CLEAN, JOB_FILE, JOB_LINK (read it), JOB_GONE */
} sjob;

enum { JOB_CLEAN, JOB_FILE, JOB_LINK, JOB_GONE };

/* Appends "/name" (or "name" at the root) to the walker's path. */
static int path_push(walker *w, const char *name, size_t len)
{
    size_t need = w->plen + 1 + len + 2;
    if (need > w->pcap) {
        size_t nc = w->pcap ? w->pcap * 2 : 256;
        while (nc < need)
            nc *= 2;
        char *np = realloc(w->path, nc);
        if (!np)
            return -1;
        w->path = np;
        w->pcap = nc;
    }
    if (w->plen)
        w->path[w->plen++] = '/';
    memcpy(w->path + w->plen, name, len);
    w->plen += len;
    w->path[w->plen] = '\0';
    return 0;
}

static void path_pop(walker *w, size_t to)
{
    w->plen = to;
    w->path[to] = '\0';
}

/* FNV-1a over a name, for the directory's table of names. */
static uint32_t name_hash(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* The directory's entry named name[0..len), or NULL. */
static dent *dent_find(dent *dv, const char *arena, const uint32_t *table,
    size_t tsize, const char *name, size_t len)
{
    uint32_t h = name_hash(name, len) & (uint32_t)(tsize - 1);
    for (; table[h]; h = (h + 1) & (uint32_t)(tsize - 1)) {
        dent *x = &dv[table[h] - 1];
        if (x->len == len && memcmp(arena + x->off, name, len) == 0)
            return x;
    }
    return NULL;
}

static int oom(walker *w)
{
    return err_set(w->e, "snapshot: out of memory");
}

static int note_seen(walker *w)
{
    if (w->seen && strvec_add(w->seen, w->path) < 0)
        return oom(w);
    return 0;
}

/* The mode a tree records for a tracked path now of stat st, where the
 * index says mode. */
static uint32_t work_mode(const brepo *r, const struct stat *st, uint32_t mode)
{
    if (S_ISLNK(st->st_mode))
        return GIT_FILEMODE_LINK;
    if (!r->filemode)  /* core.fileMode off: the index keeps the exec bit */
        return (mode & 0170000) == 0100000 && (mode & 0100) ? GIT_FILEMODE_BLOB_EXECUTABLE
            : GIT_FILEMODE_BLOB;
    return (st->st_mode & S_IXUSR) ? GIT_FILEMODE_BLOB_EXECUTABLE : GIT_FILEMODE_BLOB;
}

/*
 * Whether the file whose stat data is st may hold other bytes than the
 * index entry ie records: git's stat comparison (mode, size, mtime, ctime
 * unless core.trustCtime is off, inode, owner), plus racily clean entries
 * (changed in the same tick as the index was written: not provably clean).
 */
static int stat_dirty(const brepo *r, const fsig *is, const ientry *ie,
    const struct stat *st)
{
    if (tree_mode(ie->mode) != work_mode(r, st, ie->mode) ||
        ie->size != (uint32_t)st->st_size ||
        ie->mtime_s != (uint32_t)st->st_mtim.tv_sec ||
        ie->mtime_ns != (uint32_t)st->st_mtim.tv_nsec ||
        (r->trustctime && (ie->ctime_s != (uint32_t)st->st_ctim.tv_sec ||
            ie->ctime_ns != (uint32_t)st->st_ctim.tv_nsec)) ||
        ie->ino != (uint32_t)st->st_ino ||
        ie->uid != (uint32_t)st->st_uid || ie->gid != (uint32_t)st->st_gid)
        return 1;
    /* racy: the index is not newer than the file */
    return (uint32_t)is->mtime.tv_sec < ie->mtime_s ||
        ((uint32_t)is->mtime.tv_sec == ie->mtime_s &&
            (uint32_t)is->mtime.tv_nsec <= ie->mtime_ns);
}

/* Reads and stores the file at the walker's path; an upsert when it holds
 * something else than ie says (ie NULL: untracked), a removal when there
 * is nothing to store there (gone, too large, of another kind). */
static int hash_here(walker *w, const ientry *ie, int reg)
{
    git_oid oid;
    uint32_t mode;
    int h = tree_hash_path(w->r, w->ix, w->path, reg, &oid, &mode, NULL, w->e);
    if (h < 0)
        return -1;
    if (h == 1) {
        (*w->nhashed)++;
        if (ie && !(ie->fext & IENTRY_INTENT_TO_ADD) && git_oid_equal(&oid, &ie->id) &&
            mode == tree_mode(ie->mode))
            return 0;  /* the same bytes: the index's tree has it */
        if (changes_add(w->c, w->path, &oid, mode) < 0)
            return oom(w);
        return 0;
    }
    if (ie && changes_add(w->c, w->path, NULL, 0) < 0)
        return oom(w);
    return 0;
}

/* The tracked entries v[lo..hi) are gone from the work tree: removals.  A
 * gitlink is kept (a scan never changes one), and so is an entry marked
 * assume-unchanged, as `git add -A` (and libgit2's diff) keep them. */
static int gone(walker *w, size_t lo, size_t hi)
{
    size_t keep = w->plen;
    for (size_t i = lo; i < hi; i++) {
        const ientry *ie = &w->ix->v[i];
        if (IENTRY_STAGE(ie) != 0 || (ie->mode & 0170000) == 0160000 ||
            (ie->flags & IENTRY_VALID))
            continue;
        /* the path from the walker's directory down */
        size_t dlen = keep ? keep + 1 : 0;
        if (path_push(w, ie->path + dlen, ie->len - dlen) < 0)
            return oom(w);
        if (!path_excluded(w->r, w->path) &&
            (changes_add(w->c, w->path, NULL, 0) < 0 || note_seen(w) < 0)) {
            path_pop(w, keep);
            return oom(w);
        }
        path_pop(w, keep);
    }
    return 0;
}

static int walk_dir(walker *w, size_t lo, size_t hi, int dign);

/*
 * An untracked directory at the walker's path: walked unless it is a
 * submodule's (the index has a gitlink there), a nested repository, or
 * ignored.
 */
static int untracked_dir(walker *w, int dfd, const char *name)
{
    const ientry *ie = bindex_get(w->ix, w->path);
    char *dotgit;
    struct stat st;
    int nested;
    if (ie && (ie->mode & 0170000) == 0160000)
        return 0;
    if (asprintf(&dotgit, "%s/.git", name) < 0)
        return oom(w);
    nested = fstatat(dfd, dotgit, &st, AT_SYMLINK_NOFOLLOW) == 0;
    free(dotgit);
    if (nested)
        return 0;
    size_t keep = w->plen;
    w->path[keep] = '/';
    w->path[keep + 1] = '\0';
    int ign = tree_is_ignored(w->r, w->path);
    w->path[keep] = '\0';
    return ign ? 0 : 1;
}

/* Queues a subdirectory (name in the arena) to walk after the files. */
static int queue_dir(subdir **sv, size_t *ns, size_t *cap, size_t off, size_t len,
    size_t lo, size_t hi, int dign)
{
    subdir *nv = vec_room(*sv, *ns, cap, sizeof **sv, 16);
    if (!nv)
        return -1;
    *sv = nv;
    nv[(*ns)++] = (subdir){off, len, lo, hi, dign};
    return 0;
}

/* The stat jobs: queued by the walk, taken a chunk at a time by the
 * threads that stat them while it goes on, and by the walking thread once
 * it is done.  v has room for every index entry (a tracked file is one), so
 * it never moves while the threads read it. */
typedef struct jobq {
    sjob *v;
    size_t cap;
    atomic_size_t n;     /* queued so far */
    atomic_size_t next;  /* the first not yet taken */
    atomic_int done;     /* the walk is over: n is final */
    pthread_mutex_t mu;  /* a thread waits on more for its chunk */
    pthread_cond_t more;
    size_t nthreads;
    int root;
    const brepo *r;
    const fsig *isig;
} jobq;

#define JOB_CHUNK 256

/* Wakes the threads waiting for jobs. */
static void jobs_more(jobq *q)
{
    pthread_mutex_lock(&q->mu);
    pthread_cond_broadcast(&q->more);
    pthread_mutex_unlock(&q->mu);
}

/*
 * A tracked path (the walker's, stage-0 entry te) with a work-tree entry
 * that is not a directory: queued, to be stat'ed (its directory is watched
 * by now, see run_jobs).  A submodule keeps its recorded commit, and an
 * entry marked assume-unchanged its index blob (as libgit2's diff did).
 */
static int tracked_file(walker *w, const ientry *te)
{
    jobq *q = w->q;
    if ((te->mode & 0170000) == 0160000 || (te->flags & IENTRY_VALID))
        return 0;
    size_t n = atomic_load_explicit(&q->n, memory_order_relaxed);
    if (n == q->cap)
        return err_set(w->e, "snapshot: more tracked files than index entries");
    q->v[n] = (sjob){te, JOB_CLEAN};
    atomic_store_explicit(&q->n, n + 1, memory_order_release);
    if (q->nthreads && (n + 1) % JOB_CHUNK == 0)
        jobs_more(q);
    return 0;
}

/* Stats jobs, a chunk at a time (waiting for the walk to queue it), until
 * none is left.  Touches nothing but the jobs' results: safe beside the
 * walk and the other threads. */
static void run_jobs(jobq *q)
{
    for (;;) {
        size_t i = atomic_fetch_add(&q->next, JOB_CHUNK), end = i + JOB_CHUNK, n;
        if (atomic_load(&q->n) < end && !atomic_load(&q->done)) {
            pthread_mutex_lock(&q->mu);
            while (atomic_load(&q->n) < end && !atomic_load(&q->done))
                pthread_cond_wait(&q->more, &q->mu);
            pthread_mutex_unlock(&q->mu);
        }
        n = atomic_load(&q->n);
        if (i >= n)
            return;
        if (end > n)
            end = n;
        for (; i < end; i++) {
            sjob *j = &q->v[i];
            const ientry *te = j->te;
            struct stat st;
            if (fstatat(q->root, te->path, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
                !(S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)))
                j->res = JOB_GONE;  /* gone since listed, or nothing git stores */
            else if ((te->fext & IENTRY_SKIP_WORKTREE) ||
                 (!(te->fext & IENTRY_INTENT_TO_ADD) && !stat_dirty(q->r, q->isig, te, &st)))
                j->res = JOB_CLEAN;  /* the index's blob */
            else
                j->res = S_ISREG(st.st_mode) ? JOB_FILE : JOB_LINK;
        }
    }
}

static void *job_thread(void *arg)
{
    run_jobs(arg);
    return NULL;
}

/* A thread per this many index entries, up to MAX_THREADS (counting the
 * walking one) and the processors there are: below that, starting one
 * costs more than it saves. */
#define FILES_PER_THREAD 500
#define MAX_THREADS 4

/* Sets up the queue for the index's entries and starts the threads that
 * stat while the walk goes on.  0, or -1 when out of memory. */
static int jobs_start(jobq *q, pthread_t *t, walker *w)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    size_t want = w->ix->n / FILES_PER_THREAD;
    q->cap = w->ix->n;
    q->v = q->cap ? malloc(q->cap * sizeof *q->v) : NULL;
    if (q->cap && !q->v)
        return -1;
    q->root = w->root;
    q->r = w->r;
    q->isig = &w->ix->sig;
    if (want > (size_t)(cpus > 0 ? cpus : 1))
        want = (size_t)(cpus > 0 ? cpus : 1);
    if (want > MAX_THREADS)
        want = MAX_THREADS;
    while (q->nthreads + 1 < want && beat_thread_start(&t[q->nthreads], job_thread, q) == 0)
        q->nthreads++;
    return 0;
}

/* The walk is over (or failed): the threads take what is left, this one
 * too, and are joined. */
static void jobs_finish(jobq *q, pthread_t *t)
{
    atomic_store(&q->done, 1);
    if (q->nthreads)
        jobs_more(q);
    run_jobs(q);
    for (size_t k = 0; k < q->nthreads; k++)
        pthread_join(t[k], NULL);
    q->nthreads = 0;
}

/*
 * With every job stat'ed: reads, in this thread (the only one that calls
 * libgit2), those whose stat data differ from their entry's, and notes the
 * gone ones.
 */
static int jobs_results(walker *w)
{
    jobq *q = w->q;
    size_t n = atomic_load(&q->n);
    for (size_t i = 0; i < n; i++) {
        sjob *j = &q->v[i];
        if (j->res == JOB_CLEAN)
            continue;
        path_pop(w, 0);
        if (path_push(w, j->te->path, j->te->len) < 0)
            return oom(w);
        if (j->res == JOB_GONE) {
            if (changes_add(w->c, w->path, NULL, 0) < 0)
                return oom(w);
        } else if (hash_here(w, j->te, j->res == JOB_FILE) < 0) {
            return -1;
        }
        if (note_seen(w) < 0)
            return -1;
    }
    path_pop(w, 0);
    return 0;
}

/*
 * Whether git ignores the untracked file at the walker's path (as libgit2
 * says), in the directory whose path is the first dlen bytes of it (0: the
 * root).  *dign caches whether that directory (or one above) is ignored: -1
 * not known yet.  The rules on the walker's stack answer where they are
 * sure (ignore.c); libgit2 answers the rest, and links (whose target
 * decides for libgit2 whether a rule for directories applies).
 */
static int file_ignored(walker *w, size_t dlen, int *dign, int reg)
{
    if (*dign < 0) {
        char save = w->path[dlen];
        w->path[dlen] = '/';
        char save2 = w->path[dlen + 1];
        w->path[dlen + 1] = '\0';
        *dign = tree_is_ignored(w->r, w->path);
        w->path[dlen] = save;
        w->path[dlen + 1] = save2;
    }
    if (reg && w->ign) {
        int v = ignore_file(w->ign, w->path, *dign);
        if (v >= 0)
            return v;
    }
    return tree_is_ignored(w->r, w->path);
}

/*
 * Walks the directory at the walker's path, whose index entries are
 * v[lo..hi): watches it first (when watching), reads it, matches each of
 * the index's names below it with the directory's (a table of names, no
 * sorting), then looks at what is left in the directory (untracked), then
 * walks its subdirectories.
 */
static int walk_dir(walker *w, size_t lo, size_t hi, int dign)
{
    const bindex *ix = w->ix;
    size_t dlen = w->plen ? w->plen + 1 : 0;  /* the entries' prefix */
    size_t keep = w->plen, nd = 0, dcap = 0, ns = 0, scap = 0, alen = 0, acap = 0;
    size_t tsize = 0, idepth = 0;
    int pushed = 0;
    dent *dv = NULL;
    subdir *sv = NULL;
    char *arena = NULL;
    uint32_t *table = NULL;
    DIR *d = NULL;
    int dfd, rc = -1;

    if (w->watch && watch_dir(w->r, w->path) < 0)
        return oom(w);
    dfd = openat(w->root, w->plen ? w->path : ".",
        O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) {
        if (errno == ENOENT || errno == ENOTDIR || errno == ELOOP)
            return gone(w, lo, hi);  /* went away, or is a link now */
        return err_os(w->e, "snapshot", w->plen ? w->path : ".");
    }
    if (!(d = fdopendir(dfd))) {
        close(dfd);
        return err_os(w->e, "snapshot", w->plen ? w->path : ".");
    }
    for (struct dirent *de; (errno = 0, de = readdir(d)) != NULL;) {
        const char *nm = de->d_name;
        if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
            continue;
        size_t len = strlen(nm);
        if (nd == dcap) {
            dent *nv = vec_room(dv, nd, &dcap, sizeof *dv, 64);
            if (!nv)
                goto nomem;
            dv = nv;
        }
        if (alen + len + 1 > acap) {
            size_t nc = acap ? acap * 2 : 4096;
            while (nc < alen + len + 1)
                nc *= 2;
            char *na = realloc(arena, nc);
            if (!na)
                goto nomem;
            arena = na;
            acap = nc;
        }
        memcpy(arena + alen, nm, len + 1);
        unsigned char t = de->d_type;
        if (t == DT_UNKNOWN) {
            struct stat st;
            t = DT_REG;
            if (fstatat(dfd, nm, &st, AT_SYMLINK_NOFOLLOW) == 0)
                t = S_ISDIR(st.st_mode) ? DT_DIR : S_ISLNK(st.st_mode) ? DT_LNK
                    : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
        } else if (t != DT_DIR && t != DT_REG && t != DT_LNK) {
            t = DT_UNKNOWN;  /* fifo, socket, device: git stores none */
        }
        dv[nd] = (dent){alen, len, t, 0};
        nd++;
        alen += len + 1;
    }
    if (errno) {
        err_os(w->e, "snapshot", w->plen ? w->path : ".");
        goto done;
    }
    /* the names, in an open-addressed table (slot: index + 1) */
    for (tsize = 16; tsize < 2 * nd; tsize *= 2)
        ;
    if (!(table = calloc(tsize, sizeof *table)))
        goto nomem;
    for (size_t k = 0; k < nd; k++) {
        uint32_t h = name_hash(arena + dv[k].off, dv[k].len) & (uint32_t)(tsize - 1);
        while (table[h])
            h = (h + 1) & (uint32_t)(tsize - 1);
        table[h] = (uint32_t)k + 1;
    }

    /* this directory's .gitignore applies below it; its .gitattributes
     * (where it holds tracked files) may mean filters (filter.c) */
    if (w->ign) {
        const dent *x = dent_find(dv, arena, table, tsize, ".gitignore", 10);
        idepth = ignore_push(w->ign, w->r, w->path, !x ? 0 : x->type == DT_REG ? 1 : 2);
        pushed = 1;
    }
    if ((lo < hi || w->plen == 0) && dent_find(dv, arena, table, tsize, ".gitattributes", 14))
        w->attrs = 1;

    /* the index's names: each a file (its stages) or a directory (all the
     * entries below it), matched with the work tree's entry of that name
     * and kind */
    for (size_t i = lo; i < hi;) {
        const ientry *ie = &ix->v[i];
        const char *rest = ie->path + dlen;
        const char *slash = memchr(rest, '/', ie->len - dlen);
        size_t inlen = slash ? (size_t)(slash - rest) : ie->len - dlen, j;
        if (slash) {
            /* past every path that starts with "<name>/": below "<name>0" */
            size_t klen = dlen + inlen + 1;
            if (klen > w->kcap) {
                char *nk = realloc(w->key, klen);
                if (!nk)
                    goto nomem;
                w->key = nk;
                w->kcap = klen;
            }
            memcpy(w->key, ie->path, klen - 1);
            w->key[klen - 1] = '/' + 1;
            j = bindex_lower(ix, w->key, klen);
            if (j > hi)
                j = hi;
            if (j <= i)
                j = i + 1;  /* cannot be, in a sorted index */
        } else {
            for (j = i + 1; j < hi && ix->v[j].len == ie->len &&
                 memcmp(ix->v[j].path, ie->path, ie->len) == 0; j++)
                ;
        }
        dent *de = dent_find(dv, arena, table, tsize, rest, inlen);
        if (de && (de->seen || (de->type == DT_DIR) != (slash != NULL)))
            de = NULL;
        if (path_push(w, rest, inlen) < 0)
            goto nomem;
        int r2 = 0;
        if (path_excluded(w->r, w->path)) {
            if (de)
                de->seen = 1;  /* never looked at; scan_full drops it */
        } else if (!de) {
            /* gone, or of another kind now: the work tree's entry of that
             * name, if any, is looked at as untracked below */
            path_pop(w, keep);
            r2 = gone(w, i, j);
        } else if (slash) {
            /* a directory with tracked files: always looked into */
            de->seen = 1;
            r2 = queue_dir(&sv, &ns, &scap, de->off, de->len, i, j, -1) < 0 ? oom(w) : 0;
        } else {
            const ientry *te = NULL;
            for (size_t x = i; x < j; x++)
                if (IENTRY_STAGE(&ix->v[x]) == 0)
                    te = &ix->v[x];
            if (te) {  /* else only in conflict: untracked, below */
                de->seen = 1;
                r2 = tracked_file(w, te);
            }
        }
        path_pop(w, keep);
        if (r2 < 0)
            goto done;
        i = j;
    }

    /* what is left is untracked: stored unless ignored */
    for (size_t k = 0; k < nd; k++) {
        dent *de = &dv[k];
        const char *nm = arena + de->off;
        int r2 = 0;
        if (de->seen || de->type == DT_UNKNOWN)
            continue;
        if (path_push(w, nm, de->len) < 0)
            goto nomem;
        if (path_excluded(w->r, w->path)) {
            /* never looked at */
        } else if (de->type == DT_DIR) {
            r2 = untracked_dir(w, dfd, nm);
            if (r2 > 0)  /* not ignored: its files need not ask that again */
                r2 = queue_dir(&sv, &ns, &scap, de->off, de->len, 0, 0, 0) < 0 ? oom(w) : 0;
        } else {
            int ign = file_ignored(w, keep, &dign, de->type == DT_REG);
            if (!ign)
                r2 = hash_here(w, NULL, de->type == DT_REG);
        }
        path_pop(w, keep);
        if (r2 < 0)
            goto done;
    }
    closedir(d);
    d = NULL;
    for (size_t s = 0; s < ns; s++) {
        if (path_push(w, arena + sv[s].off, sv[s].len) < 0)
            goto nomem;
        int r2 = walk_dir(w, sv[s].lo, sv[s].hi, sv[s].dign);
        path_pop(w, keep);
        if (r2 < 0)
            goto done;
    }
    rc = 0;
    goto done;
nomem:
    oom(w);
done:
    if (d)
        closedir(d);
    if (pushed)
        ignore_pop(w->ign, idepth);
    path_pop(w, keep);
    free(dv);
    free(sv);
    free(arena);
    free(table);
    return rc;
}

/*
 * The work tree's tree by a full scan, as `git add -A` with a temporary
 * index would give it for files no filter applies to (and each file's own
 * bytes where one would).  The index file is never written.  *itree gets
 * the index's tree.  With watching set the watch (started, empty) watches
 * every directory the scan looks into.
 */
static int scan_full(brepo *r, const bindex *ix, int watching, git_oid *out,
    size_t *nhashed, git_oid *itree, errbuf *e)
{
    changes c = {0};
    strvec seen = {0};
    git_oid base;
    int rc = -1, filters;
    jobq q = {.mu = PTHREAD_MUTEX_INITIALIZER, .more = PTHREAD_COND_INITIALIZER};
    pthread_t threads[MAX_THREADS - 1];
    walker w = {r, ix, &c, NULL, nhashed, e, watching, -1, NULL, 0, 0, NULL, 0,
        &q, NULL, 0};

    if (tree_of_index(r, ix, &base, e) < 0)
        goto done;
    git_oid_cpy(itree, &base);
    w.seen = &seen;
    w.root = open(r->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w.root < 0) {
        err_os(e, "snapshot", r->workdir);
        goto done;
    }
    if (path_push(&w, "", 0) < 0) {
        err_set(e, "snapshot: out of memory");
        goto done;
    }
    w.ign = ignore_open(r);
    if (jobs_start(&q, threads, &w) < 0) {
        err_set(e, "snapshot: out of memory");
        goto done;
    }
    int walked = walk_dir(&w, 0, ix->n, 0);
    jobs_finish(&q, threads);
    if (walked < 0 || jobs_results(&w) < 0)
        goto done;
    /* with filters possible, the index's blob id of an unchanged file may
     * not be its bytes: filters_check_index looks again at those the walk
     * did not read */
    filters = w.attrs || filters_possible(r, ix, 1);
    if (filters) {
        strvec_sort(&seen);
        if (filters_check_index(r, ix, &seen, &c, nhashed, e) < 0)
            goto done;
    }
    /* an excluded path the index tracks is not in the tree either */
    for (size_t i = 0; i < r->exclude.n; i++) {
        if (changes_add(&c, r->exclude.v[i], NULL, 0) < 0) {
            err_set(e, "snapshot: out of memory");
            goto done;
        }
    }
    rc = tree_apply(r, &base, &c, out, e);
done:
    if (w.root >= 0)
        close(w.root);
    free(w.path);
    free(w.key);
    free(q.v);
    ignore_close(w.ign);
    strvec_free(&seen);
    changes_free(&c);
    return rc;
}

/*
 * Whether the index, rewritten since the base, still records the same files
 * (`git status` rewrites it just to refresh stat data): then what the watch
 * knows still holds.
 */
static int index_same(brepo *r, const bindex *ix)
{
    git_oid now;
    errbuf e;
    if (!r->w.has_itree || ix->conflicts || tree_of_index(r, ix, &now, &e) < 0)
        return 0;
    return git_oid_equal(&now, &r->w.itree);
}

/*
 * The tree of the work tree as it is now.  Uses the watch when it saw every
 * change since the last tree; otherwise (or when full is set) scans.  On
 * return *how says which path was taken and r->skipped lists the files left
 * out for being larger than r->max_size.
 */
int scan_worktree(brepo *r, int full, git_oid *out, const char **how,
    size_t *nhashed, errbuf *e)
{
    watch *w = &r->w;
    bindex *ix = &r->ix;
    fsig isig, xsig;
    char *ipath = NULL, *xpath = NULL;
    int rc = -1, incremental;
    changes c = {0};

    *nhashed = 0;
    ipath = path_gitdir(r, "index");
    xpath = path_gitdir(r, "info/exclude");
    if (!ipath || !xpath) {
        err_set(e, "snapshot: out of memory");
        goto done;
    }
    sig_of(ipath, &isig);
    sig_of(xpath, &xsig);
    if (bindex_load(ix, ipath, &isig, e) < 0)
        goto done;
    if (w->fd >= 0 && watch_drain(w) < 0) {
        err_set(e, "snapshot: out of memory");
        goto done;
    }
    /* the files left out last time are looked at again: they may have
     * shrunk, gone, or still be too large (then noted again) */
    for (size_t i = 0; w->fd >= 0 && i < r->skipped.n; i++) {
        if (watch_pend(w, r->skipped.v[i].path) < 0) {
            err_set(e, "snapshot: out of memory");
            goto done;
        }
    }
    skips_clear(&r->skipped);
    /* the watch only knows about paths; when the rules deciding which paths
     * are in (index, ignore files) change, scan, and watch anew so the
     * watched set follows the rules */
    const char *why = NULL;
    int rewatch = 0;
    incremental = w->fd >= 0 && w->valid && w->has_base && !full;
    if (w->fd >= 0 && !w->valid) {
        rewatch = 1;
        why = w->state ? w->state : "watch lost events";
    } else if (incremental && !sig_eq(&isig, &w->index_sig) &&
           !index_same(r, ix)) {
        incremental = 0;
        rewatch = 1;
        why = "index changed";
    } else if (incremental && !sig_eq(&xsig, &w->exclude_sig)) {
        incremental = 0;
        rewatch = 1;
        why = "info/exclude changed";
    } else if (incremental && watch_touches_rules(w)) {
        incremental = 0;
        rewatch = 1;
        why = ".gitignore changed";
    } else if (incremental && w->base_max != r->max_size) {
        incremental = 0;
        why = "size limit changed";
    }
    if (incremental) {
        if (watch_process(r, ix, &c, nhashed, e) < 0 ||
            tree_apply(r, &w->base, &c, out, e) < 0) {
            w->has_base = 0;
            goto done;
        }
        *how = "watch";
        w->state = "watching";
    } else {
        int starting = 0;
        if (w->fd >= 0 && rewatch)
            watch_stop(w);
        if (w->fd >= 0) {
            /* kept: bring its watched set up to date */
            if (watch_process(r, ix, NULL, nhashed, e) < 0)
                goto done;
        } else if (r->use_watch) {
            starting = watch_init(r);  /* the scan watches what it walks */
        }
        *nhashed = 0;
        if (scan_full(r, ix, starting, out, nhashed, &w->itree, e) < 0) {
            if (starting)
                watch_stop(w);
            goto done;
        }
        if (starting && !w->valid) {
            /* too many directories for the watch limit: do not retry */
            watch_stop(w);
            r->use_watch = 0;
            w->off = "watch limit reached (fs.inotify.max_user_watches)";
        }
        w->has_itree = 1;
        *how = "full";
        if (w->fd < 0)
            why = w->off ? w->off : "not watching";
        else if (full)
            why = "full scan asked for";
        else if (!why)
            why = "first scan";
        w->state = why;
    }
    if (w->fd >= 0 && w->valid) {
        git_oid_cpy(&w->base, out);
        w->has_base = 1;
        w->index_sig = isig;
        w->exclude_sig = xsig;
        w->base_max = r->max_size;
    } else {
        w->has_base = 0;
    }
    rc = 0;
done:
    changes_free(&c);
    free(ipath);
    free(xpath);
    return rc;
}
