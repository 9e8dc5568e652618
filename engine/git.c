/*
 * git.c — beat._git: the C half of beat.git, over libgit2.
 *
 * Primitives only; lua/beat/git.lua composes them into the public API and
 * holds the policy (ref naming, default parents, signature fallback, lock
 * messages).
 *
 * The guarantees this file keeps, whatever the caller does:
 *  - Computing a work-tree tree (repo:tree) writes objects into the object
 *    database and nothing else: it never writes the index file, HEAD, a
 *    branch or a file of the work tree.
 *  - Restoring (repo:restore_tree) only touches paths that differ between two
 *    trees computed from the work tree; ignored untracked paths are never in
 *    such a tree, so they are never touched. `.beat/` and `.git` never are.
 *
 * A file is stored as its bytes on disk, never through git's clean filters
 * (eol conversion, ident, filter drivers), and restored as those bytes, never
 * through checkout filters: a restore gives back every byte, whatever
 * .gitattributes or core.autocrlf say.
 *
 * The work-tree tree is built from the previous one with a recursive tree
 * builder fed by the paths an inotify watch saw change (cost grows with the
 * change set), or, when the watch is not usable, from a full scan: the real
 * index's tree plus every path git_diff_index_to_workdir reports (the index
 * is the stat cache, so unchanged files are not hashed), plus every tracked
 * file a filter may have applied to when it was added (its index blob id is
 * then not its bytes).  Both paths hash a file with the same function, so
 * they give the same tree.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <git2.h>
#include <lauxlib.h>
#include <lua.h>

int luaopen_beat__git(lua_State *L);

#define REPO_MT "beat.git.repo"
#define LOCK_MT "beat.git.lock"

/* Above this many pending paths the watch gives up and a full scan runs. */
#define MAX_PENDING 100000

#define WATCH_MASK (IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB | \
	IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | \
	IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK)

/* ------------------------------------------------------------------------ */
/* errors                                                                    */

typedef struct {
	char msg[1024];
} errbuf;

static int fail(errbuf *e, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int fail(errbuf *e, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof e->msg, fmt, ap);
	va_end(ap);
	return -1;
}

static const char *gitmsg(void)
{
	const git_error *ge = git_error_last();
	return ge && ge->message ? ge->message : "unknown libgit2 error";
}

static int gitfail(errbuf *e, const char *what)
{
	return fail(e, "%s: %s", what, gitmsg());
}

static int osfail(errbuf *e, const char *what, const char *path)
{
	return fail(e, "%s: %s: %s", what, path, strerror(errno));
}

/* Push nil, message; return 2 (the `nil, "what: why"` convention). */
static int pushfail(lua_State *L, const errbuf *e)
{
	lua_pushnil(L);
	lua_pushstring(L, e->msg);
	return 2;
}

static int pushgitfail(lua_State *L, const char *what)
{
	lua_pushnil(L);
	lua_pushfstring(L, "%s: %s", what, gitmsg());
	return 2;
}

static void pushoid(lua_State *L, const git_oid *oid)
{
	char hex[GIT_OID_HEXSZ + 1];
	git_oid_tostr(hex, sizeof hex, oid);
	lua_pushstring(L, hex);
}

/* ------------------------------------------------------------------------ */
/* small containers                                                          */

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = malloc(n);
	if (p)
		memcpy(p, s, n);
	return p;
}

/* "dir/name", or "name" when dir is the root (""). */
static char *joinrel(const char *dir, const char *name)
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

static int changes_add(changes *c, const char *path, const git_oid *oid,
	uint32_t mode)
{
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		change *v = realloc(c->v, cap * sizeof *v);
		if (!v)
			return -1;
		c->v = v;
		c->cap = cap;
	}
	change *x = &c->v[c->n];
	if (!(x->path = xstrdup(path)))
		return -1;
	if (oid)
		git_oid_cpy(&x->oid, oid);
	else
		memset(&x->oid, 0, sizeof x->oid);
	x->mode = mode;
	x->seq = c->n++;
	return 0;
}

static void changes_free(changes *c)
{
	for (size_t i = 0; i < c->n; i++)
		free(c->v[i].path);
	free(c->v);
	c->v = NULL;
	c->n = c->cap = 0;
}

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

typedef struct {
	char *path;
	int dir;  /* a directory appeared here: rescan it */
} pending;

typedef struct {
	pending *v;
	size_t n, cap;
} pendings;

static int pend_add(pendings *p, char *path, int dir)
{
	if (p->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 64;
		pending *v = realloc(p->v, cap * sizeof *v);
		if (!v)
			return -1;
		p->v = v;
		p->cap = cap;
	}
	p->v[p->n].path = path;
	p->v[p->n].dir = dir;
	p->n++;
	return 0;
}

static void pend_clear(pendings *p)
{
	for (size_t i = 0; i < p->n; i++)
		free(p->v[i].path);
	p->n = 0;
}

static int pend_cmp(const void *a, const void *b)
{
	return strcmp(((const pending *)a)->path, ((const pending *)b)->path);
}

typedef struct {
	char **v;
	size_t n, cap;
} strvec;

static int strvec_add(strvec *s, const char *str)
{
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		char **v = realloc(s->v, cap * sizeof *v);
		if (!v)
			return -1;
		s->v = v;
		s->cap = cap;
	}
	if (!(s->v[s->n] = xstrdup(str)))
		return -1;
	s->n++;
	return 0;
}

static void strvec_free(strvec *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = s->cap = 0;
}

/* ------------------------------------------------------------------------ */
/* the repository object                                                     */

typedef struct {
	int exists;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
} fsig;

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
	const char *state; /* why the last tree took the path it took */
	const char *off;   /* why the watch is not running, once given up */
} watch;

typedef struct {
	git_repository *repo;  /* NULL once closed */
	char *workdir;         /* absolute, ends with '/' */
	size_t wdlen;
	int filemode;          /* core.fileMode */
	int use_watch;
	unsigned long tmp_counter;  /* names restore's temporary files */
	git_index *rawcache;   /* <gitdir>/beat/raw-index, once opened */
	watch w;
} brepo;

static void sig_of(const char *path, fsig *s)
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

static int sig_eq(const fsig *a, const fsig *b)
{
	return a->exists == b->exists && a->dev == b->dev && a->ino == b->ino &&
		a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
		a->mtime.tv_nsec == b->mtime.tv_nsec &&
		a->ctime.tv_sec == b->ctime.tv_sec &&
		a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static char *abspath(const brepo *r, const char *rel)
{
	size_t b = strlen(rel);
	char *p = malloc(r->wdlen + b + 1);
	if (!p)
		return NULL;
	memcpy(p, r->workdir, r->wdlen);
	memcpy(p + r->wdlen, rel, b + 1);
	return p;
}

/* Paths beat never snapshots nor restores: `.beat/` at the top and any
 * `.git` component. */
static int excluded(const char *path)
{
	const char *p = path;
	if (strncmp(path, ".beat", 5) == 0 && (path[5] == '\0' || path[5] == '/'))
		return 1;
	for (;;) {
		if (strncmp(p, ".git", 4) == 0 && (p[4] == '\0' || p[4] == '/'))
			return 1;
		p = strchr(p, '/');
		if (!p)
			return 0;
		p++;
	}
}

static void watch_stop(watch *w)
{
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	for (size_t i = 0; i < w->ndirs; i++)
		free(w->dirs[i]);
	free(w->dirs);
	w->dirs = NULL;
	w->ndirs = 0;
	pend_clear(&w->pend);
	w->valid = 0;
	w->has_base = 0;
	w->has_itree = 0;
}

static void repo_close(brepo *r)
{
	watch_stop(&r->w);
	free(r->w.pend.v);
	r->w.pend.v = NULL;
	r->w.pend.cap = 0;
	git_index_free(r->rawcache);
	r->rawcache = NULL;
	if (r->repo)
		git_repository_free(r->repo);
	r->repo = NULL;
	free(r->workdir);
	r->workdir = NULL;
}

static brepo *checkrepo(lua_State *L)
{
	brepo *r = luaL_checkudata(L, 1, REPO_MT);
	if (!r->repo)
		luaL_error(L, "beat.git: repository is closed");
	return r;
}

/* ------------------------------------------------------------------------ */
/* trees                                                                     */

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
		return gitfail(e, "snapshot: tree builder");
	while (i < n) {
		const char *rest = c[i].path + plen;
		const char *slash = strchr(rest, '/');
		if (!slash) {
			if (c[i].mode == 0) {
				if (git_treebuilder_get(bld, rest) &&
				    git_treebuilder_remove(bld, rest) < 0) {
					gitfail(e, "snapshot: tree remove");
					goto done;
				}
			} else if (git_treebuilder_insert(NULL, bld, rest, &c[i].oid,
					(git_filemode_t)c[i].mode) < 0) {
				fail(e, "snapshot: %s: %s", c[i].path, gitmsg());
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
			fail(e, "snapshot: out of memory");
			goto done;
		}
		const git_tree_entry *ent = git_treebuilder_get(bld, name);
		git_tree *sub = NULL;
		if (ent && git_tree_entry_type(ent) == GIT_OBJECT_TREE &&
		    git_tree_lookup(&sub, repo, git_tree_entry_id(ent)) < 0) {
			gitfail(e, "snapshot: tree lookup");
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
				gitfail(e, "snapshot: tree remove");
				goto done;
			}
		} else if (git_treebuilder_insert(NULL, bld, name, &soid,
				GIT_FILEMODE_TREE) < 0) {
			fail(e, "snapshot: %.*s: %s", (int)(plen + nlen), c[i].path,
				gitmsg());
			goto done;
		}
		i = j;
	}
	*empty = git_treebuilder_entrycount(bld) == 0;
	if ((!*empty || plen == 0) && git_treebuilder_write(out, bld) < 0) {
		gitfail(e, "snapshot: tree write");
		goto done;
	}
	rc = 0;
done:
	free(name);
	git_treebuilder_free(bld);
	return rc;
}

