/*
 * refs.c — repository methods over commits, refs, revisions and diffs:
 * thin Lua-facing wrappers of libgit2 (registered by bind.c).  Failures of
 * the world return nil, "what: why"; bad arguments raise.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <git2/sys/repository.h>

#include "fs.h"
#include "git.h"

/* Writes "<what> <name> <<email>> <seconds> <+hhmm>\n" at p, as git writes
 * a signature line; returns its length. */
static size_t sig_line(char *p, size_t room, const char *what, const git_signature *sig)
{
    int off = sig->when.offset, a = off < 0 ? -off : off;
    int n = snprintf(p, room, "%s %s <%s> %lld %c%02d%02d\n", what, sig->name, sig->email,
        (long long)sig->when.time, off < 0 ? '-' : '+', a / 60, a % 60);
    return n < 0 ? 0 : (size_t)n;
}

/*
 * repo:commit(tree, parents, message, name, email) -> commit id
 * The commit object is formatted here (as git does: tree, parents, author,
 * committer, a blank line, the message) and stored by beat's own object
 * writer (object.c), so the tree just written and the parents are not read
 * back and parsed; that they exist is checked in the object database.
 */
int repo_commit(lua_State *L)
{
    brepo *r = check_repo(L);
    git_oid tid, cid, pids[16];
    size_t np, i, msglen, room, len;
    const char *msg, *name, *email, *missing = NULL;
    git_signature *sig = NULL;
    git_odb *odb = NULL;
    char *buf = NULL, hex[GIT_OID_HEXSZ + 1];
    int rc = 0;

    check_oid(L, 2, &tid);
    luaL_checktype(L, 3, LUA_TTABLE);
    msg = luaL_checklstring(L, 4, &msglen);
    name = luaL_checkstring(L, 5);
    email = luaL_checkstring(L, 6);
    np = lua_rawlen(L, 3);
    luaL_argcheck(L, np <= 16, 3, "at most 16 parents");
    for (i = 0; i < np; i++) {
        lua_rawgeti(L, 3, (lua_Integer)i + 1);
        const char *s = lua_tostring(L, -1);
        if (!s || strlen(s) != GIT_OID_HEXSZ || git_oid_fromstr(&pids[i], s) < 0)
            return luaL_argerror(L, 3, "parents must be object ids");
        lua_pop(L, 1);
    }
    /* room for the whole commit, from Lua (nothing to free if a later
     * allocation raises) */
    room = 64 * (np + 1) + 2 * (strlen(name) + strlen(email) + 64) + msglen + 2;
    buf = lua_newuserdatauv(L, room, 0);
    /* the name and email as libgit2 takes them: trimmed, no <, > or newline */
    if (git_signature_now(&sig, name, email) < 0)
        return push_gitfail(L, "snapshot: signature");
    if (git_repository_odb(&odb, r->repo) < 0) {
        rc = push_gitfail(L, "snapshot: commit");
        goto done;
    }
    if (!git_odb_exists(odb, &tid))
        missing = "tree";
    for (i = 0; i < np && missing == NULL; i++)
        if (!git_odb_exists(odb, &pids[i]))
            missing = "parent";
    if (missing != NULL) {
        lua_pushnil(L);
        lua_pushfstring(L, "snapshot: %s: no such object", missing);
        rc = 2;
        goto done;
    }
    len = (size_t)snprintf(buf, room, "tree %s\n", git_oid_tostr(hex, sizeof hex, &tid));
    for (i = 0; i < np; i++)
        len += (size_t)snprintf(buf + len, room - len, "parent %s\n",
            git_oid_tostr(hex, sizeof hex, &pids[i]));
    len += sig_line(buf + len, room - len, "author", sig);
    len += sig_line(buf + len, room - len, "committer", sig);
    buf[len++] = '\n';
    memcpy(buf + len, msg, msglen);
    len += msglen;
    if (put_object(r, &cid, buf, len, GIT_OBJECT_COMMIT) < 0) {
        rc = push_gitfail(L, "snapshot: commit");
        goto done;
    }
    push_oid(L, &cid);
    rc = 1;
done:
    git_odb_free(odb);
    git_signature_free(sig);
    return rc;
}

