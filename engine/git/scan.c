/*
 * scan.c — the tree of the work tree as it is now, by the cheapest way that
 * is right: from the previous tree and the paths the watch saw change, or
 * from a full scan (the real index's tree, plus every path
 * git_diff_index_to_workdir reports — the index is the stat cache, so
 * unchanged files are not hashed — plus every tracked file a filter may
 * have applied to, see filter.c).
 */
#include <stdlib.h>
#include <string.h>

#include "git.h"

typedef struct {
    strvec uncertain;  /* unchanged only by content: stale stat data */
    int oom;
} scan_notes;

/* Drops the diff's unchanged entries as they come (only changes are kept),
 * noting those git had to hash to call unchanged. */
static int note_delta(const git_diff *diff, const git_diff_delta *d,
    const char *pathspec, void *payload)
{
    scan_notes *n = payload;
    (void)diff;
    (void)pathspec;
    if (d->status != GIT_DELTA_UNMODIFIED)
        return 0;
    /* the work tree side has an id only when git hashed the file */
    if (!git_oid_is_zero(&d->new_file.id) &&
        strvec_add(&n->uncertain, d->old_file.path) < 0)
        n->oom = 1;
    return 1;
}

/*
 * The work tree's tree by a full scan, as `git add -A` with a temporary
 * index would give it for files no filter applies to (and each file's own
 * bytes where one would).  The index file is never written: an index with
 * conflicts is copied in memory first.  *itree gets the index's tree.
 */
static int scan_full(brepo *r, git_index *idx, git_oid *out, size_t *nhashed,
    git_oid *itree, errbuf *e)
{
    git_index *priv = NULL, *use = idx;
    git_diff *diff = NULL;
    git_diff_options o;
    changes c = {0};
    git_oid base;
    const char **seen = NULL;
    scan_notes notes = {{0}, 0};
    int rc = -1, filters;

    git_diff_options_init(&o, GIT_DIFF_OPTIONS_VERSION);
    if (git_index_has_conflicts(idx)) {
        /* a private copy without the conflicts: the index file stays as is */
        if (git_index_open(&priv, git_index_path(idx)) < 0) {
            err_git(e, "snapshot: index");
            goto done;
        }
        git_index_conflict_cleanup(priv);
        use = priv;
    }
    if (git_index_write_tree_to(&base, use, r->repo) < 0) {
        err_git(e, "snapshot: index tree");
        goto done;
    }
    git_oid_cpy(itree, &base);
    o.flags = GIT_DIFF_INCLUDE_UNTRACKED | GIT_DIFF_RECURSE_UNTRACKED_DIRS |
        GIT_DIFF_INCLUDE_TYPECHANGE | GIT_DIFF_SKIP_BINARY_CHECK;
    /* with filters possible, check_index_blobs must know which unchanged
     * entries git could not vouch for by their stat data alone.  (Not
     * GIT_DIFF_UPDATE_INDEX: libgit2 then writes the index file.) */
    filters = filters_possible(r, use);
    if (filters) {
        o.flags |= GIT_DIFF_INCLUDE_UNMODIFIED;
        o.notify_cb = note_delta;
        o.payload = &notes;
    }
    o.ignore_submodules = GIT_SUBMODULE_IGNORE_ALL;
    if (git_diff_index_to_workdir(&diff, r->repo, use, &o) < 0) {
        err_git(e, "snapshot: scan");
        goto done;
    }
    if (notes.oom) {
        err_set(e, "snapshot: out of memory");
        goto done;
    }
    size_t nd = git_diff_num_deltas(diff);
    for (size_t i = 0; i < nd; i++) {
        const git_diff_delta *d = git_diff_get_delta(diff, i);
        const char *path = d->status == GIT_DELTA_DELETED ? d->old_file.path
            : d->new_file.path;
        size_t len = strlen(path);
        git_oid oid;
        uint32_t mode;
        int h = 0;
        if (len == 0 || path[len - 1] == '/' || path_excluded(r, path))
            continue;  /* untracked nested repository, excluded path */
        if (d->old_file.mode == GIT_FILEMODE_COMMIT ||
            d->new_file.mode == GIT_FILEMODE_COMMIT)
            continue;
        if (d->status != GIT_DELTA_DELETED) {
            int reg = d->new_file.mode == GIT_FILEMODE_BLOB ||
                d->new_file.mode == GIT_FILEMODE_BLOB_EXECUTABLE;
            h = tree_hash_path(r, use, path, reg, &oid, &mode, NULL, e);
            if (h < 0)
                goto done;
        }
        if (h == 1) {
            (*nhashed)++;
            if (changes_add(&c, path, &oid, mode) < 0) {
                err_set(e, "snapshot: out of memory");
                goto done;
            }
        } else if (changes_add(&c, path, NULL, 0) < 0) {
            err_set(e, "snapshot: out of memory");
            goto done;
        }
    }
    /* the index's blob id of a file the diff found unchanged is that file's
     * bytes only when no filter applied on `git add` */
    if (filters) {
        if (nd && !(seen = malloc(nd * sizeof *seen))) {
            err_set(e, "snapshot: out of memory");
            goto done;
        }
        for (size_t i = 0; i < nd; i++) {
            const git_diff_delta *d = git_diff_get_delta(diff, i);
            seen[i] = d->status == GIT_DELTA_DELETED ? d->old_file.path
                : d->new_file.path;
        }
        if (nd)
            qsort(seen, nd, sizeof *seen, cmp_str);
        if (notes.uncertain.n)
            qsort(notes.uncertain.v, notes.uncertain.n, sizeof *notes.uncertain.v,
                cmp_str);
        if (filters_check_index(r, use, &notes.uncertain, seen, nd, &c, nhashed, e) < 0)
            goto done;
    }
    /* an excluded path the index tracks is not in the tree either */
    for (size_t i = 0; i < r->exclude.n; i++) {
        if (changes_add(&c, r->exclude.v[i], NULL, 0) < 0) {
            err_set(e, "snapshot: out of memory");
            goto done;
        }
    }
    rc = tree_apply(r->repo, &base, &c, out, e);
done:
    free(seen);
    strvec_free(&notes.uncertain);
    changes_free(&c);
    git_diff_free(diff);
    git_index_free(priv);
    return rc;
}

