/*
 * bind.c — beat._git, the C half of beat.git: the Lua bindings.
 *
 * Primitives only; lua/beat/git/ composes them into the public API and
 * holds the policy (option checking, ref naming, default parents, what to
 * exclude, signature fallback, lock messages).  Bad arguments raise;
 * failures of the world return nil, "what: why".  See git.h for the files
 * that do the work.
 */
#include <stdlib.h>
#include <string.h>

#include "git.h"

int luaopen_beat__git(lua_State *L);

/* ------------------------------------------------------------------------ */
/* shared by every Lua-facing function                                       */

/* The repository at argument 1; raises when it is closed. */
brepo *check_repo(lua_State *L)
{
    brepo *r = luaL_checkudata(L, 1, REPO_MT);
    if (!r->repo)
        luaL_error(L, "beat.git: repository is closed");
    return r;
}

/* The object id at argument arg (40 hex digits); raises otherwise. */
void check_oid(lua_State *L, int arg, git_oid *oid)
{
    const char *s = luaL_checkstring(L, arg);
    if (strlen(s) != GIT_OID_HEXSZ || git_oid_fromstr(oid, s) < 0)
        luaL_argerror(L, arg, "object id (40 hex digits) expected");
}

void push_oid(lua_State *L, const git_oid *oid)
{
    char hex[GIT_OID_HEXSZ + 1];
    git_oid_tostr(hex, sizeof hex, oid);
    lua_pushstring(L, hex);
}

/* Pushes nil, message; returns 2. */
int push_fail(lua_State *L, const errbuf *e)
{
    lua_pushnil(L);
    lua_pushstring(L, e->msg);
    return 2;
}

/* Pushes nil, "what: <libgit2's last error>"; returns 2. */
int push_gitfail(lua_State *L, const char *what)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, err_gitmsg());
    return 2;
}

/* ------------------------------------------------------------------------ */
/* repository methods                                                        */

/* repo:close() — idempotent; also __gc and __close. */
static int repo_gc(lua_State *L)
{
    brepo *r = luaL_checkudata(L, 1, REPO_MT);
    repo_close(r);
    return 0;
}

/* repo:paths() -> workdir ('/'-terminated), gitdir, commondir */
static int repo_paths(lua_State *L)
{
    brepo *r = check_repo(L);
    lua_pushstring(L, r->workdir);
    lua_pushstring(L, git_repository_path(r->repo));
    lua_pushstring(L, git_repository_commondir(r->repo));
    return 3;
}

/* Pushes the noted files as a list {{path =, size =}, ...}, sorted by path,
 * each once. */
static int skip_cmp(const void *a, const void *b)
{
    return strcmp(((const skip *)a)->path, ((const skip *)b)->path);
}

static void push_skipped(lua_State *L, skips *s)
{
    lua_Integer n = 0;
    if (s->n)
        qsort(s->v, s->n, sizeof *s->v, skip_cmp);
    lua_createtable(L, (int)s->n, 0);
    for (size_t i = 0; i < s->n; i++) {
        if (i > 0 && strcmp(s->v[i].path, s->v[i - 1].path) == 0)
            continue;
        lua_createtable(L, 0, 2);
        lua_pushstring(L, s->v[i].path);
        lua_setfield(L, -2, "path");
        lua_pushinteger(L, (lua_Integer)s->v[i].size);
        lua_setfield(L, -2, "size");
        lua_rawseti(L, -2, ++n);
    }
}

/*
 * repo:tree(full, max_size) -> tree id, {scan = "watch"|"full", hashed =
 * files read, watch = the watch's state, skipped = {{path, size}, ...}} |
 * nil, error.  max_size (default: the repo's) bounds the files stored;
 * larger ones are left out of the tree and listed as skipped.
 */
static int repo_tree(lua_State *L)
{
    brepo *r = check_repo(L);
    int full = lua_toboolean(L, 2);
    int64_t saved = r->max_size;
    git_oid oid;
    const char *how = "full";
    size_t nhashed = 0;
    errbuf e;
    int rc;
    r->max_size = (int64_t)luaL_optinteger(L, 3, saved);
    rc = scan_worktree(r, full, &oid, &how, &nhashed, &e);
    r->max_size = saved;
    if (rc < 0)
        return push_fail(L, &e);
    push_oid(L, &oid);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, how);
    lua_setfield(L, -2, "scan");
    lua_pushinteger(L, (lua_Integer)nhashed);
    lua_setfield(L, -2, "hashed");
    lua_pushstring(L, r->w.state ? r->w.state : "not watching");
    lua_setfield(L, -2, "watch");
    push_skipped(L, &r->skipped);
    lua_setfield(L, -2, "skipped");
    return 2;
}