/*
 * Points the loose ref `name` (under the common dir) at oid the way git
 * itself does, without libgit2's ref machinery: <ref>.lock created
 * exclusively, the id written to it, then renamed over the ref. A loose ref
 * overrides a packed one of the same name, so a ref `git pack-refs` packed
 * is updated too. No reflog is written (git writes none for refs/beat/
 * unless core.logAllRefUpdates=always). -1 with the reason in e.
 */
static int write_loose_ref(brepo *r, const char *name, const git_oid *oid, errbuf *e)
{
    char path[PATH_MAX], lock[PATH_MAX + 8], line[GIT_OID_HEXSZ + 2];
    int fd, n;

    n = snprintf(path, sizeof path, "%s%s", git_repository_commondir(r->repo), name);
    if (n < 0 || (size_t)n >= sizeof path)
        return err_set(e, "ref: %s: name too long", name);
    snprintf(lock, sizeof lock, "%s.lock", path);
    fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    for (char *slash = path + strlen(git_repository_commondir(r->repo)); fd < 0 && errno == ENOENT
         && (slash = strchr(slash + 1, '/')) != NULL;) {
        /* refs/beat/<run>/ is made on first use */
        *slash = '\0';
        if (mkdir(path, 0777) < 0 && errno != EEXIST) {
            err_os(e, "ref", path);
            *slash = '/';
            return -1;
        }
        *slash = '/';
        fd = open(lock, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    }
    if (fd < 0) {
        if (errno == EEXIST)
            return err_set(e, "ref: %s is locked (%s exists: another git is updating it, or one died"
                " doing so and left it behind)", name, lock);
        return err_os(e, "ref", lock);
    }
    git_oid_tostr(line, GIT_OID_HEXSZ + 1, oid);
    line[GIT_OID_HEXSZ] = '\n';
    if (fs_write_all(fd, line, GIT_OID_HEXSZ + 1) < 0) {
        err_os(e, "ref", lock);
        close(fd);
        unlink(lock);
        return -1;
    }
    close(fd);
    if (rename(lock, path) < 0) {
        err_os(e, "ref", path);
        unlink(lock);
        return -1;
    }
    return 0;
}

/*
 * repo:set_ref(name, id, log message, create) -> true | nil, error
 * Points the ref at id, overwriting it; with create, only when no such ref
 * exists: atomically (git's lock file), so of several processes creating
 * one name exactly one gets true, and the others false. An update of a ref
 * under refs/beat/ (a run's best, iter-N, last: several per iteration) is a
 * plain loose-ref write (write_loose_ref); any other goes through libgit2.
 */
int repo_set_ref(lua_State *L)
{
    brepo *r = check_repo(L);
    const char *name = luaL_checkstring(L, 2);
    git_oid oid;
    git_reference *ref = NULL;
    check_oid(L, 3, &oid);
    const char *logmsg = luaL_optstring(L, 4, "beat");
    int create = lua_toboolean(L, 5);
    git_oid none;
    int rc;
    if (!create && strncmp(name, "refs/beat/", 10) == 0 && git_reference_is_valid_name(name)) {
        errbuf e;
        if (write_loose_ref(r, name, &oid, &e) < 0)
            return push_fail(L, &e);
        lua_pushboolean(L, 1);
        return 1;
    }
    /* "must not exist" is checked under the ref's lock only when asked for
     * through an all-zero expected value: git_reference_create with force 0
     * looks before it locks, so two processes could both create the ref */
    memset(&none, 0, sizeof none);
    if (create)
        rc = git_reference_create_matching(&ref, r->repo, name, &oid, 1, &none, logmsg);
    else
        rc = git_reference_create(&ref, r->repo, name, &oid, 1, logmsg);
    if (rc < 0) {
        if (create && (rc == GIT_EMODIFIED || rc == GIT_EEXISTS || rc == GIT_ELOCKED)) {
            git_error_clear();
            lua_pushboolean(L, 0);
            return 1;
        }
        return push_gitfail(L, "ref");
    }
    git_reference_free(ref);
    lua_pushboolean(L, 1);
    return 1;
}

/* repo:message(commit id) -> the commit's message | nil, error */
int repo_message(lua_State *L)
{
    brepo *r = check_repo(L);
    git_oid oid;
    git_commit *c = NULL;
    check_oid(L, 2, &oid);
    if (git_commit_lookup(&c, r->repo, &oid) < 0)
        return push_gitfail(L, "commit");
    lua_pushstring(L, git_commit_message(c));
    git_commit_free(c);
    return 1;
}

/* repo:get_ref(name) -> id or nil */
int repo_get_ref(lua_State *L)
{
    brepo *r = check_repo(L);
    git_oid oid;
    if (git_reference_name_to_id(&oid, r->repo, luaL_checkstring(L, 2)) < 0)
        return 0;
    push_oid(L, &oid);
    return 1;
}

/* repo:delete_ref(name) -> true */
int repo_delete_ref(lua_State *L)
{
    brepo *r = check_repo(L);
    if (git_reference_remove(r->repo, luaL_checkstring(L, 2)) < 0)
        return push_gitfail(L, "delete ref");
    lua_pushboolean(L, 1);
    return 1;
}

/* repo:refs(prefix) -> { {name=, id=}, ... } in no particular order (the
 * Lua side sorts). The iterator is given the glob "<prefix>*", so libgit2
 * reads the loose refs under the prefix's directory only: an iterator over
 * every ref opens and reads each ref file of the repository, ~60,000 for a
 * repository that had ~1,300 runs. */
int repo_refs(lua_State *L)
{
    brepo *r = check_repo(L);
    size_t plen;
    const char *prefix = luaL_checklstring(L, 2, &plen);
    git_reference_iterator *it = NULL;
    const char *name;
    lua_Integer n = 0;
    int rc;

    /* No ref name holds a wildcard (git check-ref-format), so a prefix with
     * one matches nothing either way; strncmp below keeps it literal. */
    lua_pushfstring(L, "%s*", prefix);
    if (git_reference_iterator_glob_new(&it, r->repo, lua_tostring(L, -1)) < 0)
        return push_gitfail(L, "refs");
    lua_newtable(L);
    while ((rc = git_reference_next_name(&name, it)) == 0) {
        git_oid oid;
        if (strncmp(name, prefix, plen) != 0)
            continue;
        if (git_reference_name_to_id(&oid, r->repo, name) < 0)
            continue;
        lua_createtable(L, 0, 2);
        lua_pushstring(L, name);
        lua_setfield(L, -2, "name");
        push_oid(L, &oid);
        lua_setfield(L, -2, "id");
        lua_rawseti(L, -2, ++n);
    }
    git_reference_iterator_free(it);
    if (rc != GIT_ITEROVER)
        return push_gitfail(L, "refs");
    return 1;
}

/* Adds the component of ref name `name` (length len) that follows `prefix`
 * (plen bytes) to the set at the top of the stack, when name starts with it. */
static void add_child(lua_State *L, const char *prefix, size_t plen, const char *name, size_t len)
{
    const char *end;
    if (len <= plen || memcmp(name, prefix, plen) != 0)
        return;
    end = memchr(name + plen, '/', len - plen);
    lua_pushlstring(L, name + plen, (size_t)((end ? end : name + len) - (name + plen)));
    lua_pushboolean(L, 1);
    lua_rawset(L, -3);
}

/* repo:ref_children(prefix) -> { name, ... }: the distinct components that
 * follow `prefix` (ending in '/') in the names of the repository's refs,
 * unsorted: "refs/beat/" gives the run ids that have refs. Read from git's
 * files, as git itself keeps them: the entries of the loose refs' directory
 * <common dir>/<prefix> and the lines of <common dir>/packed-refs. One
 * directory and one file, where an iterator over the refs reads every ref
 * file (~18,000 for a repository that had ~1,300 runs). A loose entry may be
 * a directory emptied by deleted refs: repo:refs(prefix .. name .. "/")
 * says whether it still holds any. */
int repo_ref_children(lua_State *L)
{
    brepo *r = check_repo(L);
    size_t plen;
    const char *prefix = luaL_checklstring(L, 2, &plen);
    const char *common = git_repository_commondir(r->repo);
    char *path = NULL;
    lua_Integer n = 0;
    DIR *dir;
    FILE *packed;

    if (plen == 0 || prefix[plen - 1] != '/' || memchr(prefix, '\0', plen) != NULL)
        return luaL_error(L, "ref_children: the prefix must end in '/'");
    lua_newtable(L); /* the set */
    if (asprintf(&path, "%s%s", common, prefix) < 0)
        return luaL_error(L, "out of memory");
    dir = opendir(path);
    free(path);
    if (dir != NULL) {
        struct dirent *e;
        while ((e = readdir(dir)) != NULL) {
            size_t len = strlen(e->d_name);
            if (e->d_name[0] == '.' || (len > 5 && strcmp(e->d_name + len - 5, ".lock") == 0))
                continue;
            lua_pushlstring(L, e->d_name, len);
            lua_pushboolean(L, 1);
            lua_rawset(L, -3);
        }
        closedir(dir);
    }
    if (asprintf(&path, "%spacked-refs", common) < 0)
        return luaL_error(L, "out of memory");
    packed = fopen(path, "re");
    free(path);
    if (packed != NULL) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        /* "<object id> <ref name>" lines; '#' starts the header, '^' a peeled id */
        while ((len = getline(&line, &cap, packed)) > 0) {
            char *name = memchr(line, ' ', (size_t)len);
            if (line[0] == '#' || line[0] == '^' || name == NULL)
                continue;
            name++;
            len -= name - line;
            while (len > 0 && (name[len - 1] == '\n' || name[len - 1] == '\r'))
                len--;
            add_child(L, prefix, plen, name, (size_t)len);
        }
        free(line);
        fclose(packed);
    }
    lua_newtable(L); /* the set as a list */
    lua_pushnil(L);
    while (lua_next(L, -3) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, ++n);
    }
    return 1;
}

