/*
 * stdio.c: standard streams for long-running servers (`beat mcp start`),
 * driven by the event loop. lua/beat/stdio.lua is the public face: it turns
 * the callbacks into a line queue a task reads from.
 *
 * reader(fd, max_line, fn) reads lines of fd without blocking the loop:
 *   fn(line)                          a line, without its "\n"
 *   fn(nil, "too long", size, head)   a line longer than max_line bytes: its
 *                                     bytes were dropped as they arrived, so
 *                                     memory stays bounded; head is its first
 *                                     bytes (to find a request id in)
 *   fn(nil)                           end of input (after a last unterminated line)
 *   fn(nil, "read: why")              a read error; nothing follows
 * Pipes, sockets and terminals are read as libuv streams; regular files and
 * /dev/null with uv_fs_read on the thread pool. The reader works on a
 * duplicate of fd, so closing it never closes fd itself.
 *
 * write(fd, data) writes every byte before returning (waiting with poll when
 * fd is non-blocking), so messages written one call each are never
 * interleaved or cut. claim(fd, with) moves fd to a private descriptor and
 * points fd at `with`: a server keeps its protocol channel to itself and
 * anything else printed to fd goes to `with` instead.
 *
 * Failures of the world return nil, "what: why" (+ errno where the OS gave
 * one); wrong argument types raise.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

#define HEAD_MAX 1024           /* bytes kept of a dropped line */
#define SHRINK_ABOVE (1 << 20)  /* a line buffer grown past this is freed after use */

enum { KIND_STREAM, KIND_FILE };

typedef struct {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_pipe_t pipe;
        uv_tty_t tty;
    } h;
    uv_fs_t req;
    lua_State *L;
    int kind, fd;
    int fn_ref;
    int reading;      /* the Lua side wants data (start/stop) */
    int req_pending;  /* file: a uv_fs_read is in flight */
    int in_cb;        /* file: the read callback is running */
    int finished;     /* end of input or an error was delivered */
    int closed;       /* close() was called */
    size_t max;
    char *line;       /* the partial line */
    size_t len, cap;
    size_t dropped;   /* > 0 while dropping a line that is too long: its size so far */
    char head[HEAD_MAX];
    size_t head_len;
    char buf[64 * 1024];
} reader;

typedef struct {
    reader *r; /* NULL once closed */
} reader_box;

static reader_box *checkreader(lua_State *L)
{
    return luaL_checkudata(L, 1, "beat.stdio.reader");
}

static void reader_free(reader *r)
{
    free(r->line);
    free(r);
}

static void on_handle_closed(uv_handle_t *h)
{
    reader_free(h->data);
}

/* Calls fn with the nargs values on top of the stack, unless closed. */
static void deliver(reader *r, int nargs)
{
    if (r->closed || r->fn_ref == LUA_NOREF) {
        lua_pop(r->L, nargs);
        return;
    }
    beat_call_ref(r->L, r->fn_ref, nargs);
}

static void emit_line(reader *r, const char *s, size_t n)
{
    lua_pushlstring(r->L, s, n);
    deliver(r, 1);
}

static void emit_dropped(reader *r)
{
    lua_State *L = r->L;
    lua_pushnil(L);
    lua_pushliteral(L, "too long");
    lua_pushinteger(L, (lua_Integer)r->dropped);
    lua_pushlstring(L, r->head, r->head_len);
    r->dropped = 0;
    r->head_len = 0;
    deliver(r, 4);
}

static void keep_head(reader *r, const char *s, size_t n)
{
    size_t k = HEAD_MAX - r->head_len;
    if (k > n)
        k = n;
    if (k == 0) /* s may be NULL then (no line buffer yet) */
        return;
    memcpy(r->head + r->head_len, s, k);
    r->head_len += k;
}

/* Starts dropping the current line: its first bytes are kept for the
 * report, the rest is counted and forgotten. */
static void start_dropping(reader *r, const char *s, size_t k)
{
    r->head_len = 0;
    keep_head(r, r->line, r->len);
    keep_head(r, s, k);
    r->dropped = r->len + k;
    r->len = 0;
    free(r->line);
    r->line = NULL;
    r->cap = 0;
}

static int append(reader *r, const char *s, size_t k)
{
    if (r->len + k > r->cap) {
        size_t cap = r->cap ? r->cap : 256;
        char *grown;
        while (cap < r->len + k)
            cap *= 2;
        if (cap > r->max)
            cap = r->max;
        grown = realloc(r->line, cap);
        if (grown == NULL)
            return 0;
        r->line = grown;
        r->cap = cap;
    }
    memcpy(r->line + r->len, s, k);
    r->len += k;
    return 1;
}

