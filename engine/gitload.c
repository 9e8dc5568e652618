/*
 * gitload.c: "beat._git" loads on first require.
 *
 * The git module (engine/git/) is built as a shared object linked with
 * libgit2 and carried in beat's binary as bytes (build/git_blob.c, see the
 * Makefile). luaopen_beat__git here writes it once into a sealed memfd and
 * dlopens it from /proc/self/fd/N, so libgit2 and the ~17 libraries it
 * brings (mbedTLS, libssh2, Kerberos, ...) are mapped, relocated and
 * initialised only by commands that use git: `beat version`, `beat --help`
 * and recipes without git start without them. Where a memfd cannot be
 * opened by path (no /proc), the bytes go to a temp file, removed once
 * loaded.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "runtime.h"

extern const unsigned char beat_git_blob[];
extern const size_t beat_git_blob_size;

static int write_all(int fd, const unsigned char *data, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, data, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        data += w;
        n -= (size_t)w;
    }
    return 0;
}

/* dlopens the embedded object; NULL with the reason in why. */
static void *load(char *why, size_t cap)
{
    char path[PATH_MAX];
    void *h = NULL;
    int fd = memfd_create("beat-git.so", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd >= 0) {
        if (write_all(fd, beat_git_blob, beat_git_blob_size) == 0) {
            fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
            snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
            h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        }
        close(fd); /* the mapping stays */
        if (h != NULL)
            return h;
    }
    {
        const char *tmp = getenv("TMPDIR");
        snprintf(path, sizeof path, "%s/beat-git-XXXXXX.so", tmp && *tmp ? tmp : "/tmp");
        fd = mkostemps(path, 3, O_CLOEXEC);
        if (fd < 0) {
            snprintf(why, cap, "%s: %s", path, strerror(errno));
            return NULL;
        }
        if (write_all(fd, beat_git_blob, beat_git_blob_size) != 0) {
            snprintf(why, cap, "%s: %s", path, strerror(errno));
        } else {
            h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
            if (h == NULL)
                snprintf(why, cap, "%s", dlerror());
        }
        close(fd);
        unlink(path);
    }
    return h;
}

int luaopen_beat__git(lua_State *L)
{
    static lua_CFunction open;
    if (open == NULL) {
        char why[PATH_MAX + 128];
        void *h = load(why, sizeof why);
        if (h == NULL)
            return luaL_error(L, "beat: cannot load the git module: %s", why);
        open = (lua_CFunction)(void (*)(void))dlsym(h, "luaopen_beat__git");
        if (open == NULL)
            return luaL_error(L, "beat: the git module has no luaopen_beat__git");
    }
    return open(L);
}
