/*
 * fs.c: the few file operations Lua's io library cannot do safely:
 * durable writes (fsync), atomic replace, directories, temp dirs, locks,
 * files that live in memory.
 * Failures of the world return nil, "path: why", errno (luaL_fileresult).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fs.h"
#include "runtime.h"

/* Best effort: makes a rename in path's directory durable. */
static void fsync_parent(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    int fd;
    if (slash == NULL)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* fs.write(path, data, durable): the file holds either its old or its new
 * content, never a mix, and (unless durable is false) the new content is on
 * disk when this returns. */
static int fs_write(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    int durable = lua_isnoneornil(L, 3) || lua_toboolean(L, 3);
    const char *tmp = lua_pushfstring(L, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return luaL_fileresult(L, 0, tmp);
    if (fs_write_all(fd, data, n) != 0 || (durable && fsync(fd) != 0)) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return luaL_fileresult(L, 0, path);
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return luaL_fileresult(L, 0, path);
    }
    if (durable)
        fsync_parent(path);
    return luaL_fileresult(L, 1, NULL);
}

/* A file's state as one string: device, inode, size and mtime. A writer
 * cannot change the content without changing the size or the mtime, as
 * long as the mtime was set to a time no write can give it (mark). */
static int push_stamp(lua_State *L, const struct stat *st)
{
    /* the five numbers as bytes: compared, never shown, so not formatted */
    int64_t v[5] = {(int64_t)st->st_dev, (int64_t)st->st_ino, (int64_t)st->st_size,
                    (int64_t)st->st_mtim.tv_sec, (int64_t)st->st_mtim.tv_nsec};
    lua_pushlstring(L, (const char *)v, sizeof v);
    lua_pushinteger(L, (lua_Integer)st->st_size);
    return 2;
}

/* The mtime a mark sets: a whole second, one second ago. Every write after
 * it sets the mtime to its own time, later than that, on file systems that
 * keep nanoseconds and on those that keep whole seconds alike. */
static void mark_time(struct timespec ts[2])
{
    clock_gettime(CLOCK_REALTIME, &ts[1]);
    ts[1].tv_sec -= 1;
    ts[1].tv_nsec = 0;
    ts[0].tv_sec = 0;
    ts[0].tv_nsec = UTIME_OMIT;
}

/*
 * The fsync that runs behind beat (fs.append with durable = "later"): the
 * data is written here and the file's fsync is handed to a thread of its
 * own, so that beat goes on while the disk takes the write (~0.4 ms on
 * the development VM, once per iteration of a loop). One at a time: the
 * next one, fs.settle() and the process's exit wait for it first. A failed
 * one is reported once, by the next of these.
 */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started;   /* the thread runs (or could not be started: -1) */
    int fd;        /* handed over, not yet taken; -1: none */
    int busy;      /* handed over or being synced */
    int err;       /* errno of one that failed, not yet reported; 0 */
    char path[PATH_MAX];
} syncer = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, -1, 0, 0, ""};

static void *syncer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&syncer.mu);
    for (;;) {
        while (syncer.fd < 0)
            pthread_cond_wait(&syncer.cv, &syncer.mu);
        int fd = syncer.fd;
        syncer.fd = -1;
        pthread_mutex_unlock(&syncer.mu);
        int e = fsync(fd) == 0 ? 0 : errno;
        close(fd);
        pthread_mutex_lock(&syncer.mu);
        syncer.err = e;
        syncer.busy = 0;
        pthread_cond_broadcast(&syncer.cv);
    }
    return NULL;
}

/* Waits until no fsync is handed over or running; returns the errno of one
 * that failed (its path in syncer.path), once, or 0. */
static int syncer_wait(void)
{
    pthread_mutex_lock(&syncer.mu);
    while (syncer.busy)
        pthread_cond_wait(&syncer.cv, &syncer.mu);
    int e = syncer.err;
    syncer.err = 0;
    pthread_mutex_unlock(&syncer.mu);
    return e;
}

/* beat does not exit with a journal record still on its way to the disk. */
static void syncer_at_exit(void)
{
    syncer_wait();
}

/* Hands fd (owned from now on) to the thread; fsyncs and closes it here
 * when the thread cannot be started. 0, or -1 with errno. */