/* The list of strings at argument arg (absent: empty), copied and sorted. */
static void check_paths(lua_State *L, int arg, strvec *out)
{
    if (lua_isnoneornil(L, arg))
        return;
    luaL_checktype(L, arg, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, arg);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, arg, i);
        const char *p = lua_tostring(L, -1);
        if (!p) {
            strvec_free(out);
            luaL_argerror(L, arg, "a list of paths expected");
        }
        if (strvec_add(out, p) < 0) {
            strvec_free(out);
            luaL_error(L, "beat.git: out of memory");
        }
        lua_pop(L, 1);
    }
    strvec_sort(out);
}

/* repo:restore_tree(from tree, to tree, keep) -> files written, files
 * removed, paths left alone | nil, error (naming the first path that
 * failed).  The paths in the list keep are neither written nor removed;
 * the paths left alone (a sorted list, each once) held something else than
 * the from tree says when the restore came to them (see restore_trees). */
static int repo_restore_tree(lua_State *L)
{
    brepo *r = check_repo(L);
    git_oid a, b;
    size_t written, removed;
    strvec keep = {0}, left = {0};
    errbuf e;
    int rc;
    check_oid(L, 2, &a);
    check_oid(L, 3, &b);
    check_paths(L, 4, &keep);
    rc = restore_trees(r, &a, &b, &keep, &written, &removed, &left, &e);
    strvec_free(&keep);
    if (rc < 0) {
        strvec_free(&left);
        return push_fail(L, &e);
    }
    lua_pushinteger(L, (lua_Integer)written);
    lua_pushinteger(L, (lua_Integer)removed);
    strvec_sort(&left);
    lua_createtable(L, (int)left.n, 0);
    lua_Integer n = 0;
    for (size_t i = 0; i < left.n; i++) {
        if (i > 0 && strcmp(left.v[i], left.v[i - 1]) == 0)
            continue;
        lua_pushstring(L, left.v[i]);
        lua_rawseti(L, -2, ++n);
    }
    strvec_free(&left);
    return 3;
}

/* repo:worktree_add(path, commit, name) -> true | nil, error */
static int repo_worktree_add(lua_State *L)
{
    brepo *r = check_repo(L);
    const char *path = luaL_checkstring(L, 2);
    const char *name = luaL_checkstring(L, 4);
    git_oid oid;
    errbuf e;
    check_oid(L, 3, &oid);
    if (worktree_add(r, path, &oid, name, &e) < 0)
        return push_fail(L, &e);
    lua_pushboolean(L, 1);
    return 1;
}

/* repo:worktree_remove(path) -> true | nil, error */
static int repo_worktree_remove(lua_State *L)
{
    brepo *r = check_repo(L);
    errbuf e;
    if (worktree_remove(r, luaL_checkstring(L, 2), &e) < 0)
        return push_fail(L, &e);
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* module functions                                                          */

/* An ignore rule matching exactly the work-tree path rel: glob characters
 * and a leading '!' or '#' are escaped.  NULL when out of memory. */
static char *exact_rule(const char *rel)
{
    size_t n = strlen(rel);
    char *rule = malloc(2 * n + 3), *o = rule;
    if (!rule)
        return NULL;
    *o++ = '/';
    for (const char *p = rel; *p; p++) {
        if (strchr("\\*?[!#", *p))
            *o++ = '\\';
        *o++ = *p;
    }
    *o++ = '\n';
    *o = '\0';
    return rule;
}

/* Copies the list of excluded paths at argument arg into r->exclude and
 * makes git's ignore rules (in memory only, never written to any file)
 * ignore them, so scans do not even list what is below them. */
static void set_exclude(lua_State *L, brepo *r, int arg)
{
    lua_Integer n;
    luaL_checktype(L, arg, LUA_TTABLE);
    n = (lua_Integer)lua_rawlen(L, arg);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, arg, i);
        const char *x = lua_tostring(L, -1);
        if (!x || !*x)
            luaL_argerror(L, arg, "a list of work-tree paths expected");
        char *rule = exact_rule(x);
        if (!rule || strvec_add(&r->exclude, x) < 0) {
            free(rule);
            luaL_error(L, "beat.git: out of memory");
        }
        git_ignore_add_rule(r->repo, rule);
        free(rule);
        lua_pop(L, 1);
    }
}

/*
 * libgit2's process-wide options for what beat does with a repository
 * (idempotent; set at each open, before any object is read or written):
 *  - no re-hash of every object read (GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION):
 *    git itself checks ids only in fsck; zlib's checksum still catches a
 *    damaged object.  A tree read back or a blob restored then costs one
 *    SHA-1 pass less;
 *  - no existence check of every id a new object names
 *    (GIT_OPT_ENABLE_STRICT_OBJECT_CREATION): every id beat puts in a
 *    commit or a ref was just written by it or looked up first
 *    (refs.c looks up a commit's tree and parents; Lua resolves a ref's
 *    commit), so the check only read each object back once more.
 */