/*
 * Whether the index, rewritten since the base, still records the same files
 * (`git status` rewrites it just to refresh stat data): then what the watch
 * knows still holds.
 */
static int index_same(brepo *r, git_index *idx)
{
    git_oid now;
    if (!r->w.has_itree || git_index_has_conflicts(idx) ||
        git_index_write_tree_to(&now, idx, r->repo) < 0)
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
    git_index *idx = NULL;
    fsig isig, xsig;
    char *ipath = NULL, *xpath = NULL;
    int rc = -1, incremental;
    changes c = {0};

    *nhashed = 0;
    if (git_repository_index(&idx, r->repo) < 0) {
        err_git(e, "snapshot: index");
        goto done;
    }
    ipath = str_dup(git_index_path(idx));
    xpath = path_gitdir(r, "info/exclude");
    if (!ipath || !xpath) {
        err_set(e, "snapshot: out of memory");
        goto done;
    }
    sig_of(ipath, &isig);
    sig_of(xpath, &xsig);
    if (git_index_read(idx, 0) < 0) {
        err_git(e, "snapshot: index");
        goto done;
    }
    if (r->use_watch && w->fd < 0 && watch_start(r, idx, e) < 0)
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
           !index_same(r, idx)) {
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
        if (watch_process(r, idx, &c, nhashed, e) < 0 ||
            tree_apply(r->repo, &w->base, &c, out, e) < 0) {
            w->has_base = 0;
            goto done;
        }
        *how = "watch";
        w->state = "watching";
    } else {
        if (w->fd >= 0) {
            if (rewatch) {
                watch_stop(w);
                if (r->use_watch && watch_start(r, idx, e) < 0)
                    goto done;
            } else if (watch_process(r, idx, NULL, nhashed, e) < 0) {
                goto done;
            }
        }
        *nhashed = 0;
        if (scan_full(r, idx, out, nhashed, &w->itree, e) < 0)
            goto done;
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
    git_index_free(idx);
    return rc;
}

