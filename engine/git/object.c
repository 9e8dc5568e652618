/*
 * object.c — storing objects: what git_odb_write does, without the work
 * libgit2 repeats for every object.
 *
 * Per new loose object, git_odb_write (libgit2 1.5) tries to refresh it
 * first (a utimensat that fails), then, not finding it, rereads the pack
 * directory (a stat, an open of the multi-pack-index, a readdir), then
 * writes it through a deflate stream set up for that one object (some
 * 270 kB allocated and freed each time, ~20 page faults here).  beat
 * writes objects one snapshot at a time, so here: one stat says whether the
 * object is there loose; a pack is looked into without rereading the pack
 * directory; a new object is deflated by one stream kept for the repository
 * and written as git and libgit2 write a loose object (a temporary file in
 * objects/, then link(2) to its name, core.fsyncObjectFiles honoured).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>
#include <zlib.h>

#include "git.h"

/* Sets libgit2's error to "what: path: strerror(errno)"; returns -1. */
static int os_fail(const char *what, const char *path)
{
    char *msg = NULL;
    if (asprintf(&msg, "%s: %s: %s", what, path, strerror(errno)) < 0) {
        git_error_set_oom();
        return -1;
    }
    git_error_set_str(GIT_ERROR_OS, msg);
    free(msg);
    return -1;
}

/*
 * Deflates header and data, as one zlib stream, into r->zbuf; *zlen gets
 * its length.  The streams are the repository's, reset for each object.
 * An object that takes one file-system block either way (under 4 kB) is
 * stored without compression (deflate level 0, a valid zlib stream git
 * reads as any other): compressing it would save no disk, only cost time.
 * Larger ones are compressed as libgit2 does (level 1, default window).
 */
static int deflate_object(brepo *r, const char *hdr, size_t hlen,
    const void *data, size_t len, size_t *zlen)
{
    int small = hlen + len <= 4000;
    z_stream *zs = r->zs[small];
    if (!zs) {
        if (!(zs = calloc(1, sizeof *zs))) {
            git_error_set_oom();
            return -1;
        }
        /* stored blocks need no window: the smallest there is */
        if (deflateInit2(zs, small ? Z_NO_COMPRESSION : Z_BEST_SPEED, Z_DEFLATED,
                small ? 9 : 15, small ? 1 : 8, Z_DEFAULT_STRATEGY) != Z_OK) {
            free(zs);
            git_error_set_str(GIT_ERROR_ZLIB, "deflate: cannot start");
            return -1;
        }
        r->zs[small] = zs;
    } else if (deflateReset(zs) != Z_OK) {
        git_error_set_str(GIT_ERROR_ZLIB, "deflate: cannot reset");
        return -1;
    }
    if (len > UINT32_MAX - hlen) {
        git_error_set_str(GIT_ERROR_ZLIB, "deflate: object too large");
        return -1;
    }
    size_t bound = deflateBound(zs, (uLong)(hlen + len));
    if (bound > r->zcap) {
        unsigned char *nb = realloc(r->zbuf, bound);
        if (!nb) {
            git_error_set_oom();
            return -1;
        }
        r->zbuf = nb;
        r->zcap = bound;
    }
    zs->next_out = r->zbuf;
    zs->avail_out = (uInt)bound;
    zs->next_in = (Bytef *)(uintptr_t)hdr;
    zs->avail_in = (uInt)hlen;
    if (deflate(zs, Z_NO_FLUSH) != Z_OK) {
        git_error_set_str(GIT_ERROR_ZLIB, "deflate failed");
        return -1;
    }
    zs->next_in = (Bytef *)(uintptr_t)data;
    zs->avail_in = (uInt)len;
    if (deflate(zs, Z_FINISH) != Z_STREAM_END) {
        git_error_set_str(GIT_ERROR_ZLIB, "deflate failed");
        return -1;
    }
    *zlen = bound - zs->avail_out;
    return 0;
}

/* Writes z[0..n) to a new temporary file in objdir (mode 0444, as git's
 * object files); its name in tmp.  -1 with libgit2's error set. */
static int write_temp(brepo *r, const char *objdir, const unsigned char *z,
    size_t n, char *tmp, size_t cap)
{
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 100; tries++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        snprintf(tmp, cap, "%stmp_obj_beat_%ld_%lx_%lx", objdir, (long)getpid(),
            (unsigned long)ts.tv_nsec, ++r->tmp_counter);
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0444);
        if (fd < 0 && errno != EEXIST)
            return os_fail("object", tmp);
    }
    if (fd < 0)
        return os_fail("object", tmp);
    while (n > 0) {
        ssize_t w = write(fd, z, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            if (w == 0)
                errno = EIO;
            os_fail("object", tmp);
            goto fail;
        }
        z += w;
        n -= (size_t)w;
    }
    if (r->fsync_objects && fsync(fd) < 0) {
        os_fail("object", tmp);
        goto fail;
    }
    if (close(fd) < 0) {
        fd = -1;
        os_fail("object", tmp);
        goto fail;
    }
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