/* repo:head() -> commit id or nil (no commits yet), branch ref name or nil
 * (detached) */
int repo_head(lua_State *L)
{
    brepo *r = check_repo(L);
    git_reference *head = NULL;
    git_oid oid;
    if (git_reference_lookup(&head, r->repo, "HEAD") < 0)
        return push_gitfail(L, "head");
    if (git_reference_type(head) == GIT_REFERENCE_SYMBOLIC) {
        const char *target = git_reference_symbolic_target(head);
        if (git_reference_name_to_id(&oid, r->repo, target) == 0)
            push_oid(L, &oid);
        else
            lua_pushnil(L);
        lua_pushstring(L, target);
    } else {
        push_oid(L, git_reference_target(head));
        lua_pushnil(L);
    }
    git_reference_free(head);
    return 2;
}

/* repo:resolve(rev) -> commit id, tree id; for a tree: false, tree id;
 * nil, error when rev names neither */
int repo_resolve(lua_State *L)
{
    brepo *r = check_repo(L);
    const char *rev = luaL_checkstring(L, 2);
    git_object *obj = NULL, *peeled = NULL;
    if (git_revparse_single(&obj, r->repo, rev) < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "unknown revision: %s", rev);
        return 2;
    }
    if (git_object_type(obj) == GIT_OBJECT_TREE) {
        lua_pushboolean(L, 0);
        push_oid(L, git_object_id(obj));
        git_object_free(obj);
        return 2;
    }
    if (git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT) < 0) {
        git_object_free(obj);
        lua_pushnil(L);
        lua_pushfstring(L, "not a commit: %s", rev);
        return 2;
    }
    push_oid(L, git_object_id(peeled));
    push_oid(L, git_commit_tree_id((git_commit *)peeled));
    git_object_free(peeled);
    git_object_free(obj);
    return 2;
}

