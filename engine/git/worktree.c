/*
 * worktree.c — linked work trees for parallel candidates: created as
 * `git worktree add --detach` would, removed only when beat made them.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "git.h"

/* Creates path (which must not exist) holding text; -1 with e set. */
static int write_text(const char *path, const char *text, errbuf *e)
{
    FILE *f = fopen(path, "wbx");
    if (!f)
        return err_os(e, "worktree", path);
    if (fputs(text, f) < 0 || fclose(f) != 0)
        return err_os(e, "worktree", path);
    return 0;
}

/* Creates dir, or accepts it when it exists and is empty. */
static int make_empty_dir(const char *path, errbuf *e)
{
    DIR *d;
    struct dirent *de;
    int empty = 1;
    if (mkdir(path, 0777) == 0)
        return 0;
    if (errno != EEXIST || !(d = opendir(path)))
        return err_os(e, "worktree", path);
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            empty = 0;
    closedir(d);
    if (!empty)
        return err_set(e, "worktree: %s: exists and is not empty", path);
    return 0;
}

/* Makes <commondir>/worktrees/<name> (or <name>-N when taken); *admin gets
 * its malloc'd path. */
static int make_admin_dir(const char *common, const char *name, char **admin,
    errbuf *e)
{
    char *dir = NULL;
    *admin = NULL;
    if (asprintf(&dir, "%sworktrees", common) < 0)
        return err_set(e, "worktree: out of memory");
    if (mkdir(dir, 0777) < 0 && errno != EEXIST) {
        err_os(e, "worktree", dir);
        free(dir);
        return -1;
    }
    free(dir);
    for (int i = 1;; i++) {
        int n = i == 1 ? asprintf(&dir, "%sworktrees/%s", common, name)
            : asprintf(&dir, "%sworktrees/%s-%d", common, name, i);
        if (n < 0)
            return err_set(e, "worktree: out of memory");
        if (mkdir(dir, 0777) == 0) {
            *admin = dir;
            return 0;
        }
        if (errno != EEXIST || i >= 1000) {
            err_os(e, "worktree", dir);
            free(dir);
            return -1;
        }
        free(dir);
    }
}

static int write_admin(const char *dir, const char *name, errbuf *e,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Creates <dir>/<name> (which must not exist) holding the formatted text. */
static int write_admin(const char *dir, const char *name, errbuf *e,
    const char *fmt, ...)
{
    char *file = NULL, *text = NULL;
    va_list ap;
    int rc;
    va_start(ap, fmt);
    rc = vasprintf(&text, fmt, ap);
    va_end(ap);
    if (rc < 0 || asprintf(&file, "%s/%s", dir, name) < 0) {
        if (rc >= 0)
            free(text);
        return err_set(e, "worktree: out of memory");
    }
    rc = write_text(file, text, e);
    free(file);
    free(text);
    return rc;
}

/*
 * A linked work tree at path (missing or empty) with HEAD detached at the
 * commit, its files and its own index checked out; git's record of it is
 * <commondir>/worktrees/<name>, marked as made by beat.  Creates no branch;
 * the user's work tree and index are not touched.
 */
int worktree_add(brepo *r, const char *path, const git_oid *commit,
    const char *name, errbuf *e)
{
    const char *common = git_repository_commondir(r->repo);
    char *admin = NULL, *apath = NULL;
    char hex[GIT_OID_HEXSZ + 1];
    git_repository *wt = NULL;
    git_object *obj = NULL;
    git_checkout_options co;
    int rc = -1;

    if (make_empty_dir(path, e) < 0)
        return -1;
    if (!(apath = realpath(path, NULL)))
        return err_os(e, "worktree", path);
    if (make_admin_dir(common, name, &admin, e) < 0)
        goto done;
    git_oid_tostr(hex, sizeof hex, commit);
    if (write_admin(admin, "HEAD", e, "%s\n", hex) < 0 ||
        write_admin(admin, "commondir", e, "../..\n") < 0 ||
        write_admin(admin, "gitdir", e, "%s/.git\n", apath) < 0 ||
        write_admin(admin, "beat", e, "created by beat: repo:remove_worktree "
            "may delete this work tree\n") < 0 ||
        write_admin(apath, ".git", e, "gitdir: %s\n", admin) < 0)
        goto done;
    if (git_repository_open(&wt, apath) < 0 ||
        git_object_lookup(&obj, wt, commit, GIT_OBJECT_COMMIT) < 0) {
        err_git(e, "worktree");
        goto done;
    }
    git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
    co.checkout_strategy = GIT_CHECKOUT_FORCE;
    if (git_checkout_tree(wt, obj, &co) < 0) {
        err_git(e, "worktree: checkout");
        goto done;
    }
    rc = 0;
done:
    git_object_free(obj);
    git_repository_free(wt);
    free(admin);
    free(apath);
    return rc;
}

/* Prunes one linked work tree (directory and admin files) if beat made it:
 * a user's own may hold uncommitted work. */
static int prune_if_ours(brepo *r, git_worktree *wt, const char *name,
    const char *path, errbuf *e)
{
    git_worktree_prune_options po;
    struct stat st;
    char *marker = NULL;
    int rc = 0;
    if (asprintf(&marker, "%sworktrees/%s/beat",
            git_repository_commondir(r->repo), name) < 0)
        return err_set(e, "worktree: out of memory");
    if (stat(marker, &st) < 0) {
        rc = err_set(e, "worktree: %s: not created by beat, not removing it", path);
    } else {
        git_worktree_prune_options_init(&po, GIT_WORKTREE_PRUNE_OPTIONS_VERSION);
        po.flags = GIT_WORKTREE_PRUNE_VALID | GIT_WORKTREE_PRUNE_WORKING_TREE;
        if (git_worktree_prune(wt, &po) < 0)
            rc = err_git(e, "worktree");
    }
    free(marker);
    return rc;
}

/*
 * Deletes the linked work tree of this repository at path, when beat made
 * it; any other path is refused and nothing is touched.
 */
int worktree_remove(brepo *r, const char *path, errbuf *e)
{
    git_strarray names = {0};
    char *want = realpath(path, NULL);
    int rc = 0, found = 0;

    if (git_worktree_list(&names, r->repo) < 0) {
        free(want);
        return err_git(e, "worktree");
    }
    for (size_t i = 0; i < names.count && !found; i++) {
        git_worktree *wt = NULL;
        if (git_worktree_lookup(&wt, r->repo, names.strings[i]) < 0)
            continue;
        const char *wp = git_worktree_path(wt);
        char *have = wp ? realpath(wp, NULL) : NULL;
        if ((want && have && strcmp(want, have) == 0) ||
            (!want && wp && strcmp(wp, path) == 0)) {
            found = 1;
            rc = prune_if_ours(r, wt, names.strings[i], path, e);
        }
        free(have);
        git_worktree_free(wt);
    }
    git_strarray_dispose(&names);
    free(want);
    if (!found)
        return err_set(e, "worktree: %s: not a work tree of this repository", path);
    return rc;
}