static int apply_changes(git_repository *repo, const git_oid *base_id,
	changes *c, git_oid *out, errbuf *e)
{
	git_tree *base = NULL;
	int empty, rc;
	if (base_id && git_tree_lookup(&base, repo, base_id) < 0)
		return gitfail(e, "snapshot: base tree");
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
 * Stores the bytes of the regular file at abs exactly as they are on disk, as
 * a blob: no clean filter, no eol conversion, no ident, whatever
 * .gitattributes or core.autocrlf say.  An object already in the database is
 * not written again.  Returns 1 with *oid and *read_st (the stat of the file
 * read) set; 0 when abs is gone; 3 when it is not a regular file (any more:
 * the caller looks again); -1 on error.
 */
static int store_file(brepo *r, const char *rel, const char *abs, git_oid *oid,
	struct stat *read_st, errbuf *e)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0, cap;
	int fd, rc = -1;

	/* O_NOFOLLOW: a symlink swapped in since the lstat is not followed;
	 * O_NONBLOCK: nor does a fifo swapped in block the open */
	fd = open(abs, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		if (errno == ELOOP)
			return 3;
		return osfail(e, "snapshot", rel);
	}
	if (fstat(fd, &st) < 0) {
		osfail(e, "snapshot", rel);
		goto done;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = 3;
		goto done;
	}
	*read_st = st;
	/* one byte more than the size, so that the end of file is seen without
	 * growing the buffer when the file does not grow meanwhile */
	cap = (size_t)st.st_size + 1;
	if (!(buf = malloc(cap))) {
		fail(e, "snapshot: %s: out of memory (%lld bytes)", rel,
			(long long)st.st_size);
		goto done;
	}
	for (;;) {
		if (len == cap) {
			char *nb = cap < SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
			if (!nb) {
				fail(e, "snapshot: %s: out of memory", rel);
				goto done;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			osfail(e, "snapshot", rel);
			goto done;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (put_blob(r, oid, buf, len) < 0) {
		fail(e, "snapshot: %s: %s", rel, gitmsg());
		goto done;
	}
	rc = 1;
done:
	free(buf);
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
			return fail(e, "snapshot: out of memory");
		n = readlink(abs, buf, cap);
		if (n < 0) {
			int err = errno;
			free(buf);
			if (err == ENOENT || err == ENOTDIR)
				return 0;
			if (err == EINVAL)
				return 3;
			errno = err;
			return osfail(e, "snapshot", rel);
		}
		if ((size_t)n < cap) {
			if (put_blob(r, oid, buf, (size_t)n) < 0)
				fail(e, "snapshot: %s: %s", rel, gitmsg());
			else
				rc = 1;
			free(buf);
			return rc;
		}
		free(buf);  /* possibly truncated: try again with more room */
		if (cap > (size_t)1 << 24)
			return fail(e, "snapshot: %s: symlink target too long", rel);
		cap *= 2;
	}
}

/*
 * Hashes one work-tree path into the object database: a file's bytes exactly
 * as they are on disk (no filters, see store_file), a symlink as a link.
 * Returns 1 with *oid and *mode set for a file or symlink (and *read_st, when
 * not NULL, to the stat of a regular file read; st_mode 0 for a link), 2 for
 * a directory, 0 when there is nothing there to store, -1 on error.  With
 * reg set (the caller just saw a regular file there) the file is opened
 * without an lstat first; whatever else it turns out to be is looked at again.
 */
static int hash_path_st(brepo *r, git_index *idx, const char *rel, int reg,
	git_oid *oid, uint32_t *mode, struct stat *read_st, errbuf *e)
{
	struct stat st;
	char *abs = abspath(r, rel);
	int rc = -1;
	if (!abs)
		return fail(e, "snapshot: out of memory");
	/* a path changing type under us is looked at again, a few times */
	for (int tries = 0; tries < 8; tries++) {
		if (!reg || tries > 0) {
			if (lstat(abs, &st) < 0) {
				if (errno == ENOENT || errno == ENOTDIR)
					rc = 0;
				else
					rc = osfail(e, "snapshot", rel);
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
		rc = store_file(r, rel, abs, oid, &st, e);
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
	rc = fail(e, "snapshot: %s: keeps changing type while being read", rel);
done:
	free(abs);
	return rc;
}

static int hash_path(brepo *r, git_index *idx, const char *rel, git_oid *oid,
	uint32_t *mode, errbuf *e)
{
	return hash_path_st(r, idx, rel, 0, oid, mode, NULL, e);
}

static int is_ignored(brepo *r, const char *rel)
{
	int ign = 0;
	if (git_ignore_path_is_ignored(&ign, r->repo, rel) < 0)
		return 0;
	return ign;
}

static int is_tracked(git_index *idx, const char *rel)
{
	size_t pos;
	return git_index_find(&pos, idx, rel) == 0;
}

static int has_tracked_under(git_index *idx, const char *rel)
{
	size_t pos;
	char *pre = joinrel(rel, "");
	int found;
	if (!pre)
		return 1;
	/* joinrel("a", "") gives "a/" */
	found = git_index_find_prefix(&pos, idx, pre) == 0;
	free(pre);
	return found;
}

/* ------------------------------------------------------------------------ */
/* the watch                                                                 */

static int watch_add(brepo *r, const char *rel)
{
	watch *w = &r->w;
	char *abs;
	int wd;
	if (w->fd < 0 || !w->valid)
		return 0;
	if (!(abs = abspath(r, rel)))
		return -1;
	wd = inotify_add_watch(w->fd, abs, WATCH_MASK);
	free(abs);
	if (wd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		w->valid = 0;  /* ENOSPC (max_user_watches) and the like */
		w->state = "watch limit reached";
		return 0;
	}
	if ((size_t)wd >= w->ndirs) {
		size_t n = w->ndirs ? w->ndirs : 256;
		while (n <= (size_t)wd)
			n *= 2;
		char **v = realloc(w->dirs, n * sizeof *v);
		if (!v)
			return -1;
		memset(v + w->ndirs, 0, (n - w->ndirs) * sizeof *v);
		w->dirs = v;
		w->ndirs = n;
	}
	free(w->dirs[wd]);
	if (!(w->dirs[wd] = xstrdup(rel)))
		return -1;
	return 0;
}

/* Stops watching rel and everything under it (it moved or went away). */
static void watch_forget(watch *w, const char *rel)
{
	size_t n = strlen(rel);
	for (size_t i = 0; i < w->ndirs; i++) {
		const char *d = w->dirs[i];
		if (!d)
			continue;
		if (n == 0 || (strncmp(d, rel, n) == 0 && (d[n] == '\0' || d[n] == '/'))) {
			inotify_rm_watch(w->fd, (int)i);
			free(w->dirs[i]);
			w->dirs[i] = NULL;
		}
	}
}

/* Reads every queued event into w->pend, keeping the watch set current. */
static int watch_drain(watch *w)
{
	char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(w->fd, buf, sizeof buf);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				w->valid = 0;
			break;
		}
		if (n == 0)
			break;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)(void *)p;
			p += sizeof *ev + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				w->valid = 0;
				w->state = "event queue overflowed";
				continue;
			}
			if (ev->wd < 0 || (size_t)ev->wd >= w->ndirs || !w->dirs[ev->wd])
				continue;
			const char *dir = w->dirs[ev->wd];
			if (ev->mask & IN_IGNORED) {
				free(w->dirs[ev->wd]);
				w->dirs[ev->wd] = NULL;
				continue;
			}
			if (ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) {
				if (dir[0] == '\0') {
					w->valid = 0;  /* the work tree itself went away */
					w->state = "work tree moved";
				} else if (ev->mask & IN_MOVE_SELF) {
					char *d = xstrdup(dir);
					if (!d)
						return -1;
					watch_forget(w, d);
					if (pend_add(&w->pend, d, 0) < 0) {
						free(d);
						return -1;
					}
				}
				continue;
			}
			if (ev->len == 0 || ev->name[0] == '\0')
				continue;
			char *path = joinrel(dir, ev->name);
			if (!path)
				return -1;
			int isdir = 0;
			if (ev->mask & IN_ISDIR) {
				if (ev->mask & (IN_CREATE | IN_MOVED_TO)) {
					isdir = 1;
				} else if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
					watch_forget(w, path);
				} else {
					free(path);  /* attribute change of a directory */
					continue;
				}
			}
			if (pend_add(&w->pend, path, isdir) < 0) {
				free(path);
				return -1;
			}
		}
	}
	if (w->pend.n > MAX_PENDING) {
		w->valid = 0;
		w->state = "too many changes";
	}
	return 0;
}