/* repo:signature() -> name, email from the git config, or nil */
int repo_signature(lua_State *L)
{
    brepo *r = check_repo(L);
    git_signature *sig = NULL;
    if (git_signature_default(&sig, r->repo) < 0)
        return 0;
    lua_pushstring(L, sig->name);
    lua_pushstring(L, sig->email);
    git_signature_free(sig);
    return 2;
}

static const char *status_word(git_delta_t s)
{
    switch (s) {
    case GIT_DELTA_ADDED: return "added";
    case GIT_DELTA_DELETED: return "deleted";
    case GIT_DELTA_MODIFIED: return "modified";
    case GIT_DELTA_RENAMED: return "renamed";
    case GIT_DELTA_COPIED: return "copied";
    case GIT_DELTA_TYPECHANGE: return "typechange";
    default: return "unmodified";
    }
}

/* The paths where trees a and b differ, into *out (a growing list of
 * malloc'd strings): a file or link whose entry differs, or a directory on
 * one side only (its whole content differs). Subtrees with the same id are
 * skipped without being read, so the walk follows what changed, not the
 * size of the tree. Either tree may be NULL (empty). -1 on a libgit2 error. */
typedef struct {
    char **v;
    size_t n, cap;
} pathlist;

static int pathlist_add(pathlist *l, const char *prefix, const char *name)
{
    size_t lp = strlen(prefix), ln = strlen(name);
    char *s;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (v == NULL)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    s = malloc(lp + ln + 1);
    if (s == NULL)
        return -1;
    memcpy(s, prefix, lp);
    memcpy(s + lp, name, ln + 1);
    l->v[l->n++] = s;
    return 0;
}