static int syncer_hand(int fd, const char *path)
{
    if (syncer.started == 0) {
        pthread_t t;
        syncer.started = beat_thread_start(&t, syncer_main, NULL) == 0 ? 1 : -1;
        if (syncer.started > 0) {
            pthread_detach(t);
            atexit(syncer_at_exit);
        }
    }
    if (syncer.started < 0) {
        int rc = fsync(fd);
        int e = errno;
        close(fd);
        errno = e;
        return rc;
    }
    pthread_mutex_lock(&syncer.mu);
    snprintf(syncer.path, sizeof syncer.path, "%s", path);
    syncer.fd = fd;
    syncer.busy = 1;
    pthread_cond_broadcast(&syncer.cv);
    pthread_mutex_unlock(&syncer.mu);
    return 0;
}

/* Pushes nil, "path: why", errno for an fsync that failed behind beat. */
static int syncer_failed(lua_State *L, int e)
{
    char path[PATH_MAX];
    pthread_mutex_lock(&syncer.mu);
    snprintf(path, sizeof path, "%s", syncer.path);
    pthread_mutex_unlock(&syncer.mu);
    errno = e;
    return luaL_fileresult(L, 0, path);
}

/* fs.settle() -> true | nil, "path: why", errno: waits for the fsync
 * running behind beat, if any, and says whether it (or an earlier one not
 * yet reported) failed. */
static int fs_settle(lua_State *L)
{
    int e = syncer_wait();
    if (e)
        return syncer_failed(L, e);
    lua_pushboolean(L, 1);
    return 1;
}

/* fs.append(path, data, durable, mark): appends in one write(2) to an
 * O_APPEND file; with durable, fsync before returning (the journal's
 * guarantee); with durable = "later", the fsync is handed to the thread
 * above and runs while beat goes on. Either first waits for the one
 * running behind beat, and fails, writing nothing, when that one failed.
 * With mark, sets the mark mtime (see fs.stamp) and returns the file's
 * stamp and size after the write. */
static int fs_append(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t n;
    const char *data = luaL_checklstring(L, 2, &n);
    int later = lua_type(L, 3) == LUA_TSTRING;
    int durable = lua_toboolean(L, 3);
    int mark = lua_toboolean(L, 4);
    struct stat st;
    /* none, nil or a boolean, or "later" */
    luaL_argcheck(L, lua_type(L, 3) <= LUA_TBOOLEAN || (later && strcmp(lua_tostring(L, 3), "later") == 0),
        3, "must be a boolean or \"later\"");
    if (durable) {
        int e = syncer_wait();
        if (e)
            return syncer_failed(L, e);
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return luaL_fileresult(L, 0, path);
    if (fs_write_all(fd, data, n) != 0 || (durable && !later && fsync(fd) != 0))
        goto fail;
    if (mark) {
        struct timespec ts[2];
        mark_time(ts);
        if (futimens(fd, ts) != 0 || fstat(fd, &st) != 0)
            goto fail;
    }
    if (later) {
        if (syncer_hand(fd, path) != 0)
            return luaL_fileresult(L, 0, path);
    } else {
        close(fd);
    }
    return mark ? push_stamp(L, &st) : luaL_fileresult(L, 1, NULL);
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return luaL_fileresult(L, 0, path);
}

/* fs.stamp(path, mark) -> stamp, size | nil, err: the state of a file as a
 * string that changes whenever the file is replaced or written (device,
 * inode, size, mtime; lstat). With mark, the mtime is first set to a time
 * no later write can give the file (a whole second, one second ago), so a
 * write of the same size in the same clock tick changes the stamp too. */
static int fs_stamp(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (lua_toboolean(L, 2)) {
        struct timespec ts[2];
        mark_time(ts);
        if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) != 0)
            return luaL_fileresult(L, 0, path);
    }
    if (lstat(path, &st) != 0)
        return luaL_fileresult(L, 0, path);
    return push_stamp(L, &st);
}

/* fs.mkdir_p(path): creates path and its missing parents. */
static int fs_mkdir_p(lua_State *L)
{
    size_t len;
    const char *path = luaL_checklstring(L, 1, &len);
    char buf[PATH_MAX];
    if (len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return luaL_fileresult(L, 0, path);
    }
    {
        struct stat st;  /* there already: one stat, not a mkdir per component */
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
            return luaL_fileresult(L, 1, NULL);
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                return luaL_fileresult(L, 0, buf);
            *p = c;
            if (c == '\0')
                break;
        }
    }
    {
        struct stat st;
        if (stat(path, &st) != 0)
            return luaL_fileresult(L, 0, path);
        if (!S_ISDIR(st.st_mode)) {
            errno = ENOTDIR;
            return luaL_fileresult(L, 0, path);
        }
    }
    return luaL_fileresult(L, 1, NULL);
}

