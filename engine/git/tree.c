/*
 * tree.c — storing work-tree files as blobs, and building a tree from a
 * previous one and a list of changes (or from the index's entries).
 *
 * A file is stored as the bytes it holds on disk: no clean filter, no eol
 * conversion, no ident, whatever .gitattributes or core.autocrlf say.  Both
 * ways of finding changed files (the watch and the full scan) hash a file
 * with tree_hash_path, so they give the same tree.
 *
 * Trees are read, merged and written as git's bytes (no git_treebuilder:
 * it copied every entry into a map and, strict, read back each id
 * inserted); the trees written or read last are kept (the memo), so the
 * next tree, built on this one, does not read them back.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "git.h"

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

/* ------------------------------------------------------------------------ */
/* trees                                                                     */

/* One entry of a tree being built. */
typedef struct {
    const char *name;
    size_t len;
    uint32_t mode;
    git_oid id;
} tent;

static int is_tree_mode(uint32_t mode)
{
    return (mode & 0170000) == 0040000;
}

/* git's order of tree entries: by name, a tree's name compared as if it
 * ended with '/'. */
static int tent_cmp(const void *a, const void *b)
{
    const tent *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    unsigned cx = x->len > n ? (unsigned char)x->name[n] : is_tree_mode(x->mode) ? '/' : 0;
    unsigned cy = y->len > n ? (unsigned char)y->name[n] : is_tree_mode(y->mode) ? '/' : 0;
    return (int)cx - (int)cy;
}

/* A growing buffer of tree entries in git's format. */
typedef struct {
    char *p;
    size_t n, cap;
} tbuf;

static int tbuf_add(tbuf *b, uint32_t mode, const char *name, size_t len,
    const git_oid *id)
{
    size_t need = 8 + len + 1 + GIT_OID_RAWSZ;
    if (b->n + need > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 4096;
        while (nc < b->n + need)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np)
            return -1;
        b->p = np;
        b->cap = nc;
    }
    b->n += (size_t)sprintf(b->p + b->n, "%o ", (unsigned)mode);
    memcpy(b->p + b->n, name, len);
    b->p[b->n + len] = '\0';
    memcpy(b->p + b->n + len + 1, id->id, GIT_OID_RAWSZ);
    b->n += len + 1 + GIT_OID_RAWSZ;
    return 0;
}

/*
 * The trees written or read last, by id: the next tree built starts from
 * the one before, whose trees on the changed paths were written just
 * before; kept here, they are not read back from the object database.
 * MEMO_N at most, and never more than MEMO_BYTES in all.
 */
#define MEMO_BYTES ((size_t)512 << 10)

void memo_put(brepo *r, const git_oid *id, const char *buf, size_t len)
{
    treememo *m = &r->memo;
    if (len > MEMO_BYTES / 4)
        return;
    for (size_t i = 0; i < MEMO_N; i++)
        if (m->v[i].buf && git_oid_equal(&m->v[i].id, id))
            return;
    /* the oldest slot is reused; older ones go while over the budget */
    for (size_t k = 0; k < MEMO_N && (k == 0 || m->bytes + len > MEMO_BYTES); k++) {
        treememo_ent *o = &m->v[(m->next + k) % MEMO_N];
        if (o->buf) {
            m->bytes -= o->len;
            free(o->buf);
            o->buf = NULL;
        }
    }
    treememo_ent *x = &m->v[m->next];
    if (!(x->buf = malloc(len ? len : 1)))
        return;  /* a cache: nothing lost */
    memcpy(x->buf, buf, len);
    x->len = len;
    git_oid_cpy(&x->id, id);
    m->bytes += len;
    m->next = (m->next + 1) % MEMO_N;
}

void memo_free(brepo *r)
{
    for (size_t i = 0; i < MEMO_N; i++) {
        free(r->memo.v[i].buf);
        r->memo.v[i].buf = NULL;
    }
    r->memo.bytes = 0;
    r->memo.next = 0;
}