/* Splits data into lines; stops as soon as the reader is closed. */
static void feed(reader *r, const char *p, size_t n)
{
    while (n > 0 && !r->closed) {
        const char *nl = memchr(p, '\n', n);
        size_t k = nl ? (size_t)(nl - p) : n;
        if (r->dropped > 0) {
            r->dropped += k;
        } else if (r->len + k > r->max) {
            start_dropping(r, p, k);
        } else if (nl != NULL && r->len == 0) {
            emit_line(r, p, k); /* the whole line is in this chunk: no copy */
        } else if (!append(r, p, k)) {
            start_dropping(r, p, k); /* out of memory: drop it like a line too long */
        } else if (nl != NULL) {
            size_t len = r->len;
            r->len = 0;
            emit_line(r, r->line, len);
            if (r->cap > SHRINK_ABOVE) {
                free(r->line);
                r->line = NULL;
                r->cap = 0;
            }
        }
        if (nl != NULL) {
            if (r->dropped > 0)
                emit_dropped(r);
            k++;
        }
        p += k;
        n -= k;
    }
}

/* End of input: the last unterminated line, then fn(nil); or fn(nil, err). */
static void finish(reader *r, int status)
{
    lua_State *L = r->L;
    r->finished = 1;
    if (status == 0) {
        if (r->dropped > 0)
            emit_dropped(r);
        else if (r->len > 0) {
            size_t len = r->len;
            r->len = 0;
            emit_line(r, r->line, len);
        }
        lua_pushnil(L);
        deliver(r, 1);
    } else {
        lua_pushnil(L);
        lua_pushfstring(L, "read: %s", uv_strerror(status));
        deliver(r, 2);
    }
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    reader *r = h->data;
    (void)suggested;
    buf->base = r->buf;
    buf->len = sizeof r->buf;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    reader *r = s->data;
    if (nread > 0)
        feed(r, buf->base, (size_t)nread);
    if (nread < 0) {
        uv_read_stop(s);
        r->reading = 0;
        finish(r, nread == UV_EOF ? 0 : (int)nread);
    }
}

static int file_read_next(reader *r);

static void on_file_read(uv_fs_t *req)
{
    reader *r = req->data;
    ssize_t n = req->result;
    uv_fs_req_cleanup(req);
    r->req_pending = 0;
    r->in_cb = 1;
    if (!r->closed) {
        if (n > 0)
            feed(r, r->buf, (size_t)n);
        else
            finish(r, n == 0 ? 0 : (int)n);
    }
    r->in_cb = 0;
    if (r->closed) {
        close(r->fd);
        reader_free(r);
        return;
    }
    if (r->reading && !r->finished && (n = file_read_next(r)) != 0)
        finish(r, (int)n);
}

/* Queues the next read of a file; 0 or a libuv error. */
static int file_read_next(reader *r)
{
    uv_buf_t b = uv_buf_init(r->buf, sizeof r->buf);
    int rc;
    r->req.data = r;
    rc = uv_fs_read(beat_loop(r->L), &r->req, r->fd, &b, 1, -1, on_file_read);
    if (rc == 0)
        r->req_pending = 1;
    return rc;
}

/* Starts (or resumes) reading; 0 or a libuv error, after which the reader
 * is finished without a callback (the caller reports it). */
static int start_reading(reader *r)
{
    int rc = 0;
    if (r->reading || r->finished)
        return 0;
    r->reading = 1;
    if (r->kind == KIND_STREAM)
        rc = uv_read_start(&r->h.stream, alloc_cb, on_read);
    else if (!r->req_pending && !r->in_cb)
        rc = file_read_next(r);
    if (rc != 0) {
        r->reading = 0;
        r->finished = 1;
    }
    return rc;
}

/* reader:start() -> true | nil, err: reads again after reader:stop() (the
 * first start is done by stdio.reader). Does nothing after end of input. */
static int reader_start(lua_State *L)
{
    reader_box *b = checkreader(L);
    int rc;
    if (b->r == NULL)
        return luaL_error(L, "reader is closed");
    rc = start_reading(b->r);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "read: %s", uv_strerror(rc));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* reader:stop(): no more reads until start(); lines of data already read
 * are still delivered. */
static int reader_stop(lua_State *L)
{
    reader_box *b = checkreader(L);
    reader *r = b->r;
    if (r == NULL || !r->reading)
        return 0;
    r->reading = 0;
    if (r->kind == KIND_STREAM)
        uv_read_stop(&r->h.stream);
    return 0;
}

/* reader:close() (also __gc, __close): no callback runs after it; the
 * duplicate descriptor is closed and the memory freed once libuv is done
 * with it. Idempotent. */
