/*
 * filter.c — when the index's blob ids are not the files' bytes.
 *
 * `git add` may store a tracked file as other bytes than the file's (eol
 * conversion, ident, a filter driver, a working-tree encoding).  Where that
 * is possible, a full scan cannot take an unchanged index entry's blob id
 * for the file's bytes: it reads the file, or takes the id from beat's own
 * raw stat cache (<gitdir>/beat/raw-index) while the file's stat data is
 * unchanged.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "git.h"

static int nonempty_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

/* Whether some directory of a ':'-separated search path holds file name. */
static int search_path_has(int level, const char *name)
{
    git_buf sp = {0};
    int found = 0;
    if (git_libgit2_opts(GIT_OPT_GET_SEARCH_PATH, level, &sp) < 0)
        return 1;  /* cannot tell: assume it does */
    for (const char *s = sp.ptr ? sp.ptr : ""; *s && !found;) {
        size_t n = strcspn(s, ":");
        char *p = NULL;
        if (n && asprintf(&p, "%.*s/%s", (int)n, s, name) >= 0) {
            found = nonempty_file(p);
            free(p);
        }
        s += n;
        if (*s == ':')
            s++;
    }
    git_buf_dispose(&sp);
    return found;
}

/* Whether a .gitattributes file is in dir (rel, "" = root) of the work tree. */
static int dir_has_attrs(brepo *r, const char *dir, size_t dlen)
{
    char *p = NULL;
    int found;
    if (asprintf(&p, "%s%.*s%s.gitattributes", r->workdir, (int)dlen, dir,
        dlen ? "/" : "") < 0)
        return 1;
    found = access(p, F_OK) == 0;
    free(p);
    return found;
}

/*
 * Whether `git add` could have stored some tracked file as other bytes than
 * the file's (eol conversion, ident, a filter driver, a working-tree
 * encoding): then the index's blob ids cannot stand for the files' bytes.
 * True when core.autocrlf is on or any attribute source exists: the system
 * and global attribute files, info/attributes, a .gitattributes in the index,
 * or a .gitattributes file in a directory that holds a tracked file or in one
 * above it (an untracked directory's own files are hashed anyway).  Cheap:
 * a few config reads and one access(2) per directory of the index; none
 * with walked set, when the caller saw those directories' entries itself
 * (the full scan does) and answers for the work tree's .gitattributes files.
 */
int filters_possible(brepo *r, const bindex *ix, int walked)
{
    git_config *cfg = NULL;
    git_buf b = {0};
    char *last = NULL, *p = NULL;
    int any = 0, autocrlf = 0;

    if (git_repository_config_snapshot(&cfg, r->repo) < 0)
        return 1;
    const char *s;
    if (git_config_get_string(&s, cfg, "core.autocrlf") == 0) {
        int v;
        autocrlf = git_config_parse_bool(&v, s) == 0 ? v
            : strcasecmp(s, "input") == 0;
    }
    if (git_config_get_path(&b, cfg, "core.attributesfile") == 0)
        any = nonempty_file(b.ptr);
    else
        any = search_path_has(GIT_CONFIG_LEVEL_XDG, "attributes");
    git_buf_dispose(&b);
    git_config_free(cfg);
    if (autocrlf || any || search_path_has(GIT_CONFIG_LEVEL_SYSTEM, "gitattributes"))
        return 1;
    if (asprintf(&p, "%sinfo/attributes", git_repository_commondir(r->repo)) < 0)
        return 1;
    any = nonempty_file(p);
    free(p);
    if (any || (!walked && dir_has_attrs(r, "", 0)))
        return 1;
    if (walked) {
        for (size_t i = 0; i < ix->n; i++) {
            const ientry *ie = &ix->v[i];
            if (ie->len >= 14 && memcmp(ie->path + ie->len - 14, ".gitattributes", 14) == 0 &&
                (ie->len == 14 || ie->path[ie->len - 15] == '/'))
                return 1;
        }
        return 0;
    }
    /* the index is sorted, so each directory's entries are contiguous and
     * each directory is looked at once, when its first entry comes */
    if (!(last = str_dup("")))
        return 1;
    size_t n = ix->n;
    for (size_t i = 0; i < n && !any; i++) {
        const ientry *ie = &ix->v[i];
        const char *path = ie->path, *slash = strrchr(path, '/');
        size_t dlen = slash ? (size_t)(slash - path) : 0, c = 0;
        if (strcmp(slash ? slash + 1 : path, ".gitattributes") == 0) {
            any = 1;
            break;
        }
        if (strlen(last) == dlen && strncmp(last, path, dlen) == 0)
            continue;
        /* c: length of the directories path shares with last */
        while (c < dlen && last[c] && last[c] == path[c])
            c++;
        if (!((c == dlen || path[c] == '/') && (last[c] == '\0' || last[c] == '/')))
            while (c > 0 && path[c] != '/')
                c--;
        for (size_t j = c + 1; j <= dlen && !any; j++)
            if (j == dlen || path[j] == '/')
                any = dir_has_attrs(r, path, j);
        free(last);
        if (!(last = strndup(path, dlen)))
            any = 1;
    }
    free(last);
    return any;
}

