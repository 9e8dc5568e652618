/*
 * restore.c — making the work tree go from one tree to another.
 *
 * Only paths in one of the two trees are touched; each file is written as
 * its stored bytes (no checkout filter: a snapshot holds files unfiltered)
 * through a temporary file renamed into place, so a reader never sees half
 * a file.  Excluded paths and paths below a symlink are never touched.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs.h"
#include "git.h"


/* Removes the now-empty directories above rel, up to the work tree root;
 * stops at the first one that is not empty (ignored files stay). */
static void prune_dirs(brepo *r, const char *rel)
{
    char *p = path_abs(r, rel);
    if (!p)
        return;
    for (;;) {
        char *s = strrchr(p + r->wdlen, '/');
        if (!s)
            break;
        *s = '\0';
        if (rmdir(p) < 0)
            break;
    }
    free(p);
}

/* Whether a path left alone is rel or below it (conflicts unsorted). */
static int conflict_at(const strvec *conflicts, const char *rel)
{
    size_t n = strlen(rel);
    for (size_t i = 0; i < conflicts->n; i++) {
        const char *c = conflicts->v[i];
        if (strncmp(c, rel, n) == 0 && (c[n] == '\0' || c[n] == '/'))
            return 1;
    }
    return 0;
}

/* Creates the missing directories above rel, inside the work tree only.
 * Where something that is not a directory is in the way: 1 when it is a
 * path the restore left alone (in conflicts), else -1 naming it (it is not
 * in the snapshot, or it would have been removed first). */
static int mkdir_parents(brepo *r, const char *rel, const strvec *conflicts,
    errbuf *e)
{
    char *p = path_abs(r, rel);
    if (!p)
        return err_set(e, "restore: out of memory");
    for (char *s = p + r->wdlen; (s = strchr(s, '/')) != NULL; s++) {
        struct stat st;
        *s = '\0';
        if (mkdir(p, 0777) < 0 && errno != EEXIST) {
            int err = errno;
            free(p);
            return err_set(e, "restore: %s: %s", rel, strerror(err));
        }
        if (lstat(p, &st) < 0 || !S_ISDIR(st.st_mode)) {
            int left = conflict_at(conflicts, p + r->wdlen);
            if (!left)
                err_set(e, "restore: %s: %s is in the way and is not in the "
                    "snapshot (ignored?)", rel, p + r->wdlen);
            free(p);
            return left ? 1 : -1;
        }
        *s = '/';
    }
    free(p);
    return 0;
}

/*
 * Copies the len bytes of a read stream to fd, CHUNK bytes at a time, so
 * memory does not grow with the blob.  A chunk of zeros becomes a hole
 * (the file reads the same, and a sparse file stays sparse).
 */
static int copy_stream(git_odb_stream *rs, size_t len, int fd, const char *rel,
    errbuf *e)
{
    char *buf = malloc(CHUNK);
    size_t done = 0;
    int rc = -1;
    if (!buf)
        return err_set(e, "restore: out of memory");
    while (done < len) {
        size_t want = len - done < CHUNK ? len - done : CHUNK;
        int n = git_odb_stream_read(rs, buf, want);
        if (n < 0) {
            err_set(e, "restore: %s: %s", rel, err_gitmsg());
            goto out;
        }
        if (n == 0) {
            err_set(e, "restore: %s: the stored object ends early", rel);
            goto out;
        }
        size_t m = (size_t)n;
        if (buf[0] == 0 && memcmp(buf, buf + 1, m - 1) == 0) {
            if (lseek(fd, (off_t)m, SEEK_CUR) < 0) {
                err_os(e, "restore", rel);
                goto out;
            }
        } else if (fs_write_all(fd, buf, m) < 0) {
            err_os(e, "restore", rel);
            goto out;
        }
        done += m;
    }
    if (ftruncate(fd, (off_t)len) < 0) {
        err_os(e, "restore", rel);
        goto out;
    }
    rc = 0;
out:
    free(buf);
    return rc;
}

/*
 * Writes the bytes of blob id, as they are stored (snapshots hold files
 * unfiltered), to fd.  A blob larger than STREAM_MIN is streamed when the
 * object database can (loose objects); a packed one is read whole.
 */
