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

/* Writes one blob's bytes, unfiltered, to rel through a temporary file
 * renamed into place, so a reader never sees a half-written file. */
static int write_entry(brepo *r, const char *rel, const git_oid *id,
    uint32_t mode, errbuf *e)
{
    git_blob *blob = NULL;
    char *abs = NULL, *tmp = NULL, *slash;
    int rc = -1, fd = -1;

    if (mkdir_parents(r, rel, e) < 0)
        return -1;
    if (git_blob_lookup(&blob, r->repo, id) < 0) {
        err_set(e, "restore: %s: %s", rel, err_gitmsg());
        goto done;
    }
    if (!(abs = path_abs(r, rel)) || !(tmp = malloc(strlen(abs) + 64))) {
        err_set(e, "restore: out of memory");
        goto done;
    }
    strcpy(tmp, abs);
    slash = strrchr(tmp, '/');
    for (;;) {
        sprintf(slash + 1, ".beat-restore-%ld-%lu", (long)getpid(), ++r->tmp_counter);
        if (mode == GIT_FILEMODE_LINK) {
            size_t n = (size_t)git_blob_rawsize(blob);
            char *target = malloc(n + 1);
            if (!target) {
                err_set(e, "restore: out of memory");
                goto done;
            }
            memcpy(target, git_blob_rawcontent(blob), n);
            target[n] = '\0';
            int s = symlink(target, tmp);
            int err = errno;
            free(target);
            if (s == 0)
                break;
            if (err != EEXIST) {
                errno = err;
                err_os(e, "restore", rel);
                goto done;
            }
            continue;
        }
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
            mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0777 : 0666);
        if (fd >= 0)
            break;
        if (errno != EEXIST) {
            err_os(e, "restore", rel);
            goto done;
        }
    }
    if (fd >= 0) {
        /* the stored bytes as they are: snapshots hold files unfiltered */
        const char *data = git_blob_rawcontent(blob);
        size_t len = (size_t)git_blob_rawsize(blob);
        while (len > 0) {
            ssize_t w = write(fd, data, len);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                err_os(e, "restore", rel);
                goto fail_tmp;
            }
            data += w;
            len -= (size_t)w;
        }
        if (close(fd) < 0) {
            fd = -1;
            err_os(e, "restore", rel);
            goto fail_tmp;
        }
        fd = -1;
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
    if (fd >= 0)
        close(fd);
    fd = -1;
    unlink(tmp);
done:
    if (fd >= 0)
        close(fd);
    git_blob_free(blob);
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
 * gives back every byte).  Only paths in one of the two trees are touched.
 * Keeps going after an error and reports the first.
 */
int restore_trees(brepo *r, const git_oid *from_id, const git_oid *to_id,
    size_t *written, size_t *removed, errbuf *e)
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
            d->old_file.mode == GIT_FILEMODE_COMMIT)
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
            path_excluded(r, path) || d->new_file.mode == GIT_FILEMODE_COMMIT)
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