static void pathlist_free(pathlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* git's tree order: names compared as if directories ended with '/' */
static int entry_cmp(const git_tree_entry *a, const git_tree_entry *b)
{
    const char *na = git_tree_entry_name(a), *nb = git_tree_entry_name(b);
    size_t la = strlen(na), lb = strlen(nb), n = la < lb ? la : lb;
    int c = memcmp(na, nb, n);
    unsigned char ca, cb;
    if (c != 0)
        return c;
    ca = la > n ? (unsigned char)na[n] : git_tree_entry_type(a) == GIT_OBJECT_TREE ? '/' : 0;
    cb = lb > n ? (unsigned char)nb[n] : git_tree_entry_type(b) == GIT_OBJECT_TREE ? '/' : 0;
    return (int)ca - (int)cb;
}

static int changed_paths(git_repository *repo, const git_tree *a, const git_tree *b,
                         const char *prefix, pathlist *out)
{
    size_t na = a ? git_tree_entrycount(a) : 0, nb = b ? git_tree_entrycount(b) : 0;
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        const git_tree_entry *ea = i < na ? git_tree_entry_byindex(a, i) : NULL;
        const git_tree_entry *eb = j < nb ? git_tree_entry_byindex(b, j) : NULL;
        int c = !ea ? 1 : !eb ? -1 : entry_cmp(ea, eb);
        if (c < 0) {
            if (pathlist_add(out, prefix, git_tree_entry_name(ea)) < 0)
                return -1;
            i++;
        } else if (c > 0) {
            if (pathlist_add(out, prefix, git_tree_entry_name(eb)) < 0)
                return -1;
            j++;
        } else {
            int same = git_oid_equal(git_tree_entry_id(ea), git_tree_entry_id(eb))
                && git_tree_entry_filemode(ea) == git_tree_entry_filemode(eb);
            if (!same && git_tree_entry_type(ea) == GIT_OBJECT_TREE
                    && git_tree_entry_type(eb) == GIT_OBJECT_TREE) {
                git_tree *sa = NULL, *sb = NULL;
                size_t lp = strlen(prefix), ln = strlen(git_tree_entry_name(ea));
                char *sub = malloc(lp + ln + 2);
                int rc = sub ? 0 : -1;
                if (sub) {
                    memcpy(sub, prefix, lp);
                    memcpy(sub + lp, git_tree_entry_name(ea), ln);
                    sub[lp + ln] = '/';
                    sub[lp + ln + 1] = '\0';
                    rc = git_tree_lookup(&sa, repo, git_tree_entry_id(ea));
                    if (rc == 0)
                        rc = git_tree_lookup(&sb, repo, git_tree_entry_id(eb));
                    if (rc == 0)
                        rc = changed_paths(repo, sa, sb, sub, out);
                }
                git_tree_free(sa);
                git_tree_free(sb);
                free(sub);
                if (rc < 0)
                    return -1;
            } else if (!same && pathlist_add(out, prefix, git_tree_entry_name(ea)) < 0) {
                return -1;
            }
            i++;
            j++;
        }
    }
    return 0;
}

/* repo:diff_trees(a, b, patch) -> {files_changed, insertions, deletions,
 * files = {{path, status, insertions, deletions, binary}}, patch} */
/*
 * The repository a diff runs in: the same one opened a second time, whose
 * index (libgit2's, in memory) holds only the index's .gitattributes
 * entries. The line counts make libgit2 look up each changed file's diff
 * attributes (is it text?), and for that it reads the .gitattributes of
 * the work tree, else of the index: the whole index file, parsed once per
 * repository object, ~17 ms at 20,000 files, where only those entries are
 * ever consulted. They are copied from beat's own reading of the index
 * (index.c), read again when the file changed. NULL (and the diff runs in
 * r->repo) when that cannot be set up.
 */