/*
 * Writes a new loose object at path (objects/xx/yyyy), its bytes z[0..n):
 * through a temporary file linked to its name, so no reader ever sees a
 * part of it; an object of that name written meanwhile by someone else is
 * the same object, and is kept.  Where hard links are not allowed, rename.
 */
static int write_loose(brepo *r, const char *path, size_t objlen,
    const unsigned char *z, size_t n)
{
    char tmp[PATH_MAX + 64], objdir[PATH_MAX];
    int rc = -1;
    if (objlen + 1 > sizeof objdir) {
        errno = ENAMETOOLONG;
        return os_fail("object", path);
    }
    memcpy(objdir, path, objlen);
    objdir[objlen] = '\0';
    if (write_temp(r, objdir, z, n, tmp, sizeof tmp) < 0)
        return -1;
    for (int tries = 0; tries < 2; tries++) {
        if (link(tmp, path) == 0 || errno == EEXIST) {
            rc = 0;
            break;
        }
        if (errno == ENOENT && tries == 0) {
            /* objects/xx is made on first use */
            char dir[PATH_MAX];
            size_t dl = strrchr(path, '/') - path;
            memcpy(dir, path, dl);
            dir[dl] = '\0';
            if (mkdir(dir, 0777) < 0 && errno != EEXIST) {
                os_fail("object", dir);
                break;
            }
            continue;
        }
        if (rename(tmp, path) == 0)
            return 0;
        os_fail("object", path);
        break;
    }
    unlink(tmp);
    return rc;
}

/*
 * Stores an object (the bytes data[0..len) of the given type) and sets *oid.
 * Git's rule for an object that is already there is kept: it is not written
 * again, only refreshed, so a `git gc` does not prune it before the snapshot
 * that uses it is referenced.  A loose object written or refreshed in the
 * last hour needs nothing (a stat finds it); an older one is refreshed with
 * utimes(2), as git does; one in a pack or an alternate is refreshed by
 * git_odb_write.  A new one is written loose (write_loose).  A pack that
 * appeared since libgit2 last read the pack directory is not looked for:
 * the object is then written loose once more, which git allows (`git
 * prune-packed` removes the copy).  -1 with libgit2's error set on failure.
 */
int put_object(brepo *r, git_oid *oid, const void *data, size_t len,
    git_object_t type)
{
    git_odb *odb = NULL;
    char hex[GIT_OID_HEXSZ + 1], hdr[64], *p = NULL;
    struct stat st;
    int rc, hlen, loose;
    size_t zlen, objlen;

    if (git_odb_hash(oid, data, len, type) < 0)
        return -1;
    git_oid_tostr(hex, sizeof hex, oid);
    hlen = asprintf(&p, "%sobjects/%.2s/%s", git_repository_commondir(r->repo),
        hex, hex + 2);
    if (hlen < 0) {
        git_error_set_oom();
        return -1;
    }
    objlen = (size_t)hlen - GIT_OID_HEXSZ - 1;  /* ".../objects/" */
    loose = stat(p, &st) == 0;
    if (loose && (st.st_mtime > time(NULL) - 3600 || utimes(p, NULL) == 0)) {
        free(p);
        return 0;
    }
    if (git_repository_odb(&odb, r->repo) < 0) {
        free(p);
        return -1;
    }
    if (loose || git_odb_exists_ext(odb, oid, GIT_ODB_LOOKUP_NO_REFRESH)) {
        rc = git_odb_write(oid, odb, data, len, type);  /* refreshes it */
    } else {
        hlen = snprintf(hdr, sizeof hdr, "%s %zu", git_object_type2string(type), len);
        rc = deflate_object(r, hdr, (size_t)hlen + 1, data, len, &zlen);
        if (rc == 0)
            rc = write_loose(r, p, objlen, r->zbuf, zlen);
        if (r->zcap > ((size_t)64 << 10)) {  /* a large object's room is not kept */
            free(r->zbuf);
            r->zbuf = NULL;
            r->zcap = 0;
        }
    }
    git_odb_free(odb);
    free(p);
    return rc;
}

/* Frees the repository's deflate stream and buffer (repo_close). */
void objects_free(brepo *r)
{
    for (int i = 0; i < 2; i++) {
        if (r->zs[i]) {
            deflateEnd(r->zs[i]);
            free(r->zs[i]);
            r->zs[i] = NULL;
        }
    }
    free(r->zbuf);
    r->zbuf = NULL;
    r->zcap = 0;
}
