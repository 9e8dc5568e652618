/*
 * git.h — private declarations of beat._git, the C half of beat.git.
 *
 * One file per job:
 *   repo.c      errors, small containers, the repository object, paths
 *   index.c     the index file, read as git reads it (no libgit2 git_index)
 *   object.c    storing objects (loose, without libgit2's per-object work)
 *   ignore.c    which untracked files are ignored, where certain without libgit2
 *   tree.c      storing files as blobs, the recursive tree builder
 *   watch.c     the inotify watch: which paths changed since the last tree
 *   filter.c    when the index's blob ids are not the files' bytes
 *   scan.c      the full scan, and the choice between it and the watch
 *   restore.c   making the work tree equal to a tree
 *   worktree.c  linked work trees (add, remove)
 *   refs.c      commits, refs, revisions, diffs (Lua-facing)
 *   bind.c      the Lua bindings: the luaL_Reg tables, open, tree, restore,
 *               worktrees
 *   init.c      libgit2's initialisation, without the system's CA bundle
 *
 * The guarantees this module keeps, whatever the caller does:
 *  - Computing a work-tree tree writes objects into the object database and
 *    nothing else: never the index file, HEAD, a branch or a work-tree file.
 *  - Restoring only touches paths that differ between two trees computed
 *    from the work tree; ignored untracked paths are never in such a tree,
 *    so they are never touched, nor are excluded paths or `.git`.  And it
 *    never overwrites nor removes an entry that no longer holds what the
 *    `from` tree recorded: a path changed since is left alone and named.
 *  - A file is stored as its bytes on disk, never through git's clean
 *    filters, and restored as those bytes, never through checkout filters.
 *  - Memory does not grow with a file's size: large blobs are streamed into
 *    and out of the object database, and a file larger than the repo's size
 *    limit is left out of the tree (noted as skipped), never read whole.
 */
#ifndef BEAT_GIT_H
#define BEAT_GIT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include <git2.h>
#include <lauxlib.h>
#include <lua.h>

#define REPO_MT "beat.git.repo"

/* Files and blobs up to STREAM_MIN bytes are read whole; larger ones are
 * streamed in CHUNK-byte pieces, so memory does not grow with them. */
#define STREAM_MIN ((off_t)8 << 20)
#define CHUNK ((size_t)1 << 20)

/* A blob larger than this counts as binary in a diff and is not loaded. */
#define DIFF_MAX ((git_off_t)32 << 20)

/* Above this many pending paths the watch gives up and a full scan runs. */
#define MAX_PENDING 100000

/* ------------------------------------------------------------------------ */
/* errors (repo.c): every failing function fills an errbuf and returns -1    */

typedef struct {
    char msg[1024];
} errbuf;