static int write_blob(brepo *r, const git_oid *id, int fd, const char *rel,
    errbuf *e)
{
    git_odb *odb = NULL;
    git_odb_stream *rs = NULL;
    git_blob *blob = NULL;
    git_object_t type;
    size_t len;
    int rc = -1;

    if (git_repository_odb(&odb, r->repo) < 0)
        return err_set(e, "restore: %s: %s", rel, err_gitmsg());
    if (git_odb_read_header(&len, &type, odb, id) == 0 && len > (size_t)STREAM_MIN &&
        git_odb_open_rstream(&rs, &len, &type, odb, id) == 0) {
        rc = copy_stream(rs, len, fd, rel, e);
        goto done;
    }
    git_error_clear();
    if (git_blob_lookup(&blob, r->repo, id) < 0) {
        err_set(e, "restore: %s: %s", rel, err_gitmsg());
        goto done;
    }
    if (fs_write_all(fd, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob)) < 0) {
        err_os(e, "restore", rel);
        goto done;
    }
    rc = 0;
done:
    git_blob_free(blob);
    git_odb_stream_free(rs);
    git_odb_free(odb);
    return rc;
}

/* Creates the symlink tmp pointing where the blob id (a link's target)
 * says; 1 when tmp is taken (try another name), 0, or -1. */
static int make_link(brepo *r, const git_oid *id, const char *tmp,
    const char *rel, errbuf *e)
{
    git_blob *blob = NULL;
    char *target = NULL;
    int rc = -1;
    if (git_blob_lookup(&blob, r->repo, id) < 0) {
        err_set(e, "restore: %s: %s", rel, err_gitmsg());
        return -1;
    }
    size_t n = (size_t)git_blob_rawsize(blob);
    if (!(target = malloc(n + 1))) {
        err_set(e, "restore: out of memory");
        goto done;
    }
    memcpy(target, git_blob_rawcontent(blob), n);
    target[n] = '\0';
    if (symlink(target, tmp) == 0)
        rc = 0;
    else if (errno == EEXIST)
        rc = 1;
    else
        err_os(e, "restore", rel);
done:
    free(target);
    git_blob_free(blob);
    return rc;
}

/*
 * Whether the entry at abs (not followed) holds exactly the blob id with
 * the type of mode (and its exec bit, when core.fileMode is on): a file's
 * bytes as they are on disk, a symlink's target.  Anything else -- gone,
 * another type, other bytes, a stat change while it was being hashed, an
 * error reading it -- is "no": the caller then leaves it alone.  Memory
 * stays bounded whatever the file's size (git_odb_hashfile reads in
 * pieces); a file of another size is not read at all.
 */
static int holds(brepo *r, const char *abs, const git_oid *id, uint32_t mode)
{
    struct stat a, b;
    git_oid h;
    int ok = 0;

    if (lstat(abs, &a) < 0)
        return 0;
    if (mode == GIT_FILEMODE_LINK) {
        char buf[4096];
        ssize_t n;
        if (!S_ISLNK(a.st_mode) || (n = readlink(abs, buf, sizeof buf)) < 0 ||
            (size_t)n == sizeof buf || git_odb_hash(&h, buf, (size_t)n, GIT_OBJECT_BLOB) < 0)
            goto out;
    } else {
        git_odb *odb = NULL;
        size_t len;
        git_object_t type;
        int hdr;
        if (!S_ISREG(a.st_mode) || (r->filemode &&
            !(a.st_mode & S_IXUSR) != (mode != GIT_FILEMODE_BLOB_EXECUTABLE)))
            goto out;
        hdr = git_repository_odb(&odb, r->repo) == 0 &&
            git_odb_read_header(&len, &type, odb, id) == 0;
        git_odb_free(odb);
        if (!hdr || (off_t)len != a.st_size ||
            git_odb_hashfile(&h, abs, GIT_OBJECT_BLOB) < 0)
            goto out;
    }
    ok = git_oid_equal(&h, id) && lstat(abs, &b) == 0 && a.st_ino == b.st_ino &&
        a.st_dev == b.st_dev && a.st_size == b.st_size &&
        a.st_mtim.tv_sec == b.st_mtim.tv_sec && a.st_mtim.tv_nsec == b.st_mtim.tv_nsec &&
        a.st_ctim.tv_sec == b.st_ctim.tv_sec && a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
out:
    git_error_clear();
    return ok;
}

/* Whether renameat2 failed because the file system (or the kernel) does not
 * do what its flags ask, rather than for the usual reasons. */