static void tune_libgit2(void)
{
    git_libgit2_opts(GIT_OPT_ENABLE_STRICT_HASH_VERIFICATION, 0);
    git_libgit2_opts(GIT_OPT_ENABLE_STRICT_OBJECT_CREATION, 0);
}

/*
 * open(dir, watch, exclude, max_size) -> repo | nil, "not a git repository:
 * <dir>".  exclude: the work-tree paths never snapshotted nor restored;
 * max_size: files larger than this many bytes are left out of trees
 * (default: no limit).  The
 * userdata exists, closed, before the repository is opened, so an error at
 * any point leaves nothing that __gc cannot free.
 */
static int l_open(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    int use_watch = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
    brepo *r = lua_newuserdatauv(L, sizeof *r, 0);
    memset(r, 0, sizeof *r);
    r->w.fd = -1;
    luaL_setmetatable(L, REPO_MT);
    tune_libgit2();
    if (git_repository_open_ext(&r->repo, dir, 0, NULL) < 0) {
        r->repo = NULL;
        lua_pushnil(L);
        lua_pushfstring(L, "not a git repository: %s", dir);
        return 2;
    }
    const char *wd = git_repository_workdir(r->repo);
    if (!wd) {
        repo_close(r);
        lua_pushnil(L);
        lua_pushfstring(L, "bare repository: it has no work tree: %s", dir);
        return 2;
    }
    r->wdlen = strlen(wd);
    if (!(r->workdir = str_dup(wd))) {
        repo_close(r);
        return luaL_error(L, "beat.git: out of memory");
    }
    r->use_watch = use_watch;
    r->max_size = (int64_t)luaL_optinteger(L, 4, -1);
    r->filemode = 1;
    r->trustctime = 1;
    git_config *cfg = NULL;
    if (git_repository_config_snapshot(&cfg, r->repo) == 0) {
        int v;
        if (git_config_get_bool(&v, cfg, "core.filemode") == 0)
            r->filemode = v;
        if (git_config_get_bool(&v, cfg, "core.trustctime") == 0)
            r->trustctime = v;
        if (git_config_get_bool(&v, cfg, "core.fsyncobjectfiles") == 0)
            r->fsync_objects = v;
        git_config_free(cfg);
    }
    git_error_clear();
    if (!lua_isnoneornil(L, 3))
        set_exclude(L, r, 3);
    return 1;
}

/* init(dir) -> true | nil, error */
static int l_init(lua_State *L)
{
    const char *dir = luaL_checkstring(L, 1);
    git_repository *repo = NULL;
    if (git_repository_init(&repo, dir, 0) < 0)
        return push_gitfail(L, "init");
    git_repository_free(repo);
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* registration                                                              */

static const luaL_Reg repo_meth[] = {
    {"close", repo_gc},
    {"paths", repo_paths},
    {"tree", repo_tree},
    {"restore_tree", repo_restore_tree},
    {"worktree_add", repo_worktree_add},
    {"worktree_remove", repo_worktree_remove},
    /* refs.c */
    {"commit", repo_commit},
    {"set_ref", repo_set_ref},
    {"get_ref", repo_get_ref},
    {"delete_ref", repo_delete_ref},
    {"refs", repo_refs},
    {"ref_children", repo_ref_children},
    {"head", repo_head},
    {"resolve", repo_resolve},
    {"signature", repo_signature},
    {"message", repo_message},
    {"diff_trees", repo_diff_trees},
    {"descendant", repo_descendant},
    {"checked_out", repo_checked_out},
    {"reset_index", repo_reset_index},
    {NULL, NULL}
};

static const luaL_Reg repo_mt[] = {
    {"__gc", repo_gc},
    {"__close", repo_gc},
    {"__index", NULL},
    {NULL, NULL}
};

static const luaL_Reg funcs[] = {
    {"open", l_open},
    {"init", l_init},
    {NULL, NULL}
};

/* beat._git: open, init, libgit2_version; the repository class. */
int luaopen_beat__git(lua_State *L)
{
    init_libgit2();  /* git_libgit2_init without the CA bundle (init.c) */
    /* trees and commits read stay cached up to 256 kB, not libgit2's 256 MB:
     * a long run reads a few of each per iteration, and its memory must not
     * grow with them */
    git_libgit2_opts(GIT_OPT_SET_CACHE_MAX_SIZE, (ssize_t)256 * 1024);
    luaL_newmetatable(L, REPO_MT);
    luaL_setfuncs(L, repo_mt, 0);
    luaL_newlib(L, repo_meth);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    int major = 0, minor = 0, rev = 0;
    git_libgit2_version(&major, &minor, &rev);
    lua_pushfstring(L, "%d.%d.%d", major, minor, rev);
    lua_setfield(L, -2, "libgit2_version");
    return 1;
}
