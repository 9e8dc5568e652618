/*
 * repo.c — what every part of beat._git shares: the error buffer, a few
 * small containers, the repository object's paths and its teardown.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "git.h"

/* ------------------------------------------------------------------------ */
/* errors                                                                    */

/* Formats the message into e; returns -1, so `return err_set(...)` fails. */
int err_set(errbuf *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* libgit2's last error message; never NULL. */
const char *err_gitmsg(void)
{
    const git_error *ge = git_error_last();
    return ge && ge->message ? ge->message : "unknown libgit2 error";
}

/* "what: <libgit2's last error>"; returns -1. */
int err_git(errbuf *e, const char *what)
{
    return err_set(e, "%s: %s", what, err_gitmsg());
}

/* "what: path: <strerror(errno)>"; returns -1. */
int err_os(errbuf *e, const char *what, const char *path)
{
    return err_set(e, "%s: %s: %s", what, path, strerror(errno));
}

/* ------------------------------------------------------------------------ */
/* small containers                                                          */

/* A malloc'd copy of s, or NULL when out of memory. */
char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

/* "dir/name", or "name" when dir is the root (""); NULL when out of memory. */
char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    if (a) {
        memcpy(p, dir, a);
        p[a] = '/';
        memcpy(p + a + 1, name, b + 1);
    } else {
        memcpy(p, name, b + 1);
    }
    return p;
}

/*
 * The array v, of *cap elements of size bytes of which n are in use, with
 * room for one more: v itself, or a larger copy (then *cap is its new
 * size; the first allocation holds `first`).  NULL when out of memory: v
 * is then as it was.
 */
void *vec_room(void *v, size_t n, size_t *cap, size_t size, size_t first)
{
    size_t ncap;
    void *nv;
    if (n < *cap)
        return v;
    ncap = *cap ? *cap * 2 : first;
    if (ncap > SIZE_MAX / size || !(nv = realloc(v, ncap * size)))
        return NULL;
    *cap = ncap;
    return nv;
}

/* Appends a copy of str; -1 (s unchanged) when out of memory. */
int strvec_add(strvec *s, const char *str)
{
    char **v = vec_room(s->v, s->n, &s->cap, sizeof *v, 16);
    if (!v)
        return -1;
    s->v = v;
    if (!(s->v[s->n] = str_dup(str)))
        return -1;
    s->n++;
    return 0;
}

/* Frees every string and the vector; s is then empty and reusable. */
void strvec_free(strvec *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i]);
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

/* strcmp over pointers to strings, for qsort and bsearch. */
int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void strvec_sort(strvec *s)
{
    if (s->n)
        qsort(s->v, s->n, sizeof *s->v, cmp_str);
}

/* Whether the sorted vector s holds str. */
int strvec_has(const strvec *s, const char *str)
{
    return s->n && bsearch(&str, s->v, s->n, sizeof *s->v, cmp_str) != NULL;
}

/* Appends an upsert (oid, mode) or, with mode 0, a removal of path; -1 when
 * out of memory.  The order of addition is kept: of several changes to one
 * path the last one wins (see tree_apply). */
int changes_add(changes *c, const char *path, const git_oid *oid, uint32_t mode)
{
    change *v = vec_room(c->v, c->n, &c->cap, sizeof *v, 64);
    if (!v)
        return -1;
    c->v = v;
    change *x = &c->v[c->n];
    if (!(x->path = str_dup(path)))
        return -1;
    if (oid)
        git_oid_cpy(&x->oid, oid);
    else
        memset(&x->oid, 0, sizeof x->oid);
    x->mode = mode;
    x->seq = c->n++;
    return 0;
}

void changes_free(changes *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->v[i].path);
    free(c->v);
    c->v = NULL;
    c->n = c->cap = 0;
}

/* ------------------------------------------------------------------------ */
/* the repository object                                                     */

/* The stat data that tells whether a file (the index, info/exclude) was
 * rewritten; exists is 0 when there is no file. */
