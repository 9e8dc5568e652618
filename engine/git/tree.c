/*
 * tree.c — storing work-tree files as blobs, and building a tree from a
 * previous one and a list of changes.
 *
 * A file is stored as the bytes it holds on disk: no clean filter, no eol
 * conversion, no ident, whatever .gitattributes or core.autocrlf say.  Both
 * ways of finding changed files (the watch and the full scan) hash a file
 * with tree_hash_path, so they give the same tree.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "git.h"

static int change_cmp(const void *a, const void *b)
{
    const change *x = a, *y = b;
    int r = strcmp(x->path, y->path);
    if (r)
        return r;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sort by path; of several changes to one path the last one made wins. */
static void changes_normalize(changes *c)
{
    size_t i, o = 0;
    if (c->n)
        qsort(c->v, c->n, sizeof *c->v, change_cmp);
    for (i = 0; i < c->n; i++) {
        if (i + 1 < c->n && strcmp(c->v[i].path, c->v[i + 1].path) == 0) {
            free(c->v[i].path);
            continue;
        }
        c->v[o++] = c->v[i];
    }
    c->n = o;
}



/*
 * Builds the tree `base` (NULL = empty) with the sorted changes c[0..n)
 * applied, all of whose paths share a prefix of plen bytes that names this
 * tree.  A removal drops a blob or a whole subtree; an upsert replaces
 * whatever was there.  Subtrees left empty disappear, as in git.  *empty is
 * set when the result has no entries (the tree is then written only at the
 * root, as git's empty tree).
 */
static int build_tree(git_repository *repo, const git_tree *base, change *c,
    size_t n, size_t plen, git_oid *out, int *empty, errbuf *e)
{
    git_treebuilder *bld = NULL;
    char *name = NULL;
    int rc = -1;
    size_t i = 0;

    if (git_treebuilder_new(&bld, repo, base) < 0)
        return err_git(e, "snapshot: tree builder");
    while (i < n) {
        const char *rest = c[i].path + plen;
        const char *slash = strchr(rest, '/');
        if (!slash) {
            if (c[i].mode == 0) {
                if (git_treebuilder_get(bld, rest) &&
                    git_treebuilder_remove(bld, rest) < 0) {
                    err_git(e, "snapshot: tree remove");
                    goto done;
                }
            } else if (git_treebuilder_insert(NULL, bld, rest, &c[i].oid,
                    (git_filemode_t)c[i].mode) < 0) {
                err_set(e, "snapshot: %s: %s", c[i].path, err_gitmsg());
                goto done;
            }
            i++;
            continue;
        }
        size_t nlen = (size_t)(slash - rest), j = i + 1;
        while (j < n && strncmp(c[j].path + plen, rest, nlen + 1) == 0)
            j++;
        free(name);
        if (!(name = strndup(rest, nlen))) {
            err_set(e, "snapshot: out of memory");
            goto done;
        }
        const git_tree_entry *ent = git_treebuilder_get(bld, name);
        git_tree *sub = NULL;
        if (ent && git_tree_entry_type(ent) == GIT_OBJECT_TREE &&
            git_tree_lookup(&sub, repo, git_tree_entry_id(ent)) < 0) {
            err_git(e, "snapshot: tree lookup");
            goto done;
        }
        git_oid soid;
        int sempty = 0;
        int r2 = build_tree(repo, sub, c + i, j - i, plen + nlen + 1, &soid,
            &sempty, e);
        git_tree_free(sub);
        if (r2 < 0)
            goto done;
        if (sempty) {
            if (ent && git_tree_entry_type(ent) == GIT_OBJECT_TREE &&
                git_treebuilder_remove(bld, name) < 0) {
                err_git(e, "snapshot: tree remove");
                goto done;
            }
        } else if (git_treebuilder_insert(NULL, bld, name, &soid,
                GIT_FILEMODE_TREE) < 0) {
            err_set(e, "snapshot: %.*s: %s", (int)(plen + nlen), c[i].path,
                err_gitmsg());
            goto done;
        }
        i = j;
    }
    *empty = git_treebuilder_entrycount(bld) == 0;
    if ((!*empty || plen == 0) && git_treebuilder_write(out, bld) < 0) {
        err_git(e, "snapshot: tree write");
        goto done;
    }
    rc = 0;
done:
    free(name);
    git_treebuilder_free(bld);
    return rc;
}

