/*
 * index.c — the index file, read the way git reads it, for the scans.
 *
 * libgit2's git_index_read checks the SHA-1 over the whole file each time it
 * loads it (17 ms for 20,000 entries here, with its collision-detecting
 * SHA-1) and builds a hash map of every path; git itself checks that sum
 * only in fsck.  The scans need the entries in order (paths, ids, modes,
 * flags, stat data) and the root of the cached tree, nothing else, so they
 * read the file here: one read(2), one pass, paths left in place (versions
 * 2 and 3) or rebuilt once (version 4).  Never written: the index file is
 * git's, and beat never changes it (see git.h).
 *
 * A file this reader does not understand (a mandatory extension such as a
 * split or sparse index, a version other than 2-4, an entry out of bounds)
 * is an error naming the index, as it was with libgit2.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "git.h"

#define HEADER 12
#define FOOTER 20  /* the SHA-1 over the file */

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const unsigned char *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

/* git's offset varint (version 4 path prefixes); -1 when malformed. */
static int varint(const unsigned char **pp, const unsigned char *end, size_t *out)
{
    const unsigned char *p = *pp;
    size_t v;
    if (p >= end)
        return -1;
    unsigned char c = *p++;
    v = c & 127;
    while (c & 128) {
        if (p >= end || v > (SIZE_MAX >> 8))
            return -1;
        v += 1;
        c = *p++;
        v = (v << 7) + (c & 127);
    }
    *pp = p;
    *out = v;
    return 0;
}

static int ientry_cmp(const void *a, const void *b)
{
    const ientry *x = a, *y = b;
    int c = strcmp(x->path, y->path);
    if (c)
        return c;
    return (int)IENTRY_STAGE(x) - (int)IENTRY_STAGE(y);
}

/* Releases what the view holds; it is then empty (no entries, not loaded). */
void bindex_free(bindex *ix)
{
    free(ix->v);
    free(ix->buf);
    free(ix->names);
    memset(ix, 0, sizeof *ix);
}

static int bad(errbuf *e, const char *path, const char *why)
{
    return err_set(e, "snapshot: index %s: %s", path, why);
}

/*
 * The root of the cached tree (extension TREE) when it is valid: its first
 * record is the root's, "" NUL, the entry count in ASCII (-1: invalid),
 * a space, the number of subtrees, a newline, then the tree's id.
 */
static void read_tree_ext(bindex *ix, const unsigned char *p, size_t n)
{
    const unsigned char *end = p + n;
    if (n < 1 || p[0] != '\0')
        return;
    p++;
    if (p < end && *p == '-')
        return;  /* invalidated */
    const unsigned char *nl = memchr(p, '\n', (size_t)(end - p));
    if (!nl || (size_t)(end - nl - 1) < GIT_OID_RAWSZ || nl == p)
        return;
    for (const unsigned char *q = p; q < nl; q++)
        if (!((*q >= '0' && *q <= '9') || *q == ' '))
            return;
    git_oid_fromraw(&ix->tree, nl + 1);
    ix->has_tree = 1;
}