/* fs.mkdir(path) -> true | nil, err, errno: one directory; an existing one
 * is an error (EEXIST), so two processes never both think they created it. */
static int fs_mkdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    return luaL_fileresult(L, mkdir(path, 0755) == 0, path);
}

/* fs.stat(path) -> {type=, size=, mode=, mtime=} | nil, err (lstat: links
 * are reported as links). */
static int fs_stat(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    const char *type;
    if (lstat(path, &st) != 0)
        return luaL_fileresult(L, 0, path);
    type = S_ISREG(st.st_mode) ? "file" : S_ISDIR(st.st_mode) ? "directory"
         : S_ISLNK(st.st_mode) ? "link" : "other";
    lua_createtable(L, 0, 4);
    lua_pushstring(L, type);
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st.st_size);
    lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
    lua_setfield(L, -2, "mode");
    lua_pushnumber(L, (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9);
    lua_setfield(L, -2, "mtime");
    return 1;
}

/* fs.access(path, "x"|"r"|"w") -> boolean. */
static int fs_access(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    const char *how = luaL_optstring(L, 2, "r");
    int mode = strchr(how, 'x') ? X_OK : strchr(how, 'w') ? W_OK : R_OK;
    lua_pushboolean(L, access(path, mode) == 0);
    return 1;
}

/* Closes a file made by fs_memfile (the io library's closef for it). */
static int memfile_close(lua_State *L)
{
    luaL_Stream *p = (luaL_Stream *)luaL_checkudata(L, 1, LUA_FILEHANDLE);
    int ok = fclose(p->f) == 0;
    return luaL_fileresult(L, ok, NULL);
}

/* memfile() -> file: an io library file, read and write, with no name and
 * no inode on any disk (memfd_create: its pages live in memory as shmem,
 * outside the process's heap). Falls back to io.tmpfile()'s kind of file
 * where memfd_create is refused. Creating and dropping one costs nothing
 * on a file system where creating and deleting files is slow. */
static int fs_memfile(lua_State *L)
{
    luaL_Stream *p = (luaL_Stream *)lua_newuserdatauv(L, sizeof(luaL_Stream), 0);
    int fd;
    p->closef = NULL;  /* not a valid file until it is opened */
    luaL_setmetatable(L, LUA_FILEHANDLE);
    fd = memfd_create("beat-copy", MFD_CLOEXEC);
    p->f = fd >= 0 ? fdopen(fd, "w+b") : tmpfile();
    if (p->f == NULL) {
        int err = errno;
        if (fd >= 0)
            close(fd);
        errno = err;
        return luaL_fileresult(L, 0, "memfile");
    }
    p->closef = memfile_close;
    return 1;
}

/* fs.tmpdir(prefix) -> path of a new private directory under $TMPDIR. */
static int fs_tmpdir(lua_State *L)
{
    const char *prefix = luaL_optstring(L, 1, "beat");
    const char *base = getenv("TMPDIR");
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s/%s-XXXXXX", base && *base ? base : "/tmp", prefix);
    if (mkdtemp(buf) == NULL)
        return luaL_fileresult(L, 0, buf);
    lua_pushstring(L, buf);
    return 1;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) != 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* fs.rm_rf(path): removes a file or a tree; links are removed, never followed. */
static int fs_rm_rf(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    struct stat st;
    if (lstat(path, &st) != 0)
        return luaL_fileresult(L, errno == ENOENT, path);
    if (nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS) != 0)
        return luaL_fileresult(L, 0, path);
    return luaL_fileresult(L, 1, NULL);
}

/* fs.realpath(path) -> absolute path without links | nil, err, errno. */
static int fs_realpath(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    char buf[PATH_MAX];
    if (realpath(path, buf) == NULL)
        return luaL_fileresult(L, 0, path);
    lua_pushstring(L, buf);
    return 1;
}

/* fs.cwd() -> the current directory | nil, err, errno. */
static int fs_cwd(lua_State *L)
{
    char buf[PATH_MAX];
    if (getcwd(buf, sizeof buf) == NULL)
        return luaL_fileresult(L, 0, ".");
    lua_pushstring(L, buf);
    return 1;
}

/* fs.chdir(path) -> true | nil, err: the process's working directory
 * (a resumed `beat loop` runs where it was first started). */
static int fs_chdir(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    return luaL_fileresult(L, chdir(path) == 0, path);
}