/*
 * The tree `base_id` (NULL: empty) with the changes applied, written to the
 * object database as *out.  Of several changes to one path the last one
 * added wins; c is sorted in the process.
 */
int tree_apply(git_repository *repo, const git_oid *base_id,
    changes *c, git_oid *out, errbuf *e)
{
    git_tree *base = NULL;
    int empty, rc;
    if (base_id && git_tree_lookup(&base, repo, base_id) < 0)
        return err_git(e, "snapshot: base tree");
    changes_normalize(c);
    rc = build_tree(repo, base, c->v, c->n, 0, out, &empty, e);
    git_tree_free(base);
    return rc;
}

/*
 * Stores bytes as a blob.  git_odb_write hashes first and, when the object is
 * already there, only refreshes its time, as git does (a `git gc` prunes
 * unreachable loose objects by age; refreshed, the object is not pruned
 * before the snapshot that uses it is referenced).  A loose object written
 * or refreshed in the last hour needs no refreshing: a stat finds it, where
 * the refresh would be a write.  (git_blob_create_from_buffer would stream
 * through a temporary file every time: a file creation per blob.)
 */
static int put_blob(brepo *r, git_oid *oid, const void *data, size_t len)
{
    git_odb *odb = NULL;
    int rc;
    if (git_odb_hash(oid, data, len, GIT_OBJECT_BLOB) == 0) {
        char hex[GIT_OID_HEXSZ + 1], *p = NULL;
        struct stat st;
        int fresh;
        git_oid_tostr(hex, sizeof hex, oid);
        if (asprintf(&p, "%sobjects/%.2s/%s", git_repository_commondir(r->repo),
            hex, hex + 2) < 0)
            p = NULL;
        fresh = p && stat(p, &st) == 0 && st.st_mtime > time(NULL) - 3600;
        free(p);
        if (fresh)
            return 0;
    }
    if (git_repository_odb(&odb, r->repo) < 0)
        return -1;
    rc = git_odb_write(oid, odb, data, len, GIT_OBJECT_BLOB);
    git_odb_free(odb);
    return rc;
}

/*
 * Streams the st_size bytes of the open file fd into the object database
 * as a blob, CHUNK bytes at a time: memory does not grow with the file.
 * Bytes the file gains meanwhile are not stored (the blob is the file as
 * big as it was when looked at); returns 3 when it shrank (the caller looks
 * again), 1 with *oid set, -1 on error.  An object already there is only
 * refreshed, as git_odb_write does.
 */
static int stream_file(brepo *r, const char *rel, int fd, const struct stat *st,
    git_oid *oid, errbuf *e)
{
    git_odb *odb = NULL;
    git_odb_stream *ws = NULL;
    char *buf = malloc(CHUNK);
    off_t left = st->st_size;
    int rc = -1;

    if (!buf)
        return err_set(e, "snapshot: out of memory");
    if (git_repository_odb(&odb, r->repo) < 0 ||
        git_odb_open_wstream(&ws, odb, (git_object_size_t)st->st_size,
            GIT_OBJECT_BLOB) < 0) {
        err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
        goto done;
    }
    while (left > 0) {
        size_t want = left < (off_t)CHUNK ? (size_t)left : CHUNK;
        ssize_t n = read(fd, buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_os(e, "snapshot", rel);
            goto done;
        }
        if (n == 0) {
            rc = 3;  /* shorter than it was a moment ago */
            goto done;
        }
        if (git_odb_stream_write(ws, buf, (size_t)n) < 0) {
            err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
            goto done;
        }
        left -= n;
    }
    if (git_odb_stream_finalize_write(oid, ws) < 0) {
        err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
        goto done;
    }
    rc = 1;
done:
    git_odb_stream_free(ws);
    git_odb_free(odb);
    free(buf);
    return rc;
}

/*
 * Reads the open file fd (of st_size bytes when looked at) to its end and
 * stores what it read as a blob.  A file that grows past STREAM_MIN while
 * being read gives 3: the caller looks again, and streams it.
 */