static int reader_close(lua_State *L)
{
    reader_box *b = checkreader(L);
    reader *r = b->r;
    if (r == NULL)
        return 0;
    b->r = NULL;
    r->closed = 1;
    r->reading = 0;
    luaL_unref(L, LUA_REGISTRYINDEX, r->fn_ref);
    r->fn_ref = LUA_NOREF;
    if (r->kind == KIND_STREAM) {
        uv_close(&r->h.handle, on_handle_closed);
    } else if (!r->req_pending && !r->in_cb) {
        close(r->fd);
        reader_free(r);
    } /* else freed when the pending read or the running callback ends */
    return 0;
}

/* stdio.reader(fd, max_line, fn) -> reader | nil, err: starts reading fd
 * (see the top of the file). max_line >= 1 bounds the memory one line may
 * take. */
static int l_reader(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    lua_Integer max = luaL_checkinteger(L, 2);
    reader_box *b;
    reader *r;
    uv_handle_type type;
    int dupfd, rc;
    luaL_checktype(L, 3, LUA_TFUNCTION);
    luaL_argcheck(L, fd >= 0, 1, "must be a file descriptor");
    luaL_argcheck(L, max >= 1, 2, "must be at least 1");

    b = lua_newuserdatauv(L, sizeof *b, 0);
    b->r = NULL;
    luaL_setmetatable(L, "beat.stdio.reader");

    type = uv_guess_handle(fd);
    if (type != UV_NAMED_PIPE && type != UV_TTY && type != UV_FILE) {
        lua_pushnil(L);
        lua_pushfstring(L, "fd %d: not a pipe, socket, terminal or file", fd);
        return 2;
    }
    dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dupfd < 0)
        return luaL_fileresult(L, 0, "dup");
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        close(dupfd);
        return luaL_error(L, "out of memory");
    }
    r->L = beat_main_thread(L);
    r->fd = dupfd;
    r->max = (size_t)max;
    r->fn_ref = LUA_NOREF;
    if (type == UV_FILE) {
        r->kind = KIND_FILE;
    } else if (type == UV_TTY) {
        r->kind = KIND_STREAM;
        rc = uv_tty_init(beat_loop(L), &r->h.tty, dupfd, 1);
        if (rc != 0) { /* failed before the handle joined the loop */
            free(r);
            close(dupfd);
            lua_pushnil(L);
            lua_pushfstring(L, "fd %d: %s", fd, uv_strerror(rc));
            return 2;
        }
    } else {
        r->kind = KIND_STREAM;
        uv_pipe_init(beat_loop(L), &r->h.pipe, 0);
        r->h.handle.data = r;
        rc = uv_pipe_open(&r->h.pipe, dupfd);
        if (rc != 0) { /* the handle does not own dupfd; it frees r when closed */
            uv_close(&r->h.handle, on_handle_closed);
            close(dupfd);
            lua_pushnil(L);
            lua_pushfstring(L, "fd %d: %s", fd, uv_strerror(rc));
            return 2;
        }
    }
    r->h.handle.data = r;
    lua_pushvalue(L, 3);
    r->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    b->r = r;
    rc = start_reading(r);
    if (rc != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "fd %d: %s", fd, uv_strerror(rc));
        return 2; /* the userdata closes the reader when collected */
    }
    return 1;
}

/* stdio.write(fd, data) -> true | nil, err, errno: every byte is written
 * before it returns, in one piece as far as this process is concerned. */
static int l_write(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w >= 0) {
            s += w;
            n -= (size_t)w;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            struct pollfd p = {fd, POLLOUT, 0};
            poll(&p, 1, -1);
        } else if (errno != EINTR) {
            return luaL_fileresult(L, 0, "write");
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* stdio.claim(fd, with) -> newfd | nil, err, errno: newfd (close-on-exec)
 * now refers to what fd referred to, and fd to what `with` refers to. */
static int l_claim(lua_State *L)
{
    int fd = (int)luaL_checkinteger(L, 1);
    int with = (int)luaL_checkinteger(L, 2);
    int keep = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (keep < 0)
        return luaL_fileresult(L, 0, "claim");
    if (dup2(with, fd) < 0) {
        int e = errno;
        close(keep);
        errno = e;
        return luaL_fileresult(L, 0, "claim");
    }
    lua_pushinteger(L, keep);
    return 1;
}

static const luaL_Reg reader_meth[] = {
    {"start", reader_start},
    {"stop", reader_stop},
    {"close", reader_close},
    {NULL, NULL}
};

static const luaL_Reg funcs[] = {
    {"reader", l_reader},
    {"write", l_write},
    {"claim", l_claim},
    {NULL, NULL}
};

int luaopen_beat__stdio(lua_State *L)
{
    luaL_newmetatable(L, "beat.stdio.reader");
    luaL_newlib(L, reader_meth);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, reader_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, reader_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