/*
 * The raw stat cache, <gitdir>/beat/raw-index: an index file (git's format,
 * never git's index) whose entries say "the file at this path, with exactly
 * this stat data, has these bytes".  It spares a full scan from reading every
 * tracked file again where filters are possible (see filters_check_index).
 * Only a cache: unreadable, it is started afresh; unwritable, it is not
 * kept.  Returns NULL when it cannot be had at all.
 */
static git_index *raw_cache(brepo *r)
{
    if (r->rawcache) {
        if (git_index_read(r->rawcache, 0) < 0 && git_index_clear(r->rawcache) < 0) {
            git_index_free(r->rawcache);
            r->rawcache = NULL;
        }
        return r->rawcache;
    }
    char *p = path_gitdir(r, "beat/raw-index");
    if (!p)
        return NULL;
    if (git_index_open(&r->rawcache, p) < 0) {
        unlink(p);
        if (git_index_open(&r->rawcache, p) < 0)
            r->rawcache = NULL;
    }
    free(p);
    git_error_clear();
    return r->rawcache;
}

/* Whether two entries record the same stat data (all the fields git
 * compares, ctime included) and mode. */
static int same_stat(const git_index_entry *a, const git_index_entry *b)
{
    return a->mode == b->mode && a->file_size == b->file_size &&
        a->ino == b->ino && a->uid == b->uid && a->gid == b->gid &&
        a->mtime.seconds == b->mtime.seconds &&
        a->mtime.nanoseconds == b->mtime.nanoseconds &&
        a->ctime.seconds == b->ctime.seconds &&
        a->ctime.nanoseconds == b->ctime.nanoseconds;
}

/* An entry with st's stat data as git records it. */
static void entry_from_stat(git_index_entry *ie, const struct stat *st)
{
    memset(ie, 0, sizeof *ie);
    ie->ctime.seconds = (int32_t)st->st_ctim.tv_sec;
    ie->ctime.nanoseconds = (uint32_t)st->st_ctim.tv_nsec;
    ie->mtime.seconds = (int32_t)st->st_mtim.tv_sec;
    ie->mtime.nanoseconds = (uint32_t)st->st_mtim.tv_nsec;
    ie->dev = (uint32_t)st->st_dev;
    ie->ino = (uint32_t)st->st_ino;
    ie->uid = st->st_uid;
    ie->gid = st->st_gid;
    ie->file_size = (uint32_t)st->st_size;
}

/*
 * Whether a file read after the moment `before`, with stat data st as it
 * was read, can be known by its stat data from then on.  A write after the
 * read sets the file's ctime to the file system clock's time, so it shows
 * unless the change before the read fell in the same tick of that clock:
 * the change must be older than the read by more than a tick.  That is 2 s
 * where timestamps are whole seconds (neither has nanoseconds: FAT keeps
 * two-second mtimes), else 100 ms (the kernel's coarse clock lags the real
 * one by a tick, a few ms).  mtime counts too: it may be set ahead.
 */