/* Parses the file's bytes, ix->buf[0..len), into ix (see bindex_load). */
static int parse(bindex *ix, const char *path, size_t len, errbuf *e)
{
    const unsigned char *b = (const unsigned char *)ix->buf;
    const unsigned char *end, *p;
    uint32_t version, count;
    char *names = NULL;
    size_t ncap = 0, nlen = 0, prevlen = 0;
    ptrdiff_t prev = -1;  /* offset of the previous path in names (v4) */

    if (len < HEADER + FOOTER || memcmp(b, "DIRC", 4) != 0)
        return bad(e, path, "not an index file");
    version = be32(b + 4);
    count = be32(b + 8);
    if (version < 2 || version > 4)
        return err_set(e, "snapshot: index %s: version %u is not supported", path,
            (unsigned)version);
    end = b + len - FOOTER;
    if (count > (len - HEADER - FOOTER) / 62)
        return bad(e, path, "more entries than the file holds");
    if (count && !(ix->v = malloc((size_t)count * sizeof *ix->v)))
        return err_set(e, "snapshot: out of memory");
    ix->version = (int)version;
    p = b + HEADER;
    for (uint32_t i = 0; i < count; i++) {
        ientry *ie = &ix->v[i];
        size_t off = 62, plen;
        if ((size_t)(end - p) < 62)
            return bad(e, path, "entry out of bounds");
        ie->ctime_s = be32(p);
        ie->ctime_ns = be32(p + 4);
        ie->mtime_s = be32(p + 8);
        ie->mtime_ns = be32(p + 12);
        ie->dev = be32(p + 16);
        ie->ino = be32(p + 20);
        ie->mode = be32(p + 24);
        ie->uid = be32(p + 28);
        ie->gid = be32(p + 32);
        ie->size = be32(p + 36);
        git_oid_fromraw(&ie->id, p + 40);
        ie->flags = be16(p + 60);
        ie->fext = 0;
        if (ie->flags & IENTRY_EXTENDED) {
            if (version < 3 || (size_t)(end - p) < 64)
                return bad(e, path, "extended flags out of place");
            ie->fext = be16(p + 62);
            off = 64;
        }
        if (version < 4) {
            const unsigned char *s = p + off;
            const unsigned char *z = memchr(s, '\0', (size_t)(end - s));
            if (z == s)  /* a split index's entry: its path is elsewhere */
                return bad(e, path, "an entry without a path (a split index is not supported)");
            if (!z)
                return bad(e, path, "entry path out of bounds");
            plen = (size_t)(z - s);
            ie->path = (const char *)s;
            ie->len = plen;
            /* 1 to 8 NULs pad the entry to a multiple of 8 bytes */
            size_t esz = (off + plen + 8) & ~(size_t)7;
            if ((size_t)(end - p) < esz)
                return bad(e, path, "entry out of bounds");
            p += esz;
        } else {
            const unsigned char *s = p + off;
            size_t strip;
            if (varint(&s, end, &strip) < 0 || strip > prevlen)
                return bad(e, path, "bad path prefix");
            const unsigned char *z = memchr(s, '\0', (size_t)(end - s));
            if (!z)
                return bad(e, path, "entry path out of bounds");
            size_t keep = prevlen - strip, add = (size_t)(z - s);
            plen = keep + add;
            if (plen == 0)
                return bad(e, path, "empty path");
            if (nlen + plen + 1 > ncap) {
                size_t nc = ncap ? ncap * 2 : (size_t)count * 32 + 64;
                while (nc < nlen + plen + 1)
                    nc *= 2;
                char *nn = realloc(names, nc);
                if (!nn)
                    return err_set(e, "snapshot: out of memory");
                ix->names = names = nn;  /* bindex_free frees it, whatever happens */
                ncap = nc;
            }
            if (keep)
                memmove(names + nlen, names + prev, keep);
            memcpy(names + nlen + keep, s, add);
            names[nlen + plen] = '\0';
            ie->path = NULL;  /* set below, once names stops moving */
            ie->len = plen;
            ie->noff = nlen;
            prev = (ptrdiff_t)nlen;
            prevlen = plen;
            nlen += plen + 1;
            p = z + 1;
        }
    }
    if (version == 4) {
        for (uint32_t i = 0; i < count; i++)
            ix->v[i].path = names + ix->v[i].noff;
    }
    ix->n = count;
    /* extensions: a 4-byte signature, a 4-byte size, the data */
    while ((size_t)(end - p) >= 8) {
        uint32_t sz = be32(p + 4);
        if ((size_t)(end - p - 8) < sz)
            return bad(e, path, "extension out of bounds");
        if (memcmp(p, "TREE", 4) == 0)
            read_tree_ext(ix, p + 8, sz);
        else if (p[0] < 'A' || p[0] > 'Z')  /* one git requires its readers to know */
            return err_set(e, "snapshot: index %s: extension '%.4s' is not supported (%s)", path,
                (const char *)p, memcmp(p, "link", 4) == 0 ? "a split index"
                : memcmp(p, "sdir", 4) == 0 ? "a sparse index" : "an index beat cannot read");
        p += 8 + (size_t)sz;
    }
    if (p != end)
        return bad(e, path, "trailing bytes");
    /* git writes entries sorted by path, then stage; an index that is not
     * is put in order rather than trusted */
    for (size_t i = 1; i < ix->n; i++) {
        if (ientry_cmp(&ix->v[i - 1], &ix->v[i]) > 0) {
            qsort(ix->v, ix->n, sizeof *ix->v, ientry_cmp);
            ix->has_tree = 0;
            break;
        }
    }
    for (size_t i = 0; i < ix->n; i++)
        if (IENTRY_STAGE(&ix->v[i]) != 0)
            ix->conflicts = 1;
    if (ix->conflicts)
        ix->has_tree = 0;  /* git never has a valid root then; do not trust one */
    return 0;
}

