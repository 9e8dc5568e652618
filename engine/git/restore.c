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

/* Creates the missing directories above rel, inside the work tree only;
 * fails, naming it, where something that is not a directory is in the way
 * (it is not in the snapshot, or it would have been removed first). */
static int mkdir_parents(brepo *r, const char *rel, errbuf *e)
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
            err_set(e, "restore: %s: %s is in the way and is not in the snapshot "
                "(ignored?)", rel, p + r->wdlen);
            free(p);
            return -1;
        }
        *s = '/';
    }
    free(p);
    return 0;
}

/* Writes all n bytes to fd; -1 with errno set. */
static int write_all(int fd, const char *data, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        data += w;
        n -= (size_t)w;
    }
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
        } else if (write_all(fd, buf, m) < 0) {
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
    if (write_all(fd, git_blob_rawcontent(blob), (size_t)git_blob_rawsize(blob)) < 0) {
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

/* Writes one blob's bytes, unfiltered, to rel through a temporary file
 * renamed into place, so a reader never sees a half-written file; on
 * failure nothing is left behind and rel is as it was. */
static int write_entry(brepo *r, const char *rel, const git_oid *id,
    uint32_t mode, errbuf *e)
{
    char *abs = NULL, *tmp = NULL, *slash;
    int rc = -1, fd = -1, made = 0;

    if (mkdir_parents(r, rel, e) < 0)
        return -1;
    if (!(abs = path_abs(r, rel)) || !(tmp = malloc(strlen(abs) + 64))) {
        err_set(e, "restore: out of memory");
        goto done;
    }
    strcpy(tmp, abs);
    slash = strrchr(tmp, '/');
    while (!made) {
        sprintf(slash + 1, ".beat-restore-%ld-%lu", (long)getpid(), ++r->tmp_counter);
        if (mode == GIT_FILEMODE_LINK) {
            int l = make_link(r, id, tmp, rel, e);
            if (l < 0)
                goto done;
            made = l == 0;
            continue;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
            mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0777 : 0666);
        if (fd >= 0)
            made = 1;
        else if (errno != EEXIST) {
            err_os(e, "restore", rel);
            goto done;
        }
    }
    if (fd >= 0) {
        int w = write_blob(r, id, fd, rel, e);
        int c = close(fd);
        fd = -1;
        if (w < 0)
            goto fail_tmp;
        if (c < 0) {
            err_os(e, "restore", rel);
            goto fail_tmp;
        }
    }
    if (rename(tmp, abs) < 0) {
        if (errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST)
            err_set(e, "restore: %s: a directory is in the way and is not in the "
                "snapshot (ignored files in it?)", rel);
        else
            err_os(e, "restore", rel);
        goto fail_tmp;
    }
    rc = 0;
    goto done;
fail_tmp:
    unlink(tmp);
done:
    free(abs);
    free(tmp);
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

/*
 * Makes the work tree go from tree `from` (what it holds now) to tree `to`:
 * removes what `to` lacks, then writes what differs, each file's stored bytes
 * as they are (no checkout filter: a snapshot holds files unfiltered, so this
 * gives back every byte).  Only paths in one of the two trees are touched,
 * and never a path in keep (sorted: the files too large to snapshot, which
 * no snapshot could give back).  Keeps going after an error and reports
 * the first.
 */
int restore_trees(brepo *r, const git_oid *from_id, const git_oid *to_id,
    const strvec *keep, size_t *written, size_t *removed, errbuf *e)
{
    git_tree *from = NULL, *to = NULL;
    git_diff *diff = NULL;
    git_diff_options o;
    errbuf first = {{0}};
    int failed = 0;

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
        if (d->status != GIT_DELTA_DELETED || path_excluded(r, d->old_file.path) ||
            d->old_file.mode == GIT_FILEMODE_COMMIT || strvec_has(keep, d->old_file.path))
            continue;
        char *abs = path_abs(r, d->old_file.path);
        if (!abs) {
            err_set(e, "restore: out of memory");
            goto done;
        }
        if (!path_parents_real(r, d->old_file.path)) {
            free(abs);
            continue;  /* below a link or a file: not in the work tree */
        }
        if (unlink(abs) < 0 && errno != ENOENT) {
            if (!failed++)
                err_os(&first, "restore", d->old_file.path);
        } else {
            (*removed)++;
            prune_dirs(r, d->old_file.path);
        }
        free(abs);
    }
    for (size_t i = 0; i < nd; i++) {
        const git_diff_delta *d = git_diff_get_delta(diff, i);
        const char *path = d->new_file.path;
        errbuf one;
        int r2;
        if ((d->status != GIT_DELTA_ADDED && d->status != GIT_DELTA_MODIFIED) ||
            path_excluded(r, path) || d->new_file.mode == GIT_FILEMODE_COMMIT ||
            strvec_has(keep, path))
            continue;
        if (d->status == GIT_DELTA_MODIFIED &&
            git_oid_equal(&d->old_file.id, &d->new_file.id) &&
            d->old_file.mode != GIT_FILEMODE_LINK &&
            d->new_file.mode != GIT_FILEMODE_LINK)
            r2 = set_exec(r, path,
                d->new_file.mode == GIT_FILEMODE_BLOB_EXECUTABLE, &one);
        else
            r2 = write_entry(r, path, &d->new_file.id, d->new_file.mode, &one);
        if (r2 < 0) {
            if (!failed++)
                first = one;
        } else {
            (*written)++;
        }
    }
    git_diff_free(diff);
    git_tree_free(from);
    git_tree_free(to);
    if (failed) {
        if (failed > 1)
            return err_set(e, "%s (and %d more)", first.msg, failed - 1);
        *e = first;
        return -1;
    }
    return 0;
done:
    git_diff_free(diff);
    git_tree_free(from);
    git_tree_free(to);
    return -1;
}