int err_set(errbuf *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int err_git(errbuf *e, const char *what);
int err_os(errbuf *e, const char *what, const char *path);
const char *err_gitmsg(void);

/* ------------------------------------------------------------------------ */
/* small containers (repo.c)                                                 */

char *str_dup(const char *s);
void *vec_room(void *v, size_t n, size_t *cap, size_t size, size_t first);
char *path_join(const char *dir, const char *name);

typedef struct {
    char **v;
    size_t n, cap;
} strvec;

int strvec_add(strvec *s, const char *str);
void strvec_free(strvec *s);
int strvec_has(const strvec *s, const char *str);  /* s sorted */
int cmp_str(const void *a, const void *b);
void strvec_sort(strvec *s);

/* One edit of a tree: an upsert (mode != 0) or a removal (mode 0). */
typedef struct {
    char *path;
    git_oid oid;
    uint32_t mode;  /* 0: remove the path (blob or whole subtree) */
    size_t seq;
} change;

typedef struct {
    change *v;
    size_t n, cap;
} changes;

int changes_add(changes *c, const char *path, const git_oid *oid, uint32_t mode);
void changes_free(changes *c);

typedef struct {
    char *path;
    int dir;  /* a directory appeared here: rescan it */
} pending;

typedef struct {
    pending *v;
    size_t n, cap;
} pendings;

/* ------------------------------------------------------------------------ */
/* the repository object                                                     */

/* The ignore rules of the directories a scan is in (ignore.c). */
typedef struct irules irules;
typedef struct {
    irules *global[2];  /* info/exclude, the user's excludes file */
    irules **v;         /* .gitignore files, root first */
    size_t n, cap;
    int unknown;        /* some source could not be had: ask libgit2 */
} ignstack;

typedef struct {
    int exists;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
} fsig;

/* One entry of the index file, as git wrote it (index.c). */
typedef struct {
    const char *path;  /* NUL-terminated, len bytes */
    size_t len;
    size_t noff;       /* version 4: where path is in the rebuilt names */
    git_oid id;
    uint32_t mode;
    uint32_t ctime_s, ctime_ns, mtime_s, mtime_ns, dev, ino, uid, gid, size;
    uint16_t flags;    /* IENTRY_VALID, IENTRY_EXTENDED, the stage */
    uint16_t fext;     /* IENTRY_SKIP_WORKTREE, IENTRY_INTENT_TO_ADD */
} ientry;

#define IENTRY_VALID 0x8000          /* assume-unchanged */
#define IENTRY_EXTENDED 0x4000
#define IENTRY_STAGE(ie) (((ie)->flags >> 12) & 3)
#define IENTRY_SKIP_WORKTREE 0x4000
#define IENTRY_INTENT_TO_ADD 0x2000

/* The index file as last read: entries sorted by path, then stage. */
typedef struct {
    ientry *v;
    size_t n;
    char *buf;         /* the file's bytes (versions 2-3: the paths) */
    char *names;       /* version 4: the paths, rebuilt */
    int version;
    int conflicts;     /* some entry has a stage other than 0 */
    int has_tree;
    git_oid tree;      /* the root of git's cached tree, when valid */
    int loaded;
    fsig sig;          /* the file's stat data when read */
} bindex;

typedef struct {
    int fd;            /* inotify fd, -1 when not running */
    int valid;         /* no event was lost since the base was taken */
    char **dirs;       /* watch descriptor -> relative dir ("" = root) */
    size_t ndirs;
    pendings pend;     /* paths seen changing since the base */
    int has_base;
    git_oid base;      /* the work tree's tree as of the last drain */
    fsig index_sig, exclude_sig;
    int has_itree;
    git_oid itree;     /* the index's tree as of the base */
    int64_t base_max;  /* the size limit the base was computed with */
    const char *state; /* why the last tree took the path it took */
    const char *off;   /* why the watch is not running, once given up */
} watch;

/* A file larger than the size limit, left out of a tree. */
typedef struct {
    char *path;
    int64_t size;
} skip;

typedef struct {
    skip *v;
    size_t n, cap;
} skips;

/* Trees written or read last, kept as their bytes (tree.c). */
#define MEMO_N 16

typedef struct {
    git_oid id;
    char *buf;  /* NULL: empty slot */
    size_t len;
} treememo_ent;

typedef struct {
    treememo_ent v[MEMO_N];
    size_t next, bytes;
} treememo;

typedef struct {
    git_repository *repo;  /* NULL once closed */
    char *workdir;         /* absolute, ends with '/' */
    size_t wdlen;
    int filemode;          /* core.fileMode */
    int use_watch;
    strvec exclude;        /* work-tree paths never stored nor restored */
    int64_t max_size;      /* larger files are not stored; < 0: no limit */
    skips skipped;         /* the files the last tree left out */
    unsigned long tmp_counter;  /* names restore's temporary files */
    git_index *rawcache;   /* <gitdir>/beat/raw-index, once opened */
    bindex ix;             /* the index file as last read */
    int trustctime;        /* core.trustctime */
    int fsync_objects;     /* core.fsyncObjectFiles */
    struct z_stream_s *zs[2];  /* deflate new loose objects: large, small */
    unsigned char *zbuf;   /* what it deflated */
    size_t zcap;
    treememo memo;         /* trees written or read last */
    git_repository *diffrepo;  /* the same repository for diffs (refs.c), once opened */
    watch w;
} brepo;

/* repo.c */
void repo_close(brepo *r);
char *path_abs(const brepo *r, const char *rel);
char *path_gitdir(const brepo *r, const char *name);
int path_excluded(const brepo *r, const char *path);
int path_parents_real(const brepo *r, const char *rel);
void sig_of(const char *path, fsig *s);
int sig_eq(const fsig *a, const fsig *b);
int skips_add(skips *s, const char *path, int64_t size);
void skips_clear(skips *s);

/* index.c */
int bindex_load(bindex *ix, const char *path, const fsig *sig, errbuf *e);
void bindex_free(bindex *ix);
size_t bindex_lower(const bindex *ix, const char *key, size_t klen);
const ientry *bindex_get(const bindex *ix, const char *path);
int bindex_has_under(const bindex *ix, const char *dir);

/* object.c */
int put_object(brepo *r, git_oid *oid, const void *data, size_t len,
    git_object_t type);
void objects_free(brepo *r);

/* ignore.c */
ignstack *ignore_open(brepo *r);
void ignore_close(ignstack *st);
size_t ignore_push(ignstack *st, brepo *r, const char *dir, int has);
void ignore_pop(ignstack *st, size_t depth);
int ignore_file(const ignstack *st, const char *path, int dir_ignored);

/* tree.c */
int tree_apply(brepo *r, const git_oid *base_id, changes *c, git_oid *out,
    errbuf *e);
int tree_of_index(brepo *r, const bindex *ix, git_oid *out, errbuf *e);
uint32_t tree_mode(uint32_t mode);
void memo_put(brepo *r, const git_oid *id, const char *buf, size_t len);
void memo_free(brepo *r);
int tree_hash_path(brepo *r, const bindex *ix, const char *rel, int reg,
    git_oid *oid, uint32_t *mode, struct stat *read_st, errbuf *e);
int tree_is_ignored(brepo *r, const char *rel);
int tree_is_tracked(const bindex *ix, const char *rel);
int tree_has_tracked_under(const bindex *ix, const char *rel);

/* watch.c */
int watch_init(brepo *r);
void watch_stop(watch *w);
void watch_free(watch *w);
int watch_drain(watch *w);
int watch_pend(watch *w, const char *path);
int watch_dir(brepo *r, const char *rel);
int watch_walk(brepo *r, const bindex *ix, const char *rel, changes *out,
    size_t *nhashed, errbuf *e);
int watch_process(brepo *r, const bindex *ix, changes *out, size_t *nhashed,
    errbuf *e);
int watch_touches_rules(const watch *w);

/* filter.c */
int filters_possible(brepo *r, const bindex *ix, int walked);
int filters_check_index(brepo *r, const bindex *ix, const strvec *seen,
    changes *c, size_t *nhashed, errbuf *e);

/* scan.c */
int scan_worktree(brepo *r, int full, git_oid *out, const char **how,
    size_t *nhashed, errbuf *e);

/* restore.c */
int restore_trees(brepo *r, const git_oid *from_id, const git_oid *to_id,
    const strvec *keep, size_t *written, size_t *removed, strvec *conflicts,
    errbuf *e);

/* worktree.c */
int worktree_add(brepo *r, const char *path, const git_oid *commit,
    const char *name, errbuf *e);
int worktree_remove(brepo *r, const char *path, errbuf *e);

/* refs.c: repository methods over commits, refs, revisions, diffs */
int repo_commit(lua_State *L);
int repo_set_ref(lua_State *L);
int repo_get_ref(lua_State *L);
int repo_delete_ref(lua_State *L);
int repo_refs(lua_State *L);
int repo_ref_children(lua_State *L);
int repo_head(lua_State *L);
int repo_resolve(lua_State *L);
int repo_signature(lua_State *L);
int repo_message(lua_State *L);
int repo_diff_trees(lua_State *L);
int repo_descendant(lua_State *L);
int repo_checked_out(lua_State *L);
int repo_reset_index(lua_State *L);

/* init.c */
int init_libgit2(void);

/* bind.c: what every Lua-facing function shares */
brepo *check_repo(lua_State *L);
void check_oid(lua_State *L, int arg, git_oid *oid);
void push_oid(lua_State *L, const git_oid *oid);
int push_fail(lua_State *L, const errbuf *e);
int push_gitfail(lua_State *L, const char *what);

#endif