/*
 * Makes ix hold the index file at path as it is now, whose stat data sig
 * was taken before the read (so a write meanwhile shows as a change next
 * time).  Reads it only when sig differs from what ix was read with.  No
 * file is an empty index.  On error ix is empty and not loaded.
 */
int bindex_load(bindex *ix, const char *path, const fsig *sig, errbuf *e)
{
    struct stat st;
    size_t len = 0;
    int fd;

    if (ix->loaded && sig_eq(&ix->sig, sig))
        return 0;
    bindex_free(ix);
    if (!sig->exists) {
        ix->sig = *sig;
        ix->loaded = 1;
        return 0;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            ix->sig = *sig;
            ix->loaded = 1;
            return 0;
        }
        return err_os(e, "snapshot: index", path);
    }
    if (fstat(fd, &st) < 0) {
        err_os(e, "snapshot: index", path);
        close(fd);
        return -1;
    }
    if (st.st_size > (off_t)1 << 31) {
        close(fd);
        return bad(e, path, "larger than 2 GiB");
    }
    if (!(ix->buf = malloc((size_t)st.st_size + 1))) {
        close(fd);
        return err_set(e, "snapshot: out of memory");
    }
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, ix->buf + len, (size_t)st.st_size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_os(e, "snapshot: index", path);
            close(fd);
            bindex_free(ix);
            return -1;
        }
        if (n == 0)
            break;  /* shorter than it was: parse fails on what is there */
        len += (size_t)n;
    }
    close(fd);
    if (parse(ix, path, len, e) < 0) {
        bindex_free(ix);
        return -1;
    }
    ix->sig = *sig;
    ix->loaded = 1;
    return 0;
}

/* The position of the first entry whose path is not below key[0..klen) in
 * byte order (the lower bound). */
size_t bindex_lower(const bindex *ix, const char *key, size_t klen)
{
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const ientry *ie = &ix->v[mid];
        size_t n = ie->len < klen ? ie->len : klen;
        int c = memcmp(ie->path, key, n);
        if (c < 0 || (c == 0 && ie->len < klen))
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* The stage-0 entry of path, or NULL (untracked, or only in conflict). */
const ientry *bindex_get(const bindex *ix, const char *path)
{
    size_t len = strlen(path);
    size_t i = bindex_lower(ix, path, len);
    if (i < ix->n && ix->v[i].len == len && memcmp(ix->v[i].path, path, len) == 0 &&
        IENTRY_STAGE(&ix->v[i]) == 0)
        return &ix->v[i];
    return NULL;
}

/* Whether some stage-0 entry lies below the directory dir ("" = root). */
int bindex_has_under(const bindex *ix, const char *dir)
{
    size_t len = strlen(dir);
    if (len == 0)
        return ix->n > 0;
    char *key = malloc(len + 2);
    if (!key)
        return 1;  /* cannot tell: look into it */
    memcpy(key, dir, len);
    key[len] = '/';
    key[len + 1] = '\0';
    size_t i = bindex_lower(ix, key, len + 1);
    int found = 0;
    for (; i < ix->n && ix->v[i].len > len && memcmp(ix->v[i].path, key, len + 1) == 0; i++) {
        if (IENTRY_STAGE(&ix->v[i]) == 0) {
            found = 1;
            break;
        }
    }
    free(key);
    return found;
}