static int read_file(brepo *r, const char *rel, int fd, const struct stat *st,
    git_oid *oid, errbuf *e)
{
    /* one byte more than the size, so that the end of file is seen without
     * growing the buffer when the file does not grow meanwhile */
    size_t len = 0, cap = (size_t)st->st_size + 1;
    char *buf = malloc(cap);
    int rc = -1;

    if (!buf)
        return err_set(e, "snapshot: %s: out of memory", rel);
    for (;;) {
        if (len == cap) {
            char *nb = cap <= STREAM_MIN ? realloc(buf, cap * 2) : NULL;
            if (cap > STREAM_MIN) {
                rc = 3;  /* grew large meanwhile */
                goto done;
            }
            if (!nb) {
                err_set(e, "snapshot: %s: out of memory", rel);
                goto done;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err_os(e, "snapshot", rel);
            goto done;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (put_blob(r, oid, buf, len) < 0) {
        err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
        goto done;
    }
    rc = 1;
done:
    free(buf);
    return rc;
}

/*
 * For a file larger than the size limit: whether it is a tracked file whose
 * bytes are still its index blob (same size, and the same id once hashed,
 * in constant memory).  Then *oid is that blob, already stored: 1.
 * Otherwise the file is left out and noted in r->skipped: 4.
 */
static int too_large(brepo *r, git_index *idx, const char *rel, const char *abs,
    const struct stat *st, git_oid *oid, errbuf *e)
{
    const git_index_entry *ie = idx ? git_index_get_bypath(idx, rel, 0) : NULL;
    git_oid h;
    if (ie && ie->file_size == (uint32_t)st->st_size &&
        (ie->mode == GIT_FILEMODE_BLOB || ie->mode == GIT_FILEMODE_BLOB_EXECUTABLE) &&
        git_odb_hashfile(&h, abs, GIT_OBJECT_BLOB) == 0 && git_oid_equal(&h, &ie->id)) {
        git_oid_cpy(oid, &ie->id);
        return 1;
    }
    git_error_clear();
    if (skips_add(&r->skipped, rel, (int64_t)st->st_size) < 0)
        return err_set(e, "snapshot: out of memory");
    return 4;
}

/*
 * Stores the bytes of the regular file at abs exactly as they are on disk, as
 * a blob: no clean filter, no eol conversion, no ident, whatever
 * .gitattributes or core.autocrlf say.  An object already in the database is
 * not written again.  Memory stays bounded whatever the file's size (large
 * files are streamed).  Returns 1 with *oid and *read_st (the stat of the
 * file read) set; 0 when abs is gone; 3 when it is not a regular file (any
 * more: the caller looks again); 4 when it is larger than r->max_size and
 * was left out (noted in r->skipped); -1 on error.
 */
static int store_file(brepo *r, git_index *idx, const char *rel, const char *abs,
    git_oid *oid, struct stat *read_st, errbuf *e)
{
    struct stat st;
    int fd, rc = -1;

    /* O_NOFOLLOW: a symlink swapped in since the lstat is not followed;
     * O_NONBLOCK: nor does a fifo swapped in block the open */
    fd = open(abs, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        if (errno == ELOOP)
            return 3;
        return err_os(e, "snapshot", rel);
    }
    if (fstat(fd, &st) < 0) {
        err_os(e, "snapshot", rel);
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = 3;
        goto done;
    }
    *read_st = st;
    if (r->max_size >= 0 && st.st_size > r->max_size)
        rc = too_large(r, idx, rel, abs, &st, oid, e);
    else if (st.st_size > STREAM_MIN)
        rc = stream_file(r, rel, fd, &st, oid, e);
    else
        rc = read_file(r, rel, fd, &st, oid, e);
done:
    close(fd);
    return rc;
}

/*
 * Stores a symlink's target as a blob (what git stores for a link).  Returns
 * 1 with *oid set, 0 when abs is gone, 3 when it is no longer a symlink, -1
 * on error.
 */
static int store_link(brepo *r, const char *rel, const char *abs, git_oid *oid,
    errbuf *e)
{
    size_t cap = 256;
    int rc = -1;
    for (;;) {
        char *buf = malloc(cap);
        ssize_t n;
        if (!buf)
            return err_set(e, "snapshot: out of memory");
        n = readlink(abs, buf, cap);
        if (n < 0) {
            int err = errno;
            free(buf);
            if (err == ENOENT || err == ENOTDIR)
                return 0;
            if (err == EINVAL)
                return 3;
            errno = err;
            return err_os(e, "snapshot", rel);
        }
        if ((size_t)n < cap) {
            if (put_blob(r, oid, buf, (size_t)n) < 0)
                err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
            else
                rc = 1;
            free(buf);
            return rc;
        }
        free(buf);  /* possibly truncated: try again with more room */
        if (cap > (size_t)1 << 24)
            return err_set(e, "snapshot: %s: symlink target too long", rel);
        cap *= 2;
    }
}

/*
 * Hashes one work-tree path into the object database: a file's bytes exactly
 * as they are on disk (no filters, see store_file), a symlink as a link.
 * Returns 1 with *oid and *mode set for a file or symlink (and *read_st, when
 * not NULL, to the stat of a regular file read; st_mode 0 for a link), 2 for
 * a directory, 0 when there is nothing there to store (or a file larger
 * than r->max_size, then noted in r->skipped), -1 on error.  With reg set
 * (the caller just saw a regular file there) the file is opened without an
 * lstat first; whatever else it turns out to be is looked at again.
 */
int tree_hash_path(brepo *r, git_index *idx, const char *rel, int reg,
    git_oid *oid, uint32_t *mode, struct stat *read_st, errbuf *e)
{
    struct stat st;
    char *abs = path_abs(r, rel);
    int rc = -1;
    if (!abs)
        return err_set(e, "snapshot: out of memory");
    /* a path changing type under us is looked at again, a few times */
    for (int tries = 0; tries < 8; tries++) {
        if (!reg || tries > 0) {
            if (lstat(abs, &st) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                    rc = 0;
                else
                    rc = err_os(e, "snapshot", rel);
                goto done;
            }
            if (S_ISDIR(st.st_mode)) {
                rc = 2;
                goto done;
            }
            if (S_ISLNK(st.st_mode)) {
                *mode = GIT_FILEMODE_LINK;
                if (read_st)
                    read_st->st_mode = 0;
                rc = store_link(r, rel, abs, oid, e);
                if (rc != 3)
                    goto done;
                continue;
            }
            if (!S_ISREG(st.st_mode)) {
                rc = 0;  /* fifo, socket, device: git does not store these */
                goto done;
            }
        }
        rc = store_file(r, idx, rel, abs, oid, &st, e);
        if (rc == 4) {
            rc = 0;  /* too large: left out of the tree */
            goto done;
        }
        if (rc == 1) {
            if (r->filemode) {
                *mode = (st.st_mode & S_IXUSR) ? GIT_FILEMODE_BLOB_EXECUTABLE
                    : GIT_FILEMODE_BLOB;
            } else {
                const git_index_entry *ie = idx
                    ? git_index_get_bypath(idx, rel, 0) : NULL;
                *mode = ie && ie->mode == GIT_FILEMODE_BLOB_EXECUTABLE
                    ? GIT_FILEMODE_BLOB_EXECUTABLE : GIT_FILEMODE_BLOB;
            }
            if (read_st)
                *read_st = st;
        }
        if (rc != 3)
            goto done;
    }
    rc = err_set(e, "snapshot: %s: keeps changing type while being read", rel);
done:
    free(abs);
    return rc;
}

/* Whether git's ignore rules (the in-memory exclusions included) ignore rel;
 * an error counts as not ignored, so the file is stored. */
int tree_is_ignored(brepo *r, const char *rel)
{
    int ign = 0;
    if (git_ignore_path_is_ignored(&ign, r->repo, rel) < 0)
        return 0;
    return ign;
}

/* Whether the index has an entry for rel. */
int tree_is_tracked(git_index *idx, const char *rel)
{
    size_t pos;
    return git_index_find(&pos, idx, rel) == 0;
}

/* Whether the index tracks some file below the directory rel (an error
 * counts as yes: the directory is then looked into). */
int tree_has_tracked_under(git_index *idx, const char *rel)
{
    size_t pos;
    char *pre = path_join(rel, "");
    int found;
    if (!pre)
        return 1;
    /* path_join("a", "") gives "a/" */
    found = git_index_find_prefix(&pos, idx, pre) == 0;
    free(pre);
    return found;
}