/* fs.list(dir) -> sorted list of entry names (no "." or "..") | nil, err. */
static int fs_list(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    DIR *d = opendir(path);
    struct dirent *e;
    lua_Integer n = 0;
    if (d == NULL)
        return luaL_fileresult(L, 0, path);
    lua_newtable(L);
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

/* ------------------------------------------------------------------------ */
/* locks                                                                     */

#define LOCK_MT "beat.fs.lock"

typedef struct {
    int fd;  /* -1 once released */
} flocker;

/* lock:release() — idempotent; also __gc and __close.  The recorded text
 * is cleared; the kernel lock goes with the descriptor. */
static int lock_release(lua_State *L)
{
    flocker *k = luaL_checkudata(L, 1, LOCK_MT);
    if (k->fd >= 0) {
        if (ftruncate(k->fd, 0) < 0) {
            /* the kernel lock goes with the close below anyway */
        }
        close(k->fd);
        k->fd = -1;
    }
    return 0;
}

/* lock:held() -> whether this object still holds the lock */
static int lock_held(lua_State *L)
{
    flocker *k = luaL_checkudata(L, 1, LOCK_MT);
    lua_pushboolean(L, k->fd >= 0);
    return 1;
}

/* Replaces the lock file's content with text; 0, or -1 with errno set. */
static int record(int fd, const char *text, size_t len)
{
    if (ftruncate(fd, 0) < 0)
        return -1;
    if (pwrite(fd, text, len, 0) != (ssize_t)len) {
        if (errno == 0)
            errno = EIO;
        return -1;
    }
    return 0;
}

/* lock:record(text) -> true | nil, err, errno: replaces what the lock file
 * says about its holder (the lock stays held).  Raises when released. */
static int lock_record(lua_State *L)
{
    flocker *k = luaL_checkudata(L, 1, LOCK_MT);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    if (k->fd < 0)
        return luaL_error(L, "beat.fs: lock:record on a released lock");
    return luaL_fileresult(L, record(k->fd, text, len) == 0, "lock");
}

/*
 * fs.lock(path, text) -> lock | nil, "path: why", errno
 * An flock(2) on path, which the kernel drops when the holder exits however
 * it exits, so a lock is never stale.  The file (created if missing, never
 * removed, so two processes cannot lock two different inodes) then holds
 * text, for whoever is refused to read.  A lock held elsewhere gives errno
 * EWOULDBLOCK.  The descriptor is close-on-exec: children do not inherit
 * the lock.  The object exists, released, before the file is opened.
 */
static int fs_lock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    flocker *k = lua_newuserdatauv(L, sizeof *k, 0);
    int fd;
    k->fd = -1;
    luaL_setmetatable(L, LOCK_MT);
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return luaL_fileresult(L, 0, path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0 || record(fd, text, len) < 0) {
        int err = errno;
        close(fd);
        errno = err;
        return luaL_fileresult(L, 0, path);
    }
    k->fd = fd;
    return 1;
}

static const luaL_Reg lock_meth[] = {
    {"release", lock_release},
    {"held", lock_held},
    {"record", lock_record},
    {NULL, NULL}
};

static const luaL_Reg lock_mt[] = {
    {"__gc", lock_release},
    {"__close", lock_release},
    {"__index", NULL},
    {NULL, NULL}
};

static const luaL_Reg funcs[] = {
    {"list", fs_list},
    {"write", fs_write},
    {"append", fs_append},
    {"settle", fs_settle},
    {"stamp", fs_stamp},
    {"mkdir", fs_mkdir},
    {"mkdir_p", fs_mkdir_p},
    {"stat", fs_stat},
    {"access", fs_access},
    {"tmpdir", fs_tmpdir},
    {"memfile", fs_memfile},
    {"rm_rf", fs_rm_rf},
    {"realpath", fs_realpath},
    {"cwd", fs_cwd},
    {"chdir", fs_chdir},
    {"lock", fs_lock},
    {NULL, NULL}
};

/* beat._fs: the functions above, the lock class, and fs.errno. */
int luaopen_beat__fs(lua_State *L)
{
    luaL_newmetatable(L, LOCK_MT);
    luaL_setfuncs(L, lock_mt, 0);
    luaL_newlib(L, lock_meth);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    /* the errno values callers tell apart */
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, EEXIST);
    lua_setfield(L, -2, "EEXIST");
    lua_pushinteger(L, ENOENT);
    lua_setfield(L, -2, "ENOENT");
    lua_pushinteger(L, EWOULDBLOCK);
    lua_setfield(L, -2, "EWOULDBLOCK");
    lua_setfield(L, -2, "errno");
    return 1;
}