/*
 * Walks the directory rel (already known to be a directory): watches it and
 * every directory under it that git would look into, and with out != NULL
 * emits an upsert for every file a snapshot holds (tracked, or untracked and
 * not ignored).  Nested repositories are not entered: a tracked submodule
 * keeps the index's gitlink, an untracked nested repository is left out, as
 * in the full scan.
 */
static int walk_dir(brepo *r, git_index *idx, const char *rel, changes *out,
	size_t *nhashed, errbuf *e)
{
	char *abs;
	DIR *d;
	struct dirent *de;
	int rc = 0;

	if (rel[0]) {
		char *gitp = joinrel(rel, ".git");
		char *agit = gitp ? abspath(r, gitp) : NULL;
		struct stat st;
		int nested = agit && lstat(agit, &st) == 0;
		free(gitp);
		free(agit);
		if (nested) {
			const git_index_entry *ie = git_index_get_bypath(idx, rel, 0);
			if (out && ie && ie->mode == GIT_FILEMODE_COMMIT &&
			    changes_add(out, rel, &ie->id, GIT_FILEMODE_COMMIT) < 0)
				return fail(e, "snapshot: out of memory");
			return 0;
		}
		if (is_ignored(r, rel) && !has_tracked_under(idx, rel))
			return 0;
	}
	if (watch_add(r, rel) < 0)
		return fail(e, "snapshot: out of memory");
	if (!(abs = abspath(r, rel)))
		return fail(e, "snapshot: out of memory");
	d = opendir(abs);
	free(abs);
	if (!d) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 0;
		return osfail(e, "snapshot", rel[0] ? rel : ".");
	}
	while ((de = readdir(d)) != NULL) {
		const char *nm = de->d_name;
		if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
			continue;
		char *child = joinrel(rel, nm);
		if (!child) {
			rc = fail(e, "snapshot: out of memory");
			break;
		}
		if (excluded(child)) {
			free(child);
			continue;
		}
		unsigned char type = de->d_type;
		if (type == DT_UNKNOWN) {
			struct stat st;
			char *ac = abspath(r, child);
			type = DT_REG;
			if (ac && lstat(ac, &st) == 0) {
				if (S_ISDIR(st.st_mode))
					type = DT_DIR;
				else if (S_ISLNK(st.st_mode))
					type = DT_LNK;
				else if (!S_ISREG(st.st_mode))
					type = DT_FIFO;
			}
			free(ac);
		}
		if (type == DT_DIR) {
			rc = walk_dir(r, idx, child, out, nhashed, e);
		} else if (out && (type == DT_REG || type == DT_LNK) &&
			   (is_tracked(idx, child) || !is_ignored(r, child))) {
			git_oid oid;
			uint32_t mode;
			int h = hash_path(r, idx, child, &oid, &mode, e);
			if (h < 0)
				rc = -1;
			else if (h == 1) {
				(*nhashed)++;
				if (changes_add(out, child, &oid, mode) < 0)
					rc = fail(e, "snapshot: out of memory");
			} else if (h == 2) {
				rc = walk_dir(r, idx, child, out, nhashed, e);
			}
		}
		free(child);
		if (rc < 0)
			break;
	}
	closedir(d);
	return rc;
}

static int is_rescanned(const strvec *done, const char *path)
{
	/* done holds sorted paths; look for path itself or any ancestor */
	size_t len = strlen(path);
	for (size_t i = 0; i < done->n; i++) {
		size_t n = strlen(done->v[i]);
		if (n <= len && strncmp(done->v[i], path, n) == 0 &&
		    (path[n] == '\0' || path[n] == '/'))
			return 1;
	}
	return 0;
}

/*
 * Whether every parent component of rel is a real directory (not a symlink,
 * not a file).  A path below a symlink is not in the work tree as git sees
 * it: reading or removing it would reach through the link.
 */
static int parents_real(brepo *r, const char *rel)
{
	char *p = abspath(r, rel);
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

/*
 * Turns the pending paths into changes (out != NULL) or, in maintenance mode
 * (out == NULL), only brings the watch set up to date with the directories
 * that appeared.  Consumes the pending list.
 */
static int process_pending(brepo *r, git_index *idx, changes *out,
	size_t *nhashed, errbuf *e)
{
	watch *w = &r->w;
	strvec done = {0};
	int rc = 0;

	if (w->pend.n)
		qsort(w->pend.v, w->pend.n, sizeof *w->pend.v, pend_cmp);
	for (size_t i = 0; i < w->pend.n && rc == 0; i++) {
		pending *p = &w->pend.v[i];
		/* several events for one path: it is one change */
		while (i + 1 < w->pend.n && strcmp(p->path, w->pend.v[i + 1].path) == 0)
			p->dir |= w->pend.v[++i].dir;
		if (excluded(p->path) || is_rescanned(&done, p->path))
			continue;
		git_oid oid;
		uint32_t mode;
		char *abs = abspath(r, p->path);
		struct stat st;
		int kind;  /* 0 nothing, 1 file, 2 dir */
		if (!abs) {
			rc = fail(e, "snapshot: out of memory");
			break;
		}
		if (!parents_real(r, p->path) || lstat(abs, &st) < 0)
			kind = 0;
		else if (S_ISDIR(st.st_mode))
			kind = 2;
		else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))
			kind = 1;
		else
			kind = 0;
		free(abs);
		if (kind == 2) {
			if (strvec_add(&done, p->path) < 0) {
				rc = fail(e, "snapshot: out of memory");
				break;
			}
			if (out && changes_add(out, p->path, NULL, 0) < 0) {
				rc = fail(e, "snapshot: out of memory");
				break;
			}
			rc = walk_dir(r, idx, p->path, out, nhashed, e);
			continue;
		}
		if (!out)
			continue;
		if (kind == 1 && (is_tracked(idx, p->path) || !is_ignored(r, p->path))) {
			int h = hash_path(r, idx, p->path, &oid, &mode, e);
			if (h < 0) {
				rc = -1;
			} else if (h == 1) {
				(*nhashed)++;
				if (changes_add(out, p->path, &oid, mode) < 0)
					rc = fail(e, "snapshot: out of memory");
			} else if (changes_add(out, p->path, NULL, 0) < 0) {
				rc = fail(e, "snapshot: out of memory");
			}
		} else if (changes_add(out, p->path, NULL, 0) < 0) {
			rc = fail(e, "snapshot: out of memory");
		}
	}
	strvec_free(&done);
	pend_clear(&w->pend);
	return rc;
}

/* True when a pending path may change which files are included: then only a
 * full scan is right.  (.gitattributes does not matter here: files are stored
 * as their bytes, whatever the attributes say.) */
static int pend_touches_rules(const watch *w)
{
	for (size_t i = 0; i < w->pend.n; i++) {
		const char *s = strrchr(w->pend.v[i].path, '/');
		s = s ? s + 1 : w->pend.v[i].path;
		if (strcmp(s, ".gitignore") == 0)
			return 1;
	}
	return 0;
}