static int unsupported(int err)
{
    return err == EINVAL || err == ENOSYS || err == ENOTSUP || err == EOPNOTSUPP;
}

/*
 * Moves from to the free name to, atomically: never over something that is
 * there (then -1 with errno EEXIST).  Where the file system cannot rename
 * without replacing, a hard link does the same; where it has neither, the
 * name is checked free just before the rename.
 */
static int move_new(const char *from, const char *to)
{
    struct stat st;
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0)
        return 0;
    if (!unsupported(errno))
        return -1;
    if (link(from, to) == 0)
        return unlink(from) < 0 && errno != ENOENT ? -1 : 0;
    if (errno == EEXIST || (errno != EPERM && !unsupported(errno)))
        return -1;
    if (lstat(to, &st) == 0) {
        errno = EEXIST;
        return -1;
    }
    return rename(from, to);
}

/* A name beside abs, ".beat-restore-<pid>-<n>", for a temporary file or a
 * file set aside; malloc'd, NULL when out of memory. */
static char *side_name(brepo *r, const char *abs)
{
    char *tmp = malloc(strlen(abs) + 64), *slash;
    if (!tmp)
        return NULL;
    strcpy(tmp, abs);
    slash = strrchr(tmp, '/');
    sprintf(slash + 1, ".beat-restore-%ld-%lu", (long)getpid(), ++r->tmp_counter);
    return tmp;
}

/* Creates the file (or symlink) tmp with the blob's bytes and mode; 1 when
 * the name is taken (the caller picks another), 0, or -1. */
static int make_entry(brepo *r, const char *tmp, const git_oid *id, uint32_t mode,
    const char *rel, errbuf *e)
{
    int fd, w, c;
    if (mode == GIT_FILEMODE_LINK)
        return make_link(r, id, tmp, rel, e);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
        mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0777 : 0666);
    if (fd < 0)
        return errno == EEXIST ? 1 : err_os(e, "restore", rel);
    w = write_blob(r, id, fd, rel, e);
    c = close(fd);
    if (w < 0 || c < 0) {
        if (w == 0)
            err_os(e, "restore", rel);
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Notes that rel (or the file beside it named by abs) was left alone;
 * -1 when out of memory. */
static int conflict(brepo *r, strvec *conflicts, const char *rel, const char *abs,
    errbuf *e)
{
    if (strvec_add(conflicts, abs ? abs + r->wdlen : rel) < 0)
        return err_set(e, "restore: out of memory");
    return 0;
}

/*
 * Puts the blob id (mode) at rel, where the restore's `from` tree had the
 * blob old (old_mode), or nothing (old NULL): a reader sees the old entry
 * or the new one, never half a file.  The entry is first written under a
 * temporary name, then:
 *  - nothing was there: moved in only if the name is still free;
 *  - something was: exchanged with what is there (renameat2
 *    RENAME_EXCHANGE), and what came out is checked to hold old; if it
 *    does not (the user changed it after the restore looked), it is
 *    exchanged back.
 * So an entry whose bytes are not those `from` recorded is never
 * overwritten: 0 when written, 1 when left alone (noted in conflicts, with
 * whatever else had to stay beside it), -1 on error with rel as it was.
 * Where the file system cannot exchange, the entry is checked just before
 * it is replaced.
 */
static int write_entry(brepo *r, const char *rel, const git_oid *id, uint32_t mode,
    const git_oid *old, uint32_t old_mode, strvec *conflicts, errbuf *e)
{
    char *abs = NULL, *tmp = NULL;
    struct stat ours, back;
    int rc = -1, m;

    if ((m = mkdir_parents(r, rel, conflicts, e)) != 0)
        return m < 0 || conflict(r, conflicts, rel, NULL, e) < 0 ? -1 : 1;
    if (!(abs = path_abs(r, rel))) {
        err_set(e, "restore: out of memory");
        goto done;
    }
    do {
        free(tmp);
        if (!(tmp = side_name(r, abs))) {
            err_set(e, "restore: out of memory");
            goto done;
        }
    } while ((m = make_entry(r, tmp, id, mode, rel, e)) == 1);
    if (m < 0)
        goto done;
    if (lstat(tmp, &ours) < 0) {
        err_os(e, "restore", rel);
        goto fail_tmp;
    }
    if (old && renameat2(AT_FDCWD, tmp, AT_FDCWD, abs, RENAME_EXCHANGE) == 0) {
        /* tmp now names what was at rel */
        if (holds(r, tmp, old, old_mode)) {
            unlink(tmp);  /* had it lingered, it holds bytes `from` has */
            rc = 0;
            goto done;
        }
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, abs, RENAME_EXCHANGE) < 0) {
            /* never unlink what is the user's: both stay, both named */
            rc = conflict(r, conflicts, rel, NULL, e) < 0 ||
                conflict(r, conflicts, rel, tmp, e) < 0 ? -1 : 1;
            goto done;
        }
        /* tmp is ours again, unless rel was replaced meanwhile: then both
         * are the user's, and the other one stays beside it */
        rc = conflict(r, conflicts, rel, NULL, e) < 0 ? -1 : 1;
        if (lstat(tmp, &back) == 0 && back.st_ino == ours.st_ino &&
            back.st_dev == ours.st_dev)
            unlink(tmp);
        else if (rc == 1 && conflict(r, conflicts, rel, tmp, e) < 0)
            rc = -1;
        goto done;
    }
    if (old && errno != ENOENT) {
        if (!unsupported(errno)) {
            err_os(e, "restore", rel);
            goto fail_tmp;
        }
        /* the file system cannot exchange: check, then replace */
        if (!holds(r, abs, old, old_mode)) {
            rc = conflict(r, conflicts, rel, NULL, e) < 0 ? -1 : 1;
            goto fail_tmp;
        }
        if (rename(tmp, abs) < 0) {
            err_os(e, "restore", rel);
            goto fail_tmp;
        }
        rc = 0;
        goto done;
    }
    /* nothing there (or nothing any more): only into a free name */
    if (move_new(tmp, abs) == 0) {
        rc = 0;
        goto done;
    }
    if (errno != EEXIST)
        err_os(e, "restore", rel);
    else if (conflict_at(conflicts, rel) ||
        !(lstat(abs, &back) == 0 && S_ISDIR(back.st_mode)))
        /* made since the restore looked, or a directory kept for a
         * file left alone in it */
        rc = conflict(r, conflicts, rel, NULL, e) < 0 ? -1 : 1;
    else
        err_set(e, "restore: %s: a directory is in the way and is not in the "
            "snapshot (ignored files in it?)", rel);