static git_repository *diff_repo(brepo *r)
{
    char *ipath = path_gitdir(r, "index");
    git_index *mem = NULL;
    errbuf e;
    fsig sig;
    if (!ipath)
        return NULL;
    sig_of(ipath, &sig);
    if (bindex_load(&r->ix, ipath, &sig, &e) < 0) {
        free(ipath);
        return NULL;
    }
    free(ipath);
    if (!r->diffrepo &&
        git_repository_open_ext(&r->diffrepo, r->workdir, GIT_REPOSITORY_OPEN_NO_SEARCH, NULL) < 0) {
        r->diffrepo = NULL;
        git_error_clear();
        return NULL;
    }
    if (git_index_new(&mem) < 0) {
        git_error_clear();
        return NULL;
    }
    for (size_t i = 0; i < r->ix.n; i++) {
        const ientry *ie = &r->ix.v[i];
        const char *slash = memrchr(ie->path, '/', ie->len);
        const char *base = slash ? slash + 1 : ie->path;
        git_index_entry ce;
        if (IENTRY_STAGE(ie) != 0 || strcmp(base, ".gitattributes") != 0)
            continue;
        memset(&ce, 0, sizeof ce);
        ce.path = ie->path;
        ce.mode = ie->mode;
        git_oid_cpy(&ce.id, &ie->id);
        if (git_index_add(mem, &ce) < 0) {
            git_error_clear();
            git_index_free(mem);
            return NULL;
        }
    }
    git_repository_set_index(r->diffrepo, mem);
    git_index_free(mem);  /* the repository holds it */
    return r->diffrepo;
}

int repo_diff_trees(lua_State *L)
{
    brepo *r = check_repo(L);
    git_oid a, b;
    git_tree *ta = NULL, *tb = NULL;
    git_diff *diff = NULL;
    git_diff_stats *stats = NULL;
    git_diff_options o;
    git_repository *dr;
    pathlist paths = {0};
    int want_patch, rc;

    check_oid(L, 2, &a);
    check_oid(L, 3, &b);
    want_patch = lua_toboolean(L, 4);
    git_diff_options_init(&o, GIT_DIFF_OPTIONS_VERSION);
    o.flags = GIT_DIFF_INCLUDE_TYPECHANGE;
    /* a larger blob counts as binary and is never loaded: memory does not
     * grow with a file's size (libgit2's default is 512 MB) */
    o.max_size = DIFF_MAX;
    if (git_tree_lookup(&ta, r->repo, &a) < 0 || git_tree_lookup(&tb, r->repo, &b) < 0) {
        rc = push_gitfail(L, "diff");
        goto done;
    }
    /* libgit2 reads every subtree of both sides, even equal ones: the
     * paths that differ are found first, and the diff limited to them */
    if (changed_paths(r->repo, ta, tb, "", &paths) < 0) {
        rc = push_gitfail(L, "diff");
        goto done;
    }
    o.flags |= GIT_DIFF_DISABLE_PATHSPEC_MATCH;
    o.pathspec.strings = paths.v;
    o.pathspec.count = paths.n;
    if (paths.n == 0) {   /* nothing differs (an empty pathspec would mean all) */
        lua_createtable(L, 0, 5);
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "files_changed");
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "insertions");
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "deletions");
        lua_newtable(L);
        lua_setfield(L, -2, "files");
        if (want_patch) {
            lua_pushliteral(L, "");
            lua_setfield(L, -2, "patch");
        }
        rc = 1;
        goto done;
    }
    dr = diff_repo(r);
    if (dr) {   /* the trees again, as objects of that repository */
        git_tree_free(ta);
        git_tree_free(tb);
        ta = tb = NULL;
        if (git_tree_lookup(&ta, dr, &a) < 0 || git_tree_lookup(&tb, dr, &b) < 0) {
            rc = push_gitfail(L, "diff");
            goto done;
        }
    }
    if (git_diff_tree_to_tree(&diff, dr ? dr : r->repo, ta, tb, &o) < 0 ||
        git_diff_get_stats(&stats, diff) < 0) {
        rc = push_gitfail(L, "diff");
        goto done;
    }
    lua_createtable(L, 0, 5);
    lua_pushinteger(L, (lua_Integer)git_diff_stats_files_changed(stats));
    lua_setfield(L, -2, "files_changed");
    lua_pushinteger(L, (lua_Integer)git_diff_stats_insertions(stats));
    lua_setfield(L, -2, "insertions");
    lua_pushinteger(L, (lua_Integer)git_diff_stats_deletions(stats));
    lua_setfield(L, -2, "deletions");
    size_t nd = git_diff_num_deltas(diff);
    lua_createtable(L, (int)nd, 0);
    for (size_t i = 0; i < nd; i++) {
        const git_diff_delta *d = git_diff_get_delta(diff, i);
        git_patch *p = NULL;
        size_t adds = 0, dels = 0;
        if (git_patch_from_diff(&p, diff, i) == 0 && p)
            git_patch_line_stats(NULL, &adds, &dels, p);
        git_patch_free(p);
        lua_createtable(L, 0, 5);
        lua_pushstring(L, d->status == GIT_DELTA_DELETED ? d->old_file.path
            : d->new_file.path);
        lua_setfield(L, -2, "path");
        lua_pushstring(L, status_word(d->status));
        lua_setfield(L, -2, "status");
        lua_pushinteger(L, (lua_Integer)adds);
        lua_setfield(L, -2, "insertions");
        lua_pushinteger(L, (lua_Integer)dels);
        lua_setfield(L, -2, "deletions");
        lua_pushboolean(L, (d->flags & GIT_DIFF_FLAG_BINARY) != 0);
        lua_setfield(L, -2, "binary");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "files");
    if (want_patch) {
        git_buf buf = {0};
        if (git_diff_to_buf(&buf, diff, GIT_DIFF_FORMAT_PATCH) < 0) {
            lua_pop(L, 1);
            rc = push_gitfail(L, "diff");
            goto done;
        }
        lua_pushlstring(L, buf.ptr ? buf.ptr : "", buf.size);
        git_buf_dispose(&buf);
        lua_setfield(L, -2, "patch");
    }
    rc = 1;