static int watch_start(brepo *r, git_index *idx, errbuf *e)
{
	watch *w = &r->w;
	size_t dummy = 0;
	w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (w->fd < 0) {
		w->off = "inotify unavailable";
		r->use_watch = 0;  /* EMFILE and the like: full scans from now on */
		return 0;
	}
	w->valid = 1;
	w->has_base = 0;
	if (walk_dir(r, idx, "", NULL, &dummy, e) < 0)
		return -1;
	if (!w->valid) {
		/* too many directories for the watch limit: do not retry */
		watch_stop(w);
		r->use_watch = 0;
		w->off = "watch limit reached (fs.inotify.max_user_watches)";
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* filters: when the index's blob ids are not the files' bytes               */

static char *gitdir_file(brepo *r, const char *name)
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

static int nonempty_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0;
}

/* Whether some directory of a ':'-separated search path holds file name. */
static int search_path_has(int level, const char *name)
{
	git_buf sp = {0};
	int found = 0;
	if (git_libgit2_opts(GIT_OPT_GET_SEARCH_PATH, level, &sp) < 0)
		return 1;  /* cannot tell: assume it does */
	for (const char *s = sp.ptr ? sp.ptr : ""; *s && !found;) {
		size_t n = strcspn(s, ":");
		char *p = NULL;
		if (n && asprintf(&p, "%.*s/%s", (int)n, s, name) >= 0) {
			found = nonempty_file(p);
			free(p);
		}
		s += n;
		if (*s == ':')
			s++;
	}
	git_buf_dispose(&sp);
	return found;
}

/* Whether a .gitattributes file is in dir (rel, "" = root) of the work tree. */
static int dir_has_attrs(brepo *r, const char *dir, size_t dlen)
{
	char *p = NULL;
	int found;
	if (asprintf(&p, "%s%.*s%s.gitattributes", r->workdir, (int)dlen, dir,
		dlen ? "/" : "") < 0)
		return 1;
	found = access(p, F_OK) == 0;
	free(p);
	return found;
}

/*
 * Whether `git add` could have stored some tracked file as other bytes than
 * the file's (eol conversion, ident, a filter driver, a working-tree
 * encoding): then the index's blob ids cannot stand for the files' bytes.
 * True when core.autocrlf is on or any attribute source exists: the system
 * and global attribute files, info/attributes, a .gitattributes in the index,
 * or a .gitattributes file in a directory that holds a tracked file or in one
 * above it (an untracked directory's own files are hashed anyway).  Cheap:
 * a few config reads and one access(2) per directory of the index.
 */
static int filters_possible(brepo *r, git_index *idx)
{
	git_config *cfg = NULL;
	git_buf b = {0};
	char *last = NULL, *p = NULL;
	int any = 0, autocrlf = 0;

	if (git_repository_config_snapshot(&cfg, r->repo) < 0)
		return 1;
	const char *s;
	if (git_config_get_string(&s, cfg, "core.autocrlf") == 0) {
		int v;
		autocrlf = git_config_parse_bool(&v, s) == 0 ? v
			: strcasecmp(s, "input") == 0;
	}
	if (git_config_get_path(&b, cfg, "core.attributesfile") == 0)
		any = nonempty_file(b.ptr);
	else
		any = search_path_has(GIT_CONFIG_LEVEL_XDG, "attributes");
	git_buf_dispose(&b);
	git_config_free(cfg);
	if (autocrlf || any || search_path_has(GIT_CONFIG_LEVEL_SYSTEM, "gitattributes"))
		return 1;
	if (asprintf(&p, "%sinfo/attributes", git_repository_commondir(r->repo)) < 0)
		return 1;
	any = nonempty_file(p);
	free(p);
	if (any || dir_has_attrs(r, "", 0))
		return 1;
	/* the index is sorted, so each directory's entries are contiguous and
	 * each directory is looked at once, when its first entry comes */
	if (!(last = xstrdup("")))
		return 1;
	size_t n = git_index_entrycount(idx);
	for (size_t i = 0; i < n && !any; i++) {
		const git_index_entry *ie = git_index_get_byindex(idx, i);
		const char *path = ie->path, *slash = strrchr(path, '/');
		size_t dlen = slash ? (size_t)(slash - path) : 0, c = 0;
		if (strcmp(slash ? slash + 1 : path, ".gitattributes") == 0) {
			any = 1;
			break;
		}
		if (strlen(last) == dlen && strncmp(last, path, dlen) == 0)
			continue;
		/* c: length of the directories path shares with last */
		while (c < dlen && last[c] && last[c] == path[c])
			c++;
		if (!((c == dlen || path[c] == '/') && (last[c] == '\0' || last[c] == '/')))
			while (c > 0 && path[c] != '/')
				c--;
		for (size_t j = c + 1; j <= dlen && !any; j++)
			if (j == dlen || path[j] == '/')
				any = dir_has_attrs(r, path, j);
		free(last);
		if (!(last = strndup(path, dlen)))
			any = 1;
	}
	free(last);
	return any;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * The raw stat cache, <gitdir>/beat/raw-index: an index file (git's format,
 * never git's index) whose entries say "the file at this path, with exactly
 * this stat data, has these bytes".  It spares a full scan from reading every
 * tracked file again where filters are possible (see check_index_blobs).
 * Only a cache: unreadable, it is started afresh; unwritable, it is not
 * kept.  Returns NULL when it cannot be had at all.
 */
static git_index *raw_cache(brepo *r)
{
	if (r->rawcache) {
		if (git_index_read(r->rawcache, 0) < 0 && git_index_clear(r->rawcache) < 0) {
			git_index_free(r->rawcache);
			r->rawcache = NULL;
		}
		return r->rawcache;
	}
	char *p = gitdir_file(r, "beat/raw-index");
	if (!p)
		return NULL;
	if (git_index_open(&r->rawcache, p) < 0) {
		unlink(p);
		if (git_index_open(&r->rawcache, p) < 0)
			r->rawcache = NULL;
	}
	free(p);
	git_error_clear();
	return r->rawcache;
}

/* Whether two entries record the same stat data (all the fields git
 * compares, ctime included) and mode. */
static int same_stat(const git_index_entry *a, const git_index_entry *b)
{
	return a->mode == b->mode && a->file_size == b->file_size &&
		a->ino == b->ino && a->uid == b->uid && a->gid == b->gid &&
		a->mtime.seconds == b->mtime.seconds &&
		a->mtime.nanoseconds == b->mtime.nanoseconds &&
		a->ctime.seconds == b->ctime.seconds &&
		a->ctime.nanoseconds == b->ctime.nanoseconds;
}

/* An entry with st's stat data as git records it. */
static void entry_from_stat(git_index_entry *ie, const struct stat *st)
{
	memset(ie, 0, sizeof *ie);
	ie->ctime.seconds = (int32_t)st->st_ctim.tv_sec;
	ie->ctime.nanoseconds = (uint32_t)st->st_ctim.tv_nsec;
	ie->mtime.seconds = (int32_t)st->st_mtim.tv_sec;
	ie->mtime.nanoseconds = (uint32_t)st->st_mtim.tv_nsec;
	ie->dev = (uint32_t)st->st_dev;
	ie->ino = (uint32_t)st->st_ino;
	ie->uid = st->st_uid;
	ie->gid = st->st_gid;
	ie->file_size = (uint32_t)st->st_size;
}

/*
 * For a full scan where filters are possible (filters_possible): the blob id
 * of an index entry the diff found unchanged is the clean-filtered content,
 * not necessarily the file's bytes.  Gives every such tracked regular file
 * its own bytes' id: from the raw stat cache when it holds the path with the
 * entry's exact stat data, else by reading the file (and then remembering it,
 * unless the file changed in the last seconds: a write in the same clock
 * tick could keep the stat data and change the bytes).  Adds a change for
 * each file whose bytes are not its index blob.
 *
 * An unchanged entry's stat data is the file's as it is now, except for
 * the paths in `uncertain` (sorted): those git found unchanged only by
 * hashing them through the clean filter, their stat data being stale; the
 * cache is not consulted for them.
 * seen[0..nd) are the paths the diff reported, sorted: they are hashed
 * already.  Entries git does not look at (assume-unchanged, skip-worktree,
 * intent-to-add) keep their index blob, as `git add -A` keeps them.
 */
static int check_index_blobs(brepo *r, git_index *use, const strvec *uncertain,
	const char **seen, size_t nd, changes *c, size_t *nhashed, errbuf *e)
{
	git_index *cache = raw_cache(r);
	git_odb *odb = NULL;
	size_t ne = git_index_entrycount(use), added = 0;
	time_t now = time(NULL);
	int rc = -1;

	/* the cache names blobs that only snapshots may hold: a gc may have
	 * pruned them since, so such an id is used only while it exists */
	if (cache && git_repository_odb(&odb, r->repo) < 0) {
		git_error_clear();
		cache = NULL;
	}
	/* paths no longer tracked linger in the cache; harmless (an entry only
	 * counts when its stat data matches), but start afresh when they pile
	 * up: this scan refills it */
	if (cache && git_index_entrycount(cache) > 2 * ne + 1024 &&
	    git_index_clear(cache) < 0) {
		git_error_clear();
		cache = NULL;
	}
	for (size_t i = 0; i < ne; i++) {
		const git_index_entry *ie = git_index_get_byindex(use, i);
		const char *path = ie->path;
		git_oid oid;
		uint32_t mode = ie->mode;
		if (GIT_INDEX_ENTRY_STAGE(ie) != 0 ||
		    (ie->mode != GIT_FILEMODE_BLOB && ie->mode != GIT_FILEMODE_BLOB_EXECUTABLE) ||
		    (ie->flags & GIT_INDEX_ENTRY_VALID) ||
		    (ie->flags_extended & (GIT_INDEX_ENTRY_SKIP_WORKTREE | GIT_INDEX_ENTRY_INTENT_TO_ADD)) ||
		    excluded(path) ||
		    (nd && bsearch(&path, seen, nd, sizeof *seen, cmp_str)))
			continue;
		const git_index_entry *ce = cache && !(uncertain->n &&
			bsearch(&path, uncertain->v, uncertain->n, sizeof *uncertain->v, cmp_str))
			? git_index_get_bypath(cache, path, 0) : NULL;
		if (ce && same_stat(ce, ie) &&
		    (git_oid_equal(&ce->id, &ie->id) || git_odb_exists(odb, &ce->id))) {
			git_oid_cpy(&oid, &ce->id);
		} else {
			struct stat st;
			memset(&st, 0, sizeof st);
			int h = hash_path_st(r, use, path, 1, &oid, &mode, &st, e);
			if (h < 0)
				goto done;
			if (h != 1) {
				/* gone since the diff looked, or a directory now */
				if (changes_add(c, path, NULL, 0) < 0) {
					fail(e, "snapshot: out of memory");
					goto done;
				}
				continue;
			}
			(*nhashed)++;
			/* remembered only when what was read is what the entry's
			 * stat data describes, and not too fresh */
			git_index_entry ne2;
			entry_from_stat(&ne2, &st);
			ne2.mode = mode;
			if (cache && S_ISREG(st.st_mode) && same_stat(&ne2, ie) &&
			    st.st_mtim.tv_sec + 2 < now && st.st_ctim.tv_sec + 2 < now) {
				ne2.path = path;
				git_oid_cpy(&ne2.id, &oid);
				if (git_index_add(cache, &ne2) == 0)
					added++;
				else
					git_error_clear();
			}
		}
		if ((!git_oid_equal(&oid, &ie->id) || mode != ie->mode) &&
		    changes_add(c, path, &oid, mode) < 0) {
			fail(e, "snapshot: out of memory");
			goto done;
		}
	}
	rc = 0;
done:
	if (cache && added) {
		char *dir = gitdir_file(r, "beat");
		if (dir && (mkdir(dir, 0777) == 0 || errno == EEXIST) &&
		    git_index_write(cache) < 0)
			git_error_clear();  /* a cache: the scan is right without it */
		free(dir);
	}
	git_odb_free(odb);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* the work tree's tree                                                      */

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
			gitfail(e, "snapshot: index");
			goto done;
		}
		git_index_conflict_cleanup(priv);
		use = priv;
	}
	if (git_index_write_tree_to(&base, use, r->repo) < 0) {
		gitfail(e, "snapshot: index tree");
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
		gitfail(e, "snapshot: scan");
		goto done;
	}
	if (notes.oom) {
		fail(e, "snapshot: out of memory");
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
		if (len == 0 || path[len - 1] == '/' || excluded(path))
			continue;  /* untracked nested repository, .beat/ */
		if (d->old_file.mode == GIT_FILEMODE_COMMIT ||
		    d->new_file.mode == GIT_FILEMODE_COMMIT)
			continue;
		if (d->status != GIT_DELTA_DELETED) {
			int reg = d->new_file.mode == GIT_FILEMODE_BLOB ||
				d->new_file.mode == GIT_FILEMODE_BLOB_EXECUTABLE;
			h = hash_path_st(r, use, path, reg, &oid, &mode, NULL, e);
			if (h < 0)
				goto done;
		}
		if (h == 1) {
			(*nhashed)++;
			if (changes_add(&c, path, &oid, mode) < 0) {
				fail(e, "snapshot: out of memory");
				goto done;
			}
		} else if (changes_add(&c, path, NULL, 0) < 0) {
			fail(e, "snapshot: out of memory");
			goto done;
		}
	}
	/* the index's blob id of a file the diff found unchanged is that file's
	 * bytes only when no filter applied on `git add` */
	if (filters) {
		if (nd && !(seen = malloc(nd * sizeof *seen))) {
			fail(e, "snapshot: out of memory");
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
		if (check_index_blobs(r, use, &notes.uncertain, seen, nd, &c, nhashed, e) < 0)
			goto done;
	}
	if (changes_add(&c, ".beat", NULL, 0) < 0) {
		fail(e, "snapshot: out of memory");
		goto done;
	}
	rc = apply_changes(r->repo, &base, &c, out, e);
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
 * return *how says which path was taken.
 */
static int worktree_tree(brepo *r, int full, git_oid *out, const char **how,
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
		gitfail(e, "snapshot: index");
		goto done;
	}
	ipath = xstrdup(git_index_path(idx));
	xpath = gitdir_file(r, "info/exclude");
	if (!ipath || !xpath) {
		fail(e, "snapshot: out of memory");
		goto done;
	}
	sig_of(ipath, &isig);
	sig_of(xpath, &xsig);
	if (git_index_read(idx, 0) < 0) {
		gitfail(e, "snapshot: index");
		goto done;
	}
	if (r->use_watch && w->fd < 0 && watch_start(r, idx, e) < 0)
		goto done;
	if (w->fd >= 0 && watch_drain(w) < 0) {
		fail(e, "snapshot: out of memory");
		goto done;
	}
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
	} else if (incremental && pend_touches_rules(w)) {
		incremental = 0;
		rewatch = 1;
		why = ".gitignore changed";
	}
	if (incremental) {
		if (process_pending(r, idx, &c, nhashed, e) < 0 ||
		    apply_changes(r->repo, &w->base, &c, out, e) < 0) {
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
			} else if (process_pending(r, idx, NULL, nhashed, e) < 0) {
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

/* ------------------------------------------------------------------------ */
/* restore                                                                   */

/* Removes the now-empty directories above rel, up to the work tree root;
 * stops at the first one that is not empty (ignored files stay). */
static void prune_dirs(brepo *r, const char *rel)
{
	char *p = abspath(r, rel);
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

static int mkdir_parents(brepo *r, const char *rel, errbuf *e)
{
	char *p = abspath(r, rel);
	if (!p)
		return fail(e, "restore: out of memory");
	for (char *s = p + r->wdlen; (s = strchr(s, '/')) != NULL; s++) {
		struct stat st;
		*s = '\0';
		if (mkdir(p, 0777) < 0 && errno != EEXIST) {
			int err = errno;
			free(p);
			return fail(e, "restore: %s: %s", rel, strerror(err));
		}
		if (lstat(p, &st) < 0 || !S_ISDIR(st.st_mode)) {
			fail(e, "restore: %s: %s is in the way and is not in the snapshot "
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
		fail(e, "restore: %s: %s", rel, gitmsg());
		goto done;
	}
	if (!(abs = abspath(r, rel)) || !(tmp = malloc(strlen(abs) + 64))) {
		fail(e, "restore: out of memory");
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
				fail(e, "restore: out of memory");
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
				osfail(e, "restore", rel);
				goto done;
			}
			continue;
		}
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC,
			mode == GIT_FILEMODE_BLOB_EXECUTABLE ? 0777 : 0666);
		if (fd >= 0)
			break;
		if (errno != EEXIST) {
			osfail(e, "restore", rel);
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
				osfail(e, "restore", rel);
				goto fail_tmp;
			}
			data += w;
			len -= (size_t)w;
		}
		if (close(fd) < 0) {
			fd = -1;
			osfail(e, "restore", rel);
			goto fail_tmp;
		}
		fd = -1;
	}
	if (rename(tmp, abs) < 0) {
		if (errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST)
			fail(e, "restore: %s: a directory is in the way and is not in the "
				"snapshot (ignored files in it?)", rel);
		else
			osfail(e, "restore", rel);
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

static int set_exec(brepo *r, const char *rel, int exec, errbuf *e)
{
	struct stat st;
	char *abs = abspath(r, rel);
	int rc = 0;
	if (!abs)
		return fail(e, "restore: out of memory");
	if (!parents_real(r, rel) || lstat(abs, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = fail(e, "restore: %s: no longer a regular file", rel);
	} else {
		mode_t m = st.st_mode & 07777;
		m = exec ? (m | ((m & 0444) >> 2)) : (m & ~(mode_t)0111);
		if (chmod(abs, m) < 0)
			rc = osfail(e, "restore", rel);
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
static int restore_trees(brepo *r, const git_oid *from_id, const git_oid *to_id,
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
		gitfail(e, "restore: tree");
		goto done;
	}
	if (git_diff_tree_to_tree(&diff, r->repo, from, to, &o) < 0) {
		gitfail(e, "restore: diff");
		goto done;
	}
	size_t nd = git_diff_num_deltas(diff);
	for (size_t i = 0; i < nd; i++) {
		const git_diff_delta *d = git_diff_get_delta(diff, i);
		if (d->status != GIT_DELTA_DELETED || excluded(d->old_file.path) ||
		    d->old_file.mode == GIT_FILEMODE_COMMIT)
			continue;
		char *abs = abspath(r, d->old_file.path);
		if (!abs) {
			fail(e, "restore: out of memory");
			goto done;
		}
		if (!parents_real(r, d->old_file.path)) {
			free(abs);
			continue;  /* below a link or a file: not in the work tree */
		}
		if (unlink(abs) < 0 && errno != ENOENT) {
			if (!failed++)
				osfail(&first, "restore", d->old_file.path);
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
		    excluded(path) || d->new_file.mode == GIT_FILEMODE_COMMIT)
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
			return fail(e, "%s (and %d more)", first.msg, failed - 1);
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

/* ------------------------------------------------------------------------ */
/* Lua: repository methods                                                   */

static int parse_oid(lua_State *L, int arg, git_oid *oid)
{
	const char *s = luaL_checkstring(L, arg);
	if (strlen(s) != GIT_OID_HEXSZ || git_oid_fromstr(oid, s) < 0)
		return luaL_argerror(L, arg, "object id (40 hex digits) expected");
	return 0;
}

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
	brepo *r = checkrepo(L);
	lua_pushstring(L, r->workdir);
	lua_pushstring(L, git_repository_path(r->repo));
	lua_pushstring(L, git_repository_commondir(r->repo));
	return 3;
}

/* repo:tree(full) -> tree id, how ("watch"|"full"), files hashed, watch state */
static int repo_tree(lua_State *L)
{
	brepo *r = checkrepo(L);
	int full = lua_toboolean(L, 2);
	git_oid oid;
	const char *how = "full";
	size_t nhashed = 0;
	errbuf e;
	if (worktree_tree(r, full, &oid, &how, &nhashed, &e) < 0)
		return pushfail(L, &e);
	pushoid(L, &oid);
	lua_pushstring(L, how);
	lua_pushinteger(L, (lua_Integer)nhashed);
	lua_pushstring(L, r->w.state ? r->w.state : "not watching");
	return 4;
}

/* repo:commit(tree, parents, message, name, email) -> commit id */
static int repo_commit(lua_State *L)
{
	brepo *r = checkrepo(L);
	git_oid tid, cid, pids[16];
	size_t np, i;
	const char *msg, *name, *email;
	git_tree *tree = NULL;
	const git_commit *parents[16] = {0};
	git_signature *sig = NULL;
	int rc = 0;

	parse_oid(L, 2, &tid);
	luaL_checktype(L, 3, LUA_TTABLE);
	msg = luaL_checkstring(L, 4);
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
	if (git_signature_now(&sig, name, email) < 0)
		return pushgitfail(L, "snapshot: signature");
	if (git_tree_lookup(&tree, r->repo, &tid) < 0) {
		rc = pushgitfail(L, "snapshot: tree");
		goto done;
	}
	for (i = 0; i < np; i++) {
		if (git_commit_lookup((git_commit **)&parents[i], r->repo, &pids[i]) < 0) {
			rc = pushgitfail(L, "snapshot: parent");
			goto done;
		}
	}
	if (git_commit_create(&cid, r->repo, NULL, sig, sig, NULL, msg, tree, np,
			parents) < 0) {
		rc = pushgitfail(L, "snapshot: commit");
		goto done;
	}
	pushoid(L, &cid);
	rc = 1;
done:
	for (i = 0; i < np; i++)
		git_commit_free((git_commit *)parents[i]);
	git_tree_free(tree);
	git_signature_free(sig);
	return rc;
}

/* repo:set_ref(name, id, log message) -> true; overwrites */
static int repo_set_ref(lua_State *L)
{
	brepo *r = checkrepo(L);
	const char *name = luaL_checkstring(L, 2);
	git_oid oid;
	git_reference *ref = NULL;
	parse_oid(L, 3, &oid);
	const char *logmsg = luaL_optstring(L, 4, "beat");
	if (git_reference_create(&ref, r->repo, name, &oid, 1, logmsg) < 0)
		return pushgitfail(L, "ref");
	git_reference_free(ref);
	lua_pushboolean(L, 1);
	return 1;
}

/* repo:get_ref(name) -> id or nil */
static int repo_get_ref(lua_State *L)
{
	brepo *r = checkrepo(L);
	git_oid oid;
	if (git_reference_name_to_id(&oid, r->repo, luaL_checkstring(L, 2)) < 0)
		return 0;
	pushoid(L, &oid);
	return 1;
}

/* repo:delete_ref(name) -> true */
static int repo_delete_ref(lua_State *L)
{
	brepo *r = checkrepo(L);
	if (git_reference_remove(r->repo, luaL_checkstring(L, 2)) < 0)
		return pushgitfail(L, "delete ref");
	lua_pushboolean(L, 1);
	return 1;
}

/* repo:refs(prefix) -> { {name=, id=}, ... } sorted by name */
static int repo_refs(lua_State *L)
{
	brepo *r = checkrepo(L);
	size_t plen;
	const char *prefix = luaL_checklstring(L, 2, &plen);
	git_reference_iterator *it = NULL;
	const char *name;
	lua_Integer n = 0;
	int rc;

	if (git_reference_iterator_new(&it, r->repo) < 0)
		return pushgitfail(L, "refs");
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
		pushoid(L, &oid);
		lua_setfield(L, -2, "id");
		lua_rawseti(L, -2, ++n);
	}
	git_reference_iterator_free(it);
	if (rc != GIT_ITEROVER)
		return pushgitfail(L, "refs");
	return 1;
}

/* repo:head() -> commit id or nil (no commits yet), branch ref name or nil
 * (detached) */
static int repo_head(lua_State *L)
{
	brepo *r = checkrepo(L);
	git_reference *head = NULL;
	git_oid oid;
	if (git_reference_lookup(&head, r->repo, "HEAD") < 0)
		return pushgitfail(L, "head");
	if (git_reference_type(head) == GIT_REFERENCE_SYMBOLIC) {
		const char *target = git_reference_symbolic_target(head);
		if (git_reference_name_to_id(&oid, r->repo, target) == 0)
			pushoid(L, &oid);
		else
			lua_pushnil(L);
		lua_pushstring(L, target);
	} else {
		pushoid(L, git_reference_target(head));
		lua_pushnil(L);
	}
	git_reference_free(head);
	return 2;
}

/* repo:resolve(rev) -> commit id, tree id; for a tree: false, tree id;
 * nil, error when rev names neither */
static int repo_resolve(lua_State *L)
{
	brepo *r = checkrepo(L);
	const char *rev = luaL_checkstring(L, 2);
	git_object *obj = NULL, *peeled = NULL;
	if (git_revparse_single(&obj, r->repo, rev) < 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "unknown revision: %s", rev);
		return 2;
	}
	if (git_object_type(obj) == GIT_OBJECT_TREE) {
		lua_pushboolean(L, 0);
		pushoid(L, git_object_id(obj));
		git_object_free(obj);
		return 2;
	}
	if (git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT) < 0) {
		git_object_free(obj);
		lua_pushnil(L);
		lua_pushfstring(L, "not a commit: %s", rev);
		return 2;
	}
	pushoid(L, git_object_id(peeled));
	pushoid(L, git_commit_tree_id((git_commit *)peeled));
	git_object_free(peeled);
	git_object_free(obj);
	return 2;
}

/* repo:signature() -> name, email from the git config, or nil */
static int repo_signature(lua_State *L)
{
	brepo *r = checkrepo(L);
	git_signature *sig = NULL;
	if (git_signature_default(&sig, r->repo) < 0)
		return 0;
	lua_pushstring(L, sig->name);
	lua_pushstring(L, sig->email);
	git_signature_free(sig);
	return 2;
}

/* repo:restore_tree(from tree, to tree) -> files written, files removed */
static int repo_restore_tree(lua_State *L)
{
	brepo *r = checkrepo(L);
	git_oid a, b;
	size_t written, removed;
	errbuf e;
	parse_oid(L, 2, &a);
	parse_oid(L, 3, &b);
	if (restore_trees(r, &a, &b, &written, &removed, &e) < 0)
		return pushfail(L, &e);
	lua_pushinteger(L, (lua_Integer)written);
	lua_pushinteger(L, (lua_Integer)removed);
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

/* repo:diff_trees(a, b, patch) -> {files_changed, insertions, deletions,
 * files = {{path, status, insertions, deletions, binary}}, patch} */
static int repo_diff_trees(lua_State *L)
{
	brepo *r = checkrepo(L);
	git_oid a, b;
	git_tree *ta = NULL, *tb = NULL;
	git_diff *diff = NULL;
	git_diff_stats *stats = NULL;
	git_diff_options o;
	int want_patch, rc;

	parse_oid(L, 2, &a);
	parse_oid(L, 3, &b);
	want_patch = lua_toboolean(L, 4);
	git_diff_options_init(&o, GIT_DIFF_OPTIONS_VERSION);
	o.flags = GIT_DIFF_INCLUDE_TYPECHANGE;
	if (git_tree_lookup(&ta, r->repo, &a) < 0 || git_tree_lookup(&tb, r->repo, &b) < 0) {
		rc = pushgitfail(L, "diff");
		goto done;
	}
	if (git_diff_tree_to_tree(&diff, r->repo, ta, tb, &o) < 0 ||
	    git_diff_get_stats(&stats, diff) < 0) {
		rc = pushgitfail(L, "diff");
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
			rc = pushgitfail(L, "diff");
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
	return rc;
}

/* repo:descendant(a, b) -> whether commit a has b in its history (or a == b) */
static int repo_descendant(lua_State *L)
{
	brepo *r = checkrepo(L);
	git_oid a, b;
	int rc;
	parse_oid(L, 2, &a);
	parse_oid(L, 3, &b);
	if (git_oid_equal(&a, &b)) {
		lua_pushboolean(L, 1);
		return 1;
	}
	rc = git_graph_descendant_of(r->repo, &a, &b);
	if (rc < 0)
		return pushgitfail(L, "history");
	lua_pushboolean(L, rc);
	return 1;
}

/* repo:checked_out(branch ref) -> whether a work tree has it checked out */
static int repo_checked_out(lua_State *L)
{
	brepo *r = checkrepo(L);
	git_reference *ref = NULL;
	int rc;
	if (git_reference_lookup(&ref, r->repo, luaL_checkstring(L, 2)) < 0) {
		lua_pushboolean(L, 0);
		return 1;
	}
	rc = git_branch_is_checked_out(ref);
	git_reference_free(ref);
	if (rc < 0)
		return pushgitfail(L, "branch");
	lua_pushboolean(L, rc);
	return 1;
}

/* repo:reset_index(tree) -> true: the index file now holds the tree */
static int repo_reset_index(lua_State *L)
{
	brepo *r = checkrepo(L);
	git_oid oid;
	git_tree *tree = NULL;
	git_index *idx = NULL;
	int rc;
	parse_oid(L, 2, &oid);
	if (git_tree_lookup(&tree, r->repo, &oid) < 0 ||
	    git_repository_index(&idx, r->repo) < 0 ||
	    git_index_read_tree(idx, tree) < 0 || git_index_write(idx) < 0) {
		rc = pushgitfail(L, "index");
	} else {
		lua_pushboolean(L, 1);
		rc = 1;
	}
	git_index_free(idx);
	git_tree_free(tree);
	return rc;
}

static int write_text(const char *path, const char *text, errbuf *e)
{
	FILE *f = fopen(path, "wbx");
	if (!f)
		return osfail(e, "worktree", path);
	if (fputs(text, f) < 0 || fclose(f) != 0)
		return osfail(e, "worktree", path);
	return 0;
}

/*
 * repo:worktree_add(abs path, commit, name) -> true
 * A linked work tree (as `git worktree add --detach`): HEAD detached at the
 * commit, files and the new work tree's own index checked out.  Creates no
 * branch; the user's work tree and index are not touched.
 */
static int repo_worktree_add(lua_State *L)
{
	brepo *r = checkrepo(L);
	const char *path = luaL_checkstring(L, 2);
	git_oid oid;
	const char *base = luaL_checkstring(L, 4);
	const char *common = git_repository_commondir(r->repo);
	char *admin = NULL, *file = NULL, *text = NULL, *apath = NULL;
	git_repository *wt = NULL;
	git_object *commit = NULL;
	git_checkout_options co;
	errbuf e;
	int rc = -1;

	parse_oid(L, 3, &oid);
	if (mkdir(path, 0777) < 0) {
		DIR *d;
		struct dirent *de;
		int empty = 1;
		if (errno != EEXIST || !(d = opendir(path))) {
			osfail(&e, "worktree", path);
			goto done;
		}
		while ((de = readdir(d)) != NULL)
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
				empty = 0;
		closedir(d);
		if (!empty) {
			fail(&e, "worktree: %s: exists and is not empty", path);
			goto done;
		}
	}
	if (!(apath = realpath(path, NULL))) {
		osfail(&e, "worktree", path);
		goto done;
	}
	path = apath;
	/* <commondir>/worktrees/<name>, or <name>-N when taken */
	if (asprintf(&admin, "%sworktrees", common) < 0) {
		admin = NULL;
		fail(&e, "worktree: out of memory");
		goto done;
	}
	if (mkdir(admin, 0777) < 0 && errno != EEXIST) {
		osfail(&e, "worktree", admin);
		goto done;
	}
	free(admin);
	admin = NULL;
	for (int i = 1;; i++) {
		int n = i == 1 ? asprintf(&admin, "%sworktrees/%s", common, base)
			: asprintf(&admin, "%sworktrees/%s-%d", common, base, i);
		if (n < 0) {
			admin = NULL;
			fail(&e, "worktree: out of memory");
			goto done;
		}
		if (mkdir(admin, 0777) == 0)
			break;
		if (errno != EEXIST || i >= 1000) {
			osfail(&e, "worktree", admin);
			goto done;
		}
		free(admin);
		admin = NULL;
	}
	char hex[GIT_OID_HEXSZ + 1];
	git_oid_tostr(hex, sizeof hex, &oid);
#define WRITE_ADMIN(fname, ...) \
	do { \
		free(file); free(text); file = text = NULL; \
		if (asprintf(&file, "%s/%s", admin, fname) < 0 || \
		    asprintf(&text, __VA_ARGS__) < 0) { \
			fail(&e, "worktree: out of memory"); \
			goto done; \
		} \
		if (write_text(file, text, &e) < 0) \
			goto done; \
	} while (0)
	WRITE_ADMIN("HEAD", "%s\n", hex);
	WRITE_ADMIN("commondir", "../..\n");
	WRITE_ADMIN("gitdir", "%s/.git\n", path);
	WRITE_ADMIN("beat", "created by beat: repo:remove_worktree may delete this work tree\n");
#undef WRITE_ADMIN
	free(file);
	free(text);
	file = text = NULL;
	if (asprintf(&file, "%s/.git", path) < 0 || asprintf(&text, "gitdir: %s\n", admin) < 0) {
		fail(&e, "worktree: out of memory");
		goto done;
	}
	if (write_text(file, text, &e) < 0)
		goto done;
	if (git_repository_open(&wt, path) < 0 ||
	    git_object_lookup(&commit, wt, &oid, GIT_OBJECT_COMMIT) < 0) {
		gitfail(&e, "worktree");
		goto done;
	}
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	co.checkout_strategy = GIT_CHECKOUT_FORCE;
	if (git_checkout_tree(wt, commit, &co) < 0) {
		gitfail(&e, "worktree: checkout");
		goto done;
	}
	rc = 0;
done:
	git_object_free(commit);
	git_repository_free(wt);
	free(admin);
	free(file);
	free(text);
	free(apath);
	if (rc < 0)
		return pushfail(L, &e);
	lua_pushboolean(L, 1);
	return 1;
}

/* repo:worktree_remove(path) -> true: deletes a linked work tree of this
 * repository (its directory and its admin files).  Refuses any other path. */
static int repo_worktree_remove(lua_State *L)
{
	brepo *r = checkrepo(L);
	const char *path = luaL_checkstring(L, 2);
	git_strarray names = {0};
	char *want = realpath(path, NULL);
	int rc = 0, found = 0;

	if (git_worktree_list(&names, r->repo) < 0) {
		free(want);
		return pushgitfail(L, "worktree");
	}
	for (size_t i = 0; i < names.count && !found; i++) {
		git_worktree *wt = NULL;
		if (git_worktree_lookup(&wt, r->repo, names.strings[i]) < 0)
			continue;
		const char *wp = git_worktree_path(wt);
		char *have = wp ? realpath(wp, NULL) : NULL;
		if ((want && have && strcmp(want, have) == 0) ||
		    (!want && wp && strcmp(wp, path) == 0)) {
			git_worktree_prune_options po;
			struct stat st;
			char *marker = NULL;
			found = 1;
			/* only work trees beat made: a user's own may hold uncommitted work */
			if (asprintf(&marker, "%sworktrees/%s/beat",
				git_repository_commondir(r->repo), names.strings[i]) < 0)
				marker = NULL;
			if (!marker || stat(marker, &st) < 0) {
				lua_pushnil(L);
				lua_pushfstring(L, "worktree: %s: not created by beat, not removing it", path);
				rc = 2;
			} else {
				git_worktree_prune_options_init(&po, GIT_WORKTREE_PRUNE_OPTIONS_VERSION);
				po.flags = GIT_WORKTREE_PRUNE_VALID | GIT_WORKTREE_PRUNE_WORKING_TREE;
				if (git_worktree_prune(wt, &po) < 0)
					rc = pushgitfail(L, "worktree");
			}
			free(marker);
		}
		free(have);
		git_worktree_free(wt);
	}
	git_strarray_dispose(&names);
	free(want);
	if (rc)
		return rc;
	if (!found) {
		lua_pushnil(L);
		lua_pushfstring(L, "worktree: %s: not a work tree of this repository", path);
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

/* ------------------------------------------------------------------------ */
/* locks                                                                     */

typedef struct {
	int fd;  /* -1 once released */
} block;

static block *checklock(lua_State *L)
{
	return luaL_checkudata(L, 1, LOCK_MT);
}

/* lock:release() — idempotent; also __gc and __close. */
static int lock_release(lua_State *L)
{
	block *b = checklock(L);
	if (b->fd >= 0) {
		if (ftruncate(b->fd, 0) < 0) {
			/* the kernel lock goes with the close below anyway */
		}
		close(b->fd);
		b->fd = -1;
	}
	return 0;
}

/* lock:held() -> whether this object still holds the lock */
static int lock_held(lua_State *L)
{
	block *b = checklock(L);
	lua_pushboolean(L, b->fd >= 0);
	return 1;
}

/*
 * lock(path, id) -> lock | nil, "busy", pid, id | nil, error
 * An flock(2) on path, which the kernel drops when the holder exits however
 * it exits, so a lock is never stale.  The file (never removed, so two
 * processes cannot lock two different inodes) records "<pid> <id>".  The
 * descriptor is close-on-exec: child processes do not inherit the lock.
 */
static int l_lock(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	const char *id = luaL_checkstring(L, 2);
	block *b = lua_newuserdatauv(L, sizeof *b, 0);
	int fd;
	b->fd = -1;
	luaL_setmetatable(L, LOCK_MT);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
	if (fd < 0) {
		lua_pushnil(L);
		lua_pushfstring(L, "lock: %s: %s", path, strerror(errno));
		return 2;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int err = errno;
		char buf[512];
		ssize_t n;
		long pid = 0;
		if (err != EWOULDBLOCK) {
			close(fd);
			lua_pushnil(L);
			lua_pushfstring(L, "lock: %s: %s", path, strerror(err));
			return 2;
		}
		n = pread(fd, buf, sizeof buf - 1, 0);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		lua_pushnil(L);
		lua_pushliteral(L, "busy");
		char *sp = NULL;
		pid = strtol(buf, &sp, 10);
		if (pid > 0 && sp && *sp == ' ') {
			size_t len = strcspn(sp + 1, "\n");
			lua_pushinteger(L, pid);
			lua_pushlstring(L, sp + 1, len);
		} else {
			lua_pushnil(L);
			lua_pushnil(L);
		}
		return 4;
	}
	char text[512];
	int len = snprintf(text, sizeof text, "%ld %s\n", (long)getpid(), id);
	if (len < 0 || (size_t)len >= sizeof text || ftruncate(fd, 0) < 0 ||
	    pwrite(fd, text, (size_t)len, 0) != len) {
		close(fd);
		lua_pushnil(L);
		lua_pushfstring(L, "lock: %s: cannot record the holder", path);
		return 2;
	}
	b->fd = fd;
	return 1;
}

/* ------------------------------------------------------------------------ */
/* Lua: module functions                                                     */

/*
 * open(dir, watch) -> repo | nil, "not a git repository: <dir>"
 * The userdata exists, closed, before the repository is opened, so a memory
 * error at any point leaves nothing that __gc cannot free.
 */
static int l_open(lua_State *L)
{
	const char *dir = luaL_checkstring(L, 1);
	int use_watch = lua_isnoneornil(L, 2) ? 1 : lua_toboolean(L, 2);
	brepo *r = lua_newuserdatauv(L, sizeof *r, 0);
	memset(r, 0, sizeof *r);
	r->w.fd = -1;
	luaL_setmetatable(L, REPO_MT);
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
	if (!(r->workdir = xstrdup(wd))) {
		repo_close(r);
		return luaL_error(L, "beat.git: out of memory");
	}
	r->use_watch = use_watch;
	r->filemode = 1;
	git_config *cfg = NULL;
	if (git_repository_config_snapshot(&cfg, r->repo) == 0) {
		int v;
		if (git_config_get_bool(&v, cfg, "core.filemode") == 0)
			r->filemode = v;
		git_config_free(cfg);
	}
	/* in memory only: never written to any ignore file */
	git_ignore_add_rule(r->repo, "/.beat/\n");
	return 1;
}

/* init(dir) -> true | nil, error */
static int l_init(lua_State *L)
{
	const char *dir = luaL_checkstring(L, 1);
	git_repository *repo = NULL;
	if (git_repository_init(&repo, dir, 0) < 0)
		return pushgitfail(L, "init");
	git_repository_free(repo);
	lua_pushboolean(L, 1);
	return 1;
}

/* mkdir(path) -> true | nil, error (one level; an existing dir is fine) */
static int l_mkdir(lua_State *L)
{
	const char *path = luaL_checkstring(L, 1);
	if (mkdir(path, 0777) < 0 && errno != EEXIST) {
		lua_pushnil(L);
		lua_pushfstring(L, "mkdir: %s: %s", path, strerror(errno));
		return 2;
	}
	lua_pushboolean(L, 1);
	return 1;
}

static const luaL_Reg repo_meth[] = {
	{"close", repo_gc},
	{"paths", repo_paths},
	{"tree", repo_tree},
	{"commit", repo_commit},
	{"set_ref", repo_set_ref},
	{"get_ref", repo_get_ref},
	{"delete_ref", repo_delete_ref},
	{"refs", repo_refs},
	{"head", repo_head},
	{"resolve", repo_resolve},
	{"signature", repo_signature},
	{"restore_tree", repo_restore_tree},
	{"diff_trees", repo_diff_trees},
	{"descendant", repo_descendant},
	{"checked_out", repo_checked_out},
	{"reset_index", repo_reset_index},
	{"worktree_add", repo_worktree_add},
	{"worktree_remove", repo_worktree_remove},
	{NULL, NULL}
};

static const luaL_Reg repo_mt[] = {
	{"__gc", repo_gc},
	{"__close", repo_gc},
	{"__index", NULL},
	{NULL, NULL}
};

static const luaL_Reg lock_meth[] = {
	{"release", lock_release},
	{"held", lock_held},
	{NULL, NULL}
};

static const luaL_Reg lock_mt[] = {
	{"__gc", lock_release},
	{"__close", lock_release},
	{"__index", NULL},
	{NULL, NULL}
};

static const luaL_Reg funcs[] = {
	{"open", l_open},
	{"init", l_init},
	{"lock", l_lock},
	{"mkdir", l_mkdir},
	{NULL, NULL}
};

static void newclass(lua_State *L, const char *name, const luaL_Reg *mt,
	const luaL_Reg *meth)
{
	luaL_newmetatable(L, name);
	luaL_setfuncs(L, mt, 0);
	lua_newtable(L);
	luaL_setfuncs(L, meth, 0);
	lua_setfield(L, -2, "__index");
	lua_pop(L, 1);
}

int luaopen_beat__git(lua_State *L)
{
	git_libgit2_init();  /* refcounted by libgit2; never shut down */
	newclass(L, REPO_MT, repo_mt, repo_meth);
	newclass(L, LOCK_MT, lock_mt, lock_meth);
	luaL_newlib(L, funcs);
	int major = 0, minor = 0, rev = 0;
	git_libgit2_version(&major, &minor, &rev);
	lua_pushfstring(L, "%d.%d.%d", major, minor, rev);
	lua_setfield(L, -2, "libgit2_version");
	return 1;
}