/* The bytes of tree id, a copy the caller frees: from the memo, else read
 * from the object database (and remembered). */
static int tree_read(brepo *r, const git_oid *id, char **buf, size_t *len, errbuf *e)
{
    git_odb *odb = NULL;
    git_odb_object *obj = NULL;
    for (size_t i = 0; i < MEMO_N; i++) {
        treememo_ent *x = &r->memo.v[i];
        if (x->buf && git_oid_equal(&x->id, id)) {
            if (!(*buf = malloc(x->len ? x->len : 1)))
                return err_set(e, "snapshot: out of memory");
            memcpy(*buf, x->buf, x->len);
            *len = x->len;
            return 0;
        }
    }
    if (git_repository_odb(&odb, r->repo) < 0 || git_odb_read(&obj, odb, id) < 0) {
        git_odb_free(odb);
        return err_git(e, "snapshot: tree lookup");
    }
    git_odb_free(odb);
    if (git_odb_object_type(obj) != GIT_OBJECT_TREE) {
        char hex[GIT_OID_HEXSZ + 1];
        git_odb_object_free(obj);
        return err_set(e, "snapshot: %s is not a tree", git_oid_tostr(hex, sizeof hex, id));
    }
    *len = git_odb_object_size(obj);
    if (!(*buf = malloc(*len ? *len : 1))) {
        git_odb_object_free(obj);
        return err_set(e, "snapshot: out of memory");
    }
    memcpy(*buf, git_odb_object_data(obj), *len);
    git_odb_object_free(obj);
    memo_put(r, id, *buf, *len);
    return 0;
}

/* The entries of a tree object's bytes, pointing into them: *n entries in
 * *out (malloc'd).  -1 when the bytes are not a tree. */
static int tree_parse(const char *buf, size_t len, tent **out, size_t *n, errbuf *e)
{
    size_t cap = len / 22 + 1, k = 0;
    tent *v = malloc(cap * sizeof *v);
    const char *p = buf, *end = buf + len;
    if (!v)
        return err_set(e, "snapshot: out of memory");
    while (p < end) {
        uint32_t mode = 0;
        while (p < end && *p >= '0' && *p <= '7')
            mode = mode * 8 + (uint32_t)(*p++ - '0');
        if (p >= end || *p != ' ')
            goto bad;
        const char *name = ++p;
        const char *z = memchr(p, '\0', (size_t)(end - p));
        if (!z || z == name || (size_t)(end - z - 1) < GIT_OID_RAWSZ || k == cap)
            goto bad;
        v[k].name = name;
        v[k].len = (size_t)(z - name);
        v[k].mode = mode;
        git_oid_fromraw(&v[k].id, (const unsigned char *)z + 1);
        k++;
        p = z + 1 + GIT_OID_RAWSZ;
    }
    *out = v;
    *n = k;
    return 0;
bad:
    free(v);
    return err_set(e, "snapshot: a tree object is corrupt");
}

/* Serializes the entries (sorted here) as a tree object and stores it. */
static int write_entries(brepo *r, tent *v, size_t n, git_oid *out, errbuf *e)
{
    tbuf b = {0};
    int rc = -1;
    if (n)
        qsort(v, n, sizeof *v, tent_cmp);
    for (size_t i = 0; i < n; i++) {
        if (tbuf_add(&b, v[i].mode, v[i].name, v[i].len, &v[i].id) < 0) {
            err_set(e, "snapshot: out of memory");
            goto done;
        }
    }
    if (put_object(r, out, b.p ? b.p : "", b.n, GIT_OBJECT_TREE) < 0) {
        err_git(e, "snapshot: tree write");
        goto done;
    }
    memo_put(r, out, b.p, b.n);
    rc = 0;
done:
    free(b.p);
    return rc;
}