static int settled(const struct stat *st, const struct timespec *before)
{
    int whole = st->st_mtim.tv_nsec == 0 && st->st_ctim.tv_nsec == 0;
    int64_t margin = whole ? 2000000000 : 100000000;
    int64_t t = (int64_t)before->tv_sec * 1000000000 + before->tv_nsec - margin;
    return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec < t &&
        (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec < t;
}

/* An entry with the index entry's stat data and mode, for the cache. */
static void entry_from_ientry(git_index_entry *ce, const ientry *ie)
{
    memset(ce, 0, sizeof *ce);
    ce->ctime.seconds = (int32_t)ie->ctime_s;
    ce->ctime.nanoseconds = ie->ctime_ns;
    ce->mtime.seconds = (int32_t)ie->mtime_s;
    ce->mtime.nanoseconds = ie->mtime_ns;
    ce->dev = ie->dev;
    ce->ino = ie->ino;
    ce->uid = ie->uid;
    ce->gid = ie->gid;
    ce->file_size = ie->size;
    ce->mode = ie->mode;
}

/*
 * For a full scan where filters are possible (filters_possible): the blob id
 * of an index entry the scan found unchanged is the clean-filtered content,
 * not necessarily the file's bytes.  Gives every such tracked regular file
 * its own bytes' id: from the raw stat cache when it holds the path with the
 * entry's exact stat data, else by reading the file (and then remembering it,
 * unless it had changed just before the read: see settled).  Adds a change for
 * each file whose bytes are not its index blob.
 *
 * An unchanged entry's stat data is the file's as it is now: the scan
 * compared them.  seen (sorted) holds the paths the scan looked at by their
 * bytes already (read, gone, or of another type).  Entries git does not
 * look at (assume-unchanged, skip-worktree, intent-to-add) keep their index
 * blob, as `git add -A` keeps them.
 */
int filters_check_index(brepo *r, const bindex *ix, const strvec *seen,
    changes *c, size_t *nhashed, errbuf *e)
{
    git_index *cache = raw_cache(r);
    git_odb *odb = NULL;
    size_t ne = ix->n, added = 0;
    int rc = -1;

    /* the cache names blobs that only snapshots may hold: a gc may have
     * pruned them since, so such an id is used only while it exists */
    if (cache && git_repository_odb(&odb, r->repo) < 0) {
        git_error_clear();
        cache = NULL;
    }
    /* paths no longer tracked linger in the cache; harmless (an entry only
     * counts when its stat data matches), but start afresh when they pile
     * up: this scan refills it */
    if (cache && git_index_entrycount(cache) > 2 * ne + 1024 &&
        git_index_clear(cache) < 0) {
        git_error_clear();
        cache = NULL;
    }
    for (size_t i = 0; i < ne; i++) {
        const ientry *ie = &ix->v[i];
        const char *path = ie->path;
        git_oid oid;
        uint32_t mode = ie->mode;
        git_index_entry ice;
        if (IENTRY_STAGE(ie) != 0 ||
            (ie->mode != GIT_FILEMODE_BLOB && ie->mode != GIT_FILEMODE_BLOB_EXECUTABLE) ||
            (ie->flags & IENTRY_VALID) ||
            (ie->fext & (IENTRY_SKIP_WORKTREE | IENTRY_INTENT_TO_ADD)) ||
            path_excluded(r, path) || strvec_has(seen, path))
            continue;
        entry_from_ientry(&ice, ie);
        const git_index_entry *ce = cache ? git_index_get_bypath(cache, path, 0) : NULL;
        if (ce && same_stat(ce, &ice) &&
            (git_oid_equal(&ce->id, &ie->id) || git_odb_exists(odb, &ce->id))) {
            git_oid_cpy(&oid, &ce->id);
        } else {
            struct stat st;
            struct timespec before;
            memset(&st, 0, sizeof st);
            clock_gettime(CLOCK_REALTIME, &before);
            int h = tree_hash_path(r, ix, path, 1, &oid, &mode, &st, e);
            if (h < 0)
                goto done;
            if (h != 1) {
                /* gone since the scan looked, or a directory now */
                if (changes_add(c, path, NULL, 0) < 0) {
                    err_set(e, "snapshot: out of memory");
                    goto done;
                }
                continue;
            }
            (*nhashed)++;
            /* remembered only when what was read is what the entry's
             * stat data describes, and not too fresh */
            git_index_entry ne2;
            entry_from_stat(&ne2, &st);
            ne2.mode = mode;
            if (cache && S_ISREG(st.st_mode) && same_stat(&ne2, &ice) &&
                settled(&st, &before)) {
                ne2.path = path;
                git_oid_cpy(&ne2.id, &oid);
                if (git_index_add(cache, &ne2) == 0)
                    added++;
                else
                    git_error_clear();
            }
        }
        if ((!git_oid_equal(&oid, &ie->id) || mode != ie->mode) &&
            changes_add(c, path, &oid, mode) < 0) {
            err_set(e, "snapshot: out of memory");
            goto done;
        }
    }
    rc = 0;
done:
    if (cache && added) {
        char *dir = path_gitdir(r, "beat");
        if (dir && (mkdir(dir, 0777) == 0 || errno == EEXIST) &&
            git_index_write(cache) < 0)
            git_error_clear();  /* a cache: the scan is right without it */
        free(dir);
    }
    git_odb_free(odb);
    return rc;
}