fail_tmp:
    unlink(tmp);
done:
    free(abs);
    free(tmp);
    return rc;
}

/*
 * Removes rel, which the restore's `from` tree recorded as the blob old
 * (mode): it is first moved aside (atomically, so a file made at rel from
 * then on is not touched), then checked; what does not hold old is put
 * back.  0 when removed (or already gone), 1 when left alone (noted in
 * conflicts), -1 on error.
 */
static int remove_entry(brepo *r, const char *rel, const git_oid *old,
    uint32_t mode, strvec *conflicts, errbuf *e)
{
    char *abs = path_abs(r, rel), *aside = NULL;
    int rc = -1;

    if (!abs)
        return err_set(e, "restore: out of memory");
    for (;;) {
        free(aside);
        if (!(aside = side_name(r, abs))) {
            err_set(e, "restore: out of memory");
            goto done;
        }
        if (move_new(abs, aside) == 0)
            break;
        if (errno == ENOENT) {
            rc = 0;  /* gone already */
            goto done;
        }
        if (errno != EEXIST) {
            err_os(e, "restore", rel);
            goto done;
        }
    }
    if (holds(r, aside, old, mode)) {
        if (unlink(aside) < 0)
            err_os(e, "restore", rel);
        else
            rc = 0;
        goto done;
    }
    rc = conflict(r, conflicts, rel, NULL, e) < 0 ? -1 : 1;
    /* made anew at rel meanwhile: both stay, both named */
    if (move_new(aside, abs) < 0 && rc == 1 && conflict(r, conflicts, rel, aside, e) < 0)
        rc = -1;
done:
    free(abs);
    free(aside);
    return rc;
}

/* Sets or clears rel's exec bits (git records only that one bit), after
 * checking it is still a regular file inside the work tree. */