void sig_of(const char *path, fsig *s)
{
    struct stat st;
    memset(s, 0, sizeof *s);
    if (stat(path, &st) == 0) {
        s->exists = 1;
        s->dev = st.st_dev;
        s->ino = st.st_ino;
        s->size = st.st_size;
        s->mtime = st.st_mtim;
        s->ctime = st.st_ctim;
    }
}

int sig_eq(const fsig *a, const fsig *b)
{
    return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino &&
        a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
        a->mtime.tv_nsec == b->mtime.tv_nsec &&
        a->ctime.tv_sec == b->ctime.tv_sec &&
        a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* The absolute path of a work-tree path; NULL when out of memory. */
char *path_abs(const brepo *r, const char *rel)
{
    size_t b = strlen(rel);
    char *p = malloc(r->wdlen + b + 1);
    if (!p)
        return NULL;
    memcpy(p, r->workdir, r->wdlen);
    memcpy(p + r->wdlen, rel, b + 1);
    return p;
}

/* <this work tree's git directory>/name; NULL when out of memory. */
char *path_gitdir(const brepo *r, const char *name)
{
    const char *gd = git_repository_path(r->repo);
    size_t a = strlen(gd), b = strlen(name);
    char *p = malloc(a + b + 1);
    if (p) {
        memcpy(p, gd, a);
        memcpy(p + a, name, b + 1);
    }
    return p;
}

/* Whether beat never snapshots nor restores path: it is one of the paths
 * the repo was opened to exclude (the runs directory) or below one, or has
 * a `.git` component (in any case: git never stores one, and libgit2's
 * work-tree walk skipped ".GIT" as it skips ".git"). */
int path_excluded(const brepo *r, const char *path)
{
    for (size_t i = 0; i < r->exclude.n; i++) {
        const char *x = r->exclude.v[i];
        size_t n = strlen(x);
        if (strncmp(path, x, n) == 0 && (path[n] == '\0' || path[n] == '/'))
            return 1;
    }
    for (const char *p = path;;) {
        if (strncasecmp(p, ".git", 4) == 0 && (p[4] == '\0' || p[4] == '/'))
            return 1;
        p = strchr(p, '/');
        if (!p)
            return 0;
        p++;
    }
}

/*
 * Whether every parent component of rel is a real directory (not a symlink,
 * not a file).  A path below a symlink is not in the work tree as git sees
 * it: reading or removing it would reach through the link.
 */
int path_parents_real(const brepo *r, const char *rel)
{
    char *p = path_abs(r, rel);
    int ok = 1;
    if (!p)
        return 0;
    for (char *s = p + r->wdlen; (s = strchr(s, '/')) != NULL; s++) {
        struct stat st;
        *s = '\0';
        if (lstat(p, &st) < 0 || !S_ISDIR(st.st_mode)) {
            ok = 0;
            break;
        }
        *s = '/';
    }
    free(p);
    return ok;
}

/* Notes a file left out of the tree; -1 when out of memory. */
int skips_add(skips *s, const char *path, int64_t size)
{
    skip *v = vec_room(s->v, s->n, &s->cap, sizeof *v, 8);
    if (!v)
        return -1;
    s->v = v;
    if (!(s->v[s->n].path = str_dup(path)))
        return -1;
    s->v[s->n++].size = size;
    return 0;
}

/* Forgets every noted file; the storage stays for reuse. */
void skips_clear(skips *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->v[i].path);
    s->n = 0;
}

/* Frees everything the repository holds; idempotent.  The struct is then
 * "closed" (repo NULL) and stays safe to close again. */
void repo_close(brepo *r)
{
    watch_free(&r->w);
    git_index_free(r->rawcache);
    r->rawcache = NULL;
    bindex_free(&r->ix);
    objects_free(r);
    memo_free(r);
    git_repository_free(r->diffrepo);
    r->diffrepo = NULL;
    if (r->repo)
        git_repository_free(r->repo);
    r->repo = NULL;
    free(r->workdir);
    r->workdir = NULL;
    strvec_free(&r->exclude);
    skips_clear(&r->skipped);
    free(r->skipped.v);
    r->skipped.v = NULL;
    r->skipped.cap = 0;
}