/* Whether name may be a tree entry's name: not empty, ".", "..", nor one
 * that names git's directory on some file system (".git" in any case, with
 * trailing dots or spaces, or its short name "git~1"), as libgit2's tree
 * builder requires. */
static int valid_name(const char *name, size_t len)
{
    while (len > 1 && (name[len - 1] == '.' || name[len - 1] == ' '))
        len--;
    if (len == 0 || (len == 1 && name[0] == '.') ||
        (len == 2 && name[0] == '.' && name[1] == '.'))
        return 0;
    if ((len == 4 && strncasecmp(name, ".git", 4) == 0) ||
        (len == 5 && strncasecmp(name, "git~1", 5) == 0))
        return 0;
    return memchr(name, '/', len) == NULL;
}

/* The changes of one tree level that share a name: an upsert or removal of
 * the name itself (leaf) and/or edits below it (a group, c[glo..ghi)). */
typedef struct {
    const char *name;
    size_t len;
    ptrdiff_t leaf;  /* index into c, or -1 */
    size_t glo, ghi;
} item;

static int item_cmp(const void *a, const void *b)
{
    const item *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->name, y->name, n);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* The base entry named name[0..len) (a tree or not), or -1. */
static ptrdiff_t base_find(const tent *v, size_t n, const char *name, size_t len)
{
    for (int dir = 0; dir < 2; dir++) {
        tent key = {name, len, dir ? 0040000 : 0100644, {{0}}};
        size_t lo = 0, hi = n;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = tent_cmp(&v[mid], &key);
            if (c == 0)
                return (ptrdiff_t)mid;
            if (c < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
    }
    return -1;
}

/*
 * Builds the tree `base` (NULL = empty) with the sorted changes c[0..n)
 * applied, all of whose paths share a prefix of plen bytes that names this
 * tree.  A removal drops a blob or a whole subtree; an upsert replaces
 * whatever was there; edits below a name that is not a tree start an empty
 * one there.  Subtrees left empty disappear, as in git.  *empty is set when
 * the result has no entries (the tree is then written only at the root, as
 * git's empty tree).
 */
static int build_tree(brepo *r, const git_oid *base, change *c, size_t n,
    size_t plen, git_oid *out, int *empty, errbuf *e)
{
    size_t nb = 0, ni = 0, no = 0, blen = 0;
    char *bbuf = NULL;
    tent *bv = NULL, *ov = NULL;
    item *iv = NULL;
    unsigned char *used = NULL;
    int rc = -1;

    if (base && (tree_read(r, base, &bbuf, &blen, e) < 0 ||
            tree_parse(bbuf, blen, &bv, &nb, e) < 0))
        goto done;
    if ((nb && !(used = calloc(nb, 1))) || (n && !(iv = malloc(n * sizeof *iv))) ||
        !(ov = malloc((nb + n + 1) * sizeof *ov))) {
        err_set(e, "snapshot: out of memory");
        goto done;
    }
    /* the changes of this level, by name */
    for (size_t i = 0; i < n;) {
        const char *rest = c[i].path + plen;
        const char *slash = strchr(rest, '/');
        item *it = &iv[ni++];
        it->name = rest;
        if (!slash) {
            it->len = strlen(rest);
            it->leaf = (ptrdiff_t)i;
            it->glo = it->ghi = 0;
            i++;
            continue;
        }
        size_t nlen = (size_t)(slash - rest), j = i + 1;
        while (j < n && strncmp(c[j].path + plen, rest, nlen + 1) == 0)
            j++;
        it->len = nlen;
        it->leaf = -1;
        it->glo = i;
        it->ghi = j;
        i = j;
    }
    /* a name's own change comes before the edits below it (c is sorted),
     * but other names may come between: bring them together */
    if (ni > 1)
        qsort(iv, ni, sizeof *iv, item_cmp);
    for (size_t k = 0; k < ni; k++) {
        item it = iv[k];
        while (k + 1 < ni && item_cmp(&iv[k + 1], &it) == 0) {
            if (iv[k + 1].leaf >= 0)
                it.leaf = iv[k + 1].leaf;
            if (iv[k + 1].ghi > iv[k + 1].glo) {
                it.glo = iv[k + 1].glo;
                it.ghi = iv[k + 1].ghi;
            }
            k++;
        }
        ptrdiff_t bi = base_find(bv, nb, it.name, it.len);
        tent cur = {NULL, 0, 0, {{0}}};
        int has = 0;
        if (bi >= 0) {
            used[bi] = 1;
            cur = bv[bi];
            has = 1;
        }
        if (it.leaf >= 0) {
            const change *ch = &c[it.leaf];
            has = ch->mode != 0;
            if (has) {
                cur.name = it.name;
                cur.len = it.len;
                cur.mode = ch->mode;
                git_oid_cpy(&cur.id, &ch->oid);
            }
        }
        if (it.ghi > it.glo) {
            git_oid soid, sbase;
            int sempty = 0, sub = has && is_tree_mode(cur.mode);
            if (sub)
                git_oid_cpy(&sbase, &cur.id);
            if (build_tree(r, sub ? &sbase : NULL, c + it.glo, it.ghi - it.glo,
                    plen + it.len + 1, &soid, &sempty, e) < 0)
                goto done;
            if (!sempty) {
                cur.name = it.name;
                cur.len = it.len;
                cur.mode = 0040000;
                git_oid_cpy(&cur.id, &soid);
                has = 1;
            } else if (has && is_tree_mode(cur.mode)) {
                has = 0;
            }
        }
        if (!has)
            continue;
        if (bi < 0 && !valid_name(cur.name, cur.len)) {
            err_set(e, "snapshot: %.*s%.*s: invalid name for a tree entry",
                (int)plen, (it.leaf >= 0 ? c[it.leaf].path : c[it.glo].path),
                (int)it.len, it.name);
            goto done;
        }
        ov[no++] = cur;
    }
    for (size_t i = 0; i < nb; i++)
        if (!used[i])
            ov[no++] = bv[i];
    *empty = no == 0;
    if ((!*empty || plen == 0) && write_entries(r, ov, no, out, e) < 0)
        goto done;
    rc = 0;
done:
    free(bbuf);
    free(bv);
    free(used);
    free(iv);
    free(ov);
    return rc;
}

/*
 * The tree `base_id` (NULL: empty) with the changes applied, written to the
 * object database as *out.  Of several changes to one path the last one
 * added wins; c is sorted in the process.
 */
int tree_apply(brepo *r, const git_oid *base_id, changes *c, git_oid *out,
    errbuf *e)
{
    int empty;
    changes_normalize(c);
    if (base_id && c->n == 0) {
        char *b = NULL;
        size_t n;
        if (tree_read(r, base_id, &b, &n, e) < 0)  /* it is there, a tree */
            return -1;
        free(b);
        git_oid_cpy(out, base_id);  /* nothing changed: the same tree */
        return 0;
    }
    return build_tree(r, base_id, c->v, c->n, 0, out, &empty, e);
}

/* The mode git records in a tree for an index entry's mode. */
uint32_t tree_mode(uint32_t mode)
{
    if ((mode & 0170000) == 0120000)
        return 0120000;
    if ((mode & 0170000) == 0160000)
        return 0160000;
    if ((mode & 0170000) == 0040000)
        return 0040000;
    return (mode & 0100) ? 0100755 : 0100644;
}

/* Writes the tree of the entries ix->v[*pos..) below the prefix pre[0..plen)
 * (a directory and its '/'; 0 at the root), advancing *pos past them. */
static int index_dir(brepo *r, const bindex *ix, size_t *pos, const char *pre,
    size_t plen, git_oid *out, int *empty, errbuf *e)
{
    tbuf b = {0};
    int rc = -1;
    while (*pos < ix->n) {
        const ientry *ie = &ix->v[*pos];
        if (plen && (ie->len <= plen || memcmp(ie->path, pre, plen) != 0))
            break;
        if (IENTRY_STAGE(ie) != 0 || (ie->fext & IENTRY_INTENT_TO_ADD)) {
            (*pos)++;  /* not in the tree git would write */
            continue;
        }
        const char *rest = ie->path + plen;
        const char *slash = memchr(rest, '/', ie->len - plen);
        int fail;
        if (!slash) {
            fail = tbuf_add(&b, tree_mode(ie->mode), rest, ie->len - plen, &ie->id);
            (*pos)++;
        } else {
            size_t nlen = (size_t)(slash - rest);
            git_oid soid;
            int sempty = 0;
            if (index_dir(r, ix, pos, ie->path, plen + nlen + 1, &soid, &sempty, e) < 0)
                goto done;
            fail = !sempty && tbuf_add(&b, 0040000, rest, nlen, &soid);
        }
        if (fail) {
            err_set(e, "snapshot: out of memory");
            goto done;
        }
    }
    *empty = b.n == 0;
    if (!*empty || plen == 0) {
        if (put_object(r, out, b.p ? b.p : "", b.n, GIT_OBJECT_TREE) < 0) {
            err_git(e, "snapshot: index tree");
            goto done;
        }
        memo_put(r, out, b.p ? b.p : "", b.n);
    }
    rc = 0;
done:
    free(b.p);
    return rc;
}

/*
 * The tree git would write from the index (`git write-tree`, conflicted
 * and intent-to-add entries left out), stored as *out: the root of git's
 * cached tree when it is valid, else built from the entries, which are in
 * tree order already.
 */
int tree_of_index(brepo *r, const bindex *ix, git_oid *out, errbuf *e)
{
    size_t pos = 0;
    int empty;
    if (ix->has_tree) {
        git_oid_cpy(out, &ix->tree);
        return 0;
    }
    return index_dir(r, ix, &pos, "", 0, out, &empty, e);
}

/* Stores bytes as a blob (see put_object). */
static int put_blob(brepo *r, git_oid *oid, const void *data, size_t len)
{
    return put_object(r, oid, data, len, GIT_OBJECT_BLOB);
}

/*
 * Streams the st_size bytes of the open file fd into the object database
 * as a blob, CHUNK bytes at a time: memory does not grow with the file.
 * Bytes the file gains meanwhile are not stored (the blob is the file as
 * big as it was when looked at); returns 3 when it shrank (the caller looks
 * again), 1 with *oid set, -1 on error.  An object already there is only
 * refreshed, as git_odb_write does.
 */
static int stream_file(brepo *r, const char *rel, int fd, const struct stat *st,
    git_oid *oid, errbuf *e)
{
    git_odb *odb = NULL;
    git_odb_stream *ws = NULL;
    char *buf = malloc(CHUNK);
    off_t left = st->st_size;
    int rc = -1;

    if (!buf)
        return err_set(e, "snapshot: out of memory");
    if (git_repository_odb(&odb, r->repo) < 0 ||
        git_odb_open_wstream(&ws, odb, (git_object_size_t)st->st_size,
            GIT_OBJECT_BLOB) < 0) {
        err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
        goto done;
    }
    while (left > 0) {
        size_t want = left < (off_t)CHUNK ? (size_t)left : CHUNK;
        ssize_t n = read(fd, buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_os(e, "snapshot", rel);
            goto done;
        }
        if (n == 0) {
            rc = 3;  /* shorter than it was a moment ago */
            goto done;
        }
        if (git_odb_stream_write(ws, buf, (size_t)n) < 0) {
            err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
            goto done;
        }
        left -= n;
    }
    if (git_odb_stream_finalize_write(oid, ws) < 0) {
        err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
        goto done;
    }
    rc = 1;
done:
    git_odb_stream_free(ws);
    git_odb_free(odb);
    free(buf);
    return rc;
}

/*
 * Reads the open file fd (of st_size bytes when looked at) to its end and
 * stores what it read as a blob.  A file that grows past STREAM_MIN while
 * being read gives 3: the caller looks again, and streams it.
 */
static int read_file(brepo *r, const char *rel, int fd, const struct stat *st,
    git_oid *oid, errbuf *e)
{
    /* one byte more than the size, so that the end of file is seen without
     * growing the buffer when the file does not grow meanwhile */
    size_t len = 0, cap = (size_t)st->st_size + 1;
    char *buf = malloc(cap);
    int rc = -1;

    if (!buf)
        return err_set(e, "snapshot: %s: out of memory", rel);
    for (;;) {
        if (len == cap) {
            char *nb = cap <= STREAM_MIN ? realloc(buf, cap * 2) : NULL;
            if (cap > STREAM_MIN) {
                rc = 3;  /* grew large meanwhile */
                goto done;
            }
            if (!nb) {
                err_set(e, "snapshot: %s: out of memory", rel);
                goto done;
            }
            buf = nb;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            err_os(e, "snapshot", rel);
            goto done;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (put_blob(r, oid, buf, len) < 0) {
        err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
        goto done;
    }
    rc = 1;
done:
    free(buf);
    return rc;
}

/*
 * For a file larger than the size limit: whether it is a tracked file whose
 * bytes are still its index blob (same size, and the same id once hashed,
 * in constant memory).  Then *oid is that blob, already stored: 1.
 * Otherwise the file is left out and noted in r->skipped: 4.
 */
static int too_large(brepo *r, const bindex *ix, const char *rel, const char *abs,
    const struct stat *st, git_oid *oid, errbuf *e)
{
    const ientry *ie = ix ? bindex_get(ix, rel) : NULL;
    git_oid h;
    if (ie && ie->size == (uint32_t)st->st_size &&
        (ie->mode == GIT_FILEMODE_BLOB || ie->mode == GIT_FILEMODE_BLOB_EXECUTABLE) &&
        git_odb_hashfile(&h, abs, GIT_OBJECT_BLOB) == 0 && git_oid_equal(&h, &ie->id)) {
        git_oid_cpy(oid, &ie->id);
        return 1;
    }
    git_error_clear();
    if (skips_add(&r->skipped, rel, (int64_t)st->st_size) < 0)
        return err_set(e, "snapshot: out of memory");
    return 4;
}

/*
 * Stores the bytes of the regular file at abs exactly as they are on disk, as
 * a blob: no clean filter, no eol conversion, no ident, whatever
 * .gitattributes or core.autocrlf say.  An object already in the database is
 * not written again.  Memory stays bounded whatever the file's size (large
 * files are streamed).  Returns 1 with *oid and *read_st (the stat of the
 * file read) set; 0 when abs is gone; 3 when it is not a regular file (any
 * more: the caller looks again); 4 when it is larger than r->max_size and
 * was left out (noted in r->skipped); -1 on error.
 */
static int store_file(brepo *r, const bindex *ix, const char *rel, const char *abs,
    git_oid *oid, struct stat *read_st, errbuf *e)
{
    struct stat st;
    int fd, rc = -1;

    /* O_NOFOLLOW: a symlink swapped in since the lstat is not followed;
     * O_NONBLOCK: nor does a fifo swapped in block the open */
    fd = open(abs, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return 0;
        if (errno == ELOOP)
            return 3;
        return err_os(e, "snapshot", rel);
    }
    if (fstat(fd, &st) < 0) {
        err_os(e, "snapshot", rel);
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = 3;
        goto done;
    }
    *read_st = st;
    if (r->max_size >= 0 && st.st_size > r->max_size)
        rc = too_large(r, ix, rel, abs, &st, oid, e);
    else if (st.st_size > STREAM_MIN)
        rc = stream_file(r, rel, fd, &st, oid, e);
    else
        rc = read_file(r, rel, fd, &st, oid, e);
done:
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
            return err_set(e, "snapshot: out of memory");
        n = readlink(abs, buf, cap);
        if (n < 0) {
            int err = errno;
            free(buf);
            if (err == ENOENT || err == ENOTDIR)
                return 0;
            if (err == EINVAL)
                return 3;
            errno = err;
            return err_os(e, "snapshot", rel);
        }
        if ((size_t)n < cap) {
            if (put_blob(r, oid, buf, (size_t)n) < 0)
                err_set(e, "snapshot: %s: %s", rel, err_gitmsg());
            else
                rc = 1;
            free(buf);
            return rc;
        }
        free(buf);  /* possibly truncated: try again with more room */
        if (cap > (size_t)1 << 24)
            return err_set(e, "snapshot: %s: symlink target too long", rel);
        cap *= 2;
    }
}

/*
 * Hashes one work-tree path into the object database: a file's bytes exactly
 * as they are on disk (no filters, see store_file), a symlink as a link.
 * Returns 1 with *oid and *mode set for a file or symlink (and *read_st, when
 * not NULL, to the stat of a regular file read; st_mode 0 for a link), 2 for
 * a directory, 0 when there is nothing there to store (or a file larger
 * than r->max_size, then noted in r->skipped), -1 on error.  With reg set
 * (the caller just saw a regular file there) the file is opened without an
 * lstat first; whatever else it turns out to be is looked at again.
 */
int tree_hash_path(brepo *r, const bindex *ix, const char *rel, int reg,
    git_oid *oid, uint32_t *mode, struct stat *read_st, errbuf *e)
{
    struct stat st;
    char *abs = path_abs(r, rel);
    int rc = -1;
    if (!abs)
        return err_set(e, "snapshot: out of memory");
    /* a path changing type under us is looked at again, a few times */
    for (int tries = 0; tries < 8; tries++) {
        if (!reg || tries > 0) {
            if (lstat(abs, &st) < 0) {
                if (errno == ENOENT || errno == ENOTDIR)
                    rc = 0;
                else
                    rc = err_os(e, "snapshot", rel);
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
        rc = store_file(r, ix, rel, abs, oid, &st, e);
        if (rc == 4) {
            rc = 0;  /* too large: left out of the tree */
            goto done;
        }
        if (rc == 1) {
            if (r->filemode) {
                *mode = (st.st_mode & S_IXUSR) ? GIT_FILEMODE_BLOB_EXECUTABLE
                    : GIT_FILEMODE_BLOB;
            } else {
                const ientry *ie = ix ? bindex_get(ix, rel) : NULL;
                *mode = ie && ie->mode == GIT_FILEMODE_BLOB_EXECUTABLE
                    ? GIT_FILEMODE_BLOB_EXECUTABLE : GIT_FILEMODE_BLOB;
            }
            if (read_st)
                *read_st = st;
        }
        if (rc != 3)
            goto done;
    }
    rc = err_set(e, "snapshot: %s: keeps changing type while being read", rel);
done:
    free(abs);
    return rc;
}

/* Whether git's ignore rules (the in-memory exclusions included) ignore rel;
 * an error counts as not ignored, so the file is stored. */
int tree_is_ignored(brepo *r, const char *rel)
{
    int ign = 0;
    if (git_ignore_path_is_ignored(&ign, r->repo, rel) < 0)
        return 0;
    return ign;
}

/* Whether the index has a (stage 0) entry for rel. */
int tree_is_tracked(const bindex *ix, const char *rel)
{
    return bindex_get(ix, rel) != NULL;
}

/* Whether the index tracks some file below the directory rel (an error
 * counts as yes: the directory is then looked into). */
int tree_has_tracked_under(const bindex *ix, const char *rel)
{
    return bindex_has_under(ix, rel);
}