static int set_exec(brepo *r, const char *rel, int exec, errbuf *e)
{
    struct stat st;
    char *abs = path_abs(r, rel);
    int rc = 0;
    if (!abs)
        return err_set(e, "restore: out of memory");
    if (!path_parents_real(r, rel) || lstat(abs, &st) < 0 || !S_ISREG(st.st_mode)) {
        rc = err_set(e, "restore: %s: no longer a regular file", rel);
    } else {
        mode_t m = st.st_mode & 07777;
        m = exec ? (m | ((m & 0444) >> 2)) : (m & ~(mode_t)0111);
        if (chmod(abs, m) < 0)
            rc = err_os(e, "restore", rel);
    }
    free(abs);
    return rc;
}

/* Whether the delta's side (old or new) is a path restore may touch. */
static int touchable(brepo *r, const git_diff_file *f, const strvec *keep)
{
    return !path_excluded(r, f->path) && f->mode != GIT_FILEMODE_COMMIT &&
        !strvec_has(keep, f->path);
}

/*
 * Makes the work tree go from tree `from` (what it held when last looked
 * at) to tree `to`: removes what `to` lacks, then writes what differs, each
 * file's stored bytes as they are (no checkout filter: a snapshot holds
 * files unfiltered, so this gives back every byte).  Only paths in one of
 * the two trees are touched, and never a path in keep (sorted: the files
 * too large to snapshot, which no snapshot could give back).
 *
 * Never overwrites nor removes an entry that is not what `from` recorded
 * (see write_entry, remove_entry): a path changed since `from` was computed
 * is left as it is and added to conflicts, so with `from` a snapshot's
 * tree, no byte that is in no snapshot is lost.  Keeps going after an
 * error and reports the first.
 */
int restore_trees(brepo *r, const git_oid *from_id, const git_oid *to_id,
    const strvec *keep, size_t *written, size_t *removed, strvec *conflicts,
    errbuf *e)
{
    git_tree *from = NULL, *to = NULL;
    git_diff *diff = NULL;
    git_diff_options o;
    errbuf first = {{0}};
    int failed = 0, rc = -1;

    *written = *removed = 0;
    git_diff_options_init(&o, GIT_DIFF_OPTIONS_VERSION);
    if (git_tree_lookup(&from, r->repo, from_id) < 0 ||
        git_tree_lookup(&to, r->repo, to_id) < 0) {
        err_git(e, "restore: tree");
        goto done;
    }
    if (git_diff_tree_to_tree(&diff, r->repo, from, to, &o) < 0) {
        err_git(e, "restore: diff");
        goto done;
    }
    size_t nd = git_diff_num_deltas(diff);
    for (size_t i = 0; i < nd; i++) {
        const git_diff_delta *d = git_diff_get_delta(diff, i);
        errbuf one;
        if (d->status != GIT_DELTA_DELETED || !touchable(r, &d->old_file, keep) ||
            !path_parents_real(r, d->old_file.path))
            continue;  /* below a link or a file: not in the work tree */
        int r2 = remove_entry(r, d->old_file.path, &d->old_file.id, d->old_file.mode,
            conflicts, &one);
        if (r2 < 0 && !failed++)
            first = one;
        if (r2 == 0) {
            (*removed)++;
            prune_dirs(r, d->old_file.path);
        }
    }
    for (size_t i = 0; i < nd; i++) {
        const git_diff_delta *d = git_diff_get_delta(diff, i);
        const char *path = d->new_file.path;
        int modified = d->status == GIT_DELTA_MODIFIED;
        errbuf one;
        int r2;
        if ((d->status != GIT_DELTA_ADDED && !modified) ||
            !touchable(r, &d->new_file, keep))
            continue;
        if (modified && git_oid_equal(&d->old_file.id, &d->new_file.id) &&
            d->old_file.mode != GIT_FILEMODE_LINK &&
            d->new_file.mode != GIT_FILEMODE_LINK)
            r2 = set_exec(r, path,
                d->new_file.mode == GIT_FILEMODE_BLOB_EXECUTABLE, &one);
        else
            r2 = write_entry(r, path, &d->new_file.id, d->new_file.mode,
                modified ? &d->old_file.id : NULL, d->old_file.mode, conflicts, &one);
        if (r2 < 0 && !failed++)
            first = one;
        if (r2 == 0)
            (*written)++;
    }
    if (failed > 1)
        err_set(e, "%s (and %d more)", first.msg, failed - 1);
    else if (failed)
        *e = first;
    rc = failed ? -1 : 0;
done:
    git_diff_free(diff);
    git_tree_free(from);
    git_tree_free(to);
    return rc;
}