done:
    git_diff_stats_free(stats);
    git_diff_free(diff);
    git_tree_free(ta);
    git_tree_free(tb);
    pathlist_free(&paths);
    return rc;
}

/* repo:descendant(a, b) -> whether commit a has b in its history (or a == b) */
int repo_descendant(lua_State *L)
{
    brepo *r = check_repo(L);
    git_oid a, b;
    int rc;
    check_oid(L, 2, &a);
    check_oid(L, 3, &b);
    if (git_oid_equal(&a, &b)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    rc = git_graph_descendant_of(r->repo, &a, &b);
    if (rc < 0)
        return push_gitfail(L, "history");
    lua_pushboolean(L, rc);
    return 1;
}

/* repo:checked_out(branch ref) -> whether a work tree has it checked out */
int repo_checked_out(lua_State *L)
{
    brepo *r = check_repo(L);
    git_reference *ref = NULL;
    int rc;
    if (git_reference_lookup(&ref, r->repo, luaL_checkstring(L, 2)) < 0) {
        lua_pushboolean(L, 0);
        return 1;
    }
    rc = git_branch_is_checked_out(ref);
    git_reference_free(ref);
    if (rc < 0)
        return push_gitfail(L, "branch");
    lua_pushboolean(L, rc);
    return 1;
}

/* repo:reset_index(tree) -> true: the index file now holds the tree */
int repo_reset_index(lua_State *L)
{
    brepo *r = check_repo(L);
    git_oid oid;
    git_tree *tree = NULL;
    git_index *idx = NULL;
    int rc;
    check_oid(L, 2, &oid);
    if (git_tree_lookup(&tree, r->repo, &oid) < 0 ||
        git_repository_index(&idx, r->repo) < 0 ||
        git_index_read_tree(idx, tree) < 0 || git_index_write(idx) < 0) {
        rc = push_gitfail(L, "index");
    } else {
        lua_pushboolean(L, 1);
        rc = 1;
    }
    git_index_free(idx);
    git_tree_free(tree);
    return rc;
}

