/*
 * exec_io.c: the pipes between beat and a child of exec.c, and what flows
 * through them: output captured with bounded memory (the first and last
 * max/2 bytes), split into lines for a Lua function, or handed to the child
 * as a file; the child's stdin written in order and closed once flushed.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "runtime.h"

/* Pushes what a "capture" stream kept, as one string: the first max/2
 * bytes, a note of how many were dropped, the last max/2 in order; nil for
 * any other mode. */
void exec_push_captured(lua_State *L, stream *s)
{
    luaL_Buffer b;
    if (s->mode != OUT_CAPTURE) {
        lua_pushnil(L);
        return;
    }
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, s->head, s->head_len);
    if (s->total > s->head_len + s->tail_len) {
        char note[96];
        snprintf(note, sizeof note, "\n... [%zu bytes truncated] ...\n",
                 s->total - s->head_len - s->tail_len);
        luaL_addstring(&b, note);
    }
    if (s->tail_len < s->max / 2 || s->tail_pos == 0) {
        luaL_addlstring(&b, s->tail, s->tail_len);
    } else { /* the ring wrapped: oldest bytes start at tail_pos */
        luaL_addlstring(&b, s->tail + s->tail_pos, s->tail_len - s->tail_pos);
        luaL_addlstring(&b, s->tail, s->tail_pos);
    }
    luaL_pushresult(&b);
}


/* One scratch buffer serves every read: libuv calls the read callback
 * right after filling it, on this thread, and the callback consumes it. */
static char read_buf[64 * 1024];

void exec_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = read_buf;
    buf->len = sizeof read_buf;
}

/* Keeps the first max/2 bytes of the stream in head and the last max/2 in
 * the ring tail, whatever the size of the chunks: memory stays max bytes.
 * Both are allocated as output comes (head grown by doubling, the tail at
 * once when head is full), so a command that prints little costs little;
 * bytes that find no memory are dropped and the result says truncated. */
static void capture(stream *s, const char *data, size_t n)
{
    size_t half = s->max / 2, room = half - s->head_len;
    if (room > 0) {
        size_t k = n < room ? n : room;
        if (s->head_len + k > s->head_cap) {
            size_t cap = s->head_cap ? s->head_cap * 2 : 4096;
            char *grown;
            while (cap < s->head_len + k)
                cap *= 2;
            if (cap > half)
                cap = half;
            grown = realloc(s->head, cap);
            if (grown == NULL) {
                s->lost = 1;
                return;
            }
            s->head = grown;
            s->head_cap = cap;
        }
        memcpy(s->head + s->head_len, data, k);
        s->head_len += k;
        data += k;
        n -= k;
    }
    if (half == 0 || n == 0)
        return;
    if (s->tail == NULL && (s->tail = malloc(half)) == NULL) {
        s->lost = 1;
        return;
    }
    if (n >= half) { /* the chunk alone fills the tail */
        memcpy(s->tail, data + n - half, half);
        s->tail_len = half;
        s->tail_pos = 0;
        return;
    }
    while (n > 0) {
        size_t k = half - s->tail_pos;
        if (k > n)
            k = n;
        memcpy(s->tail + s->tail_pos, data, k);
        s->tail_pos = (s->tail_pos + k) % half;
        if (s->tail_len < half)
            s->tail_len = s->tail_len + k > half ? half : s->tail_len + k;
        data += k;
        n -= k;
    }
}

/* Calls the stream's Lua function with one line (a trailing \r dropped),
 * protected; the first error is kept for the result and the command is
 * sent SIGTERM, and no later line is delivered. */
static void emit_line(stream *s, const char *data, size_t n)
{
    proc *p = s->p;
    lua_State *L = p->L;
    if (p->cb_error != NULL)
        return;
    if (n > 0 && data[n - 1] == '\r')
        n--;
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->fn_ref);
    lua_pushlstring(L, data, n);
    if (beat_pcall(L, 1, 0) != LUA_OK) {
        p->cb_error = strdup(lua_tostring(L, -1));
        lua_pop(L, 1);
        kill(p->pid, SIGTERM);
    }
}

/* Splits the stream into lines; a line longer than max is cut into pieces
 * of max bytes, so memory stays bounded whatever the command prints. */
static void split_lines(stream *s, const char *data, size_t n)
{
    while (n > 0) {
        const char *nl = memchr(data, '\n', n);
        size_t k = nl ? (size_t)(nl - data) : n;
        if (s->line_len == 0 && nl != NULL) {
            emit_line(s, data, k);
        } else {
            if (s->line_len + k > s->line_cap) {
                size_t cap = s->line_len + k;
                char *grown = realloc(s->line, cap);
                if (grown == NULL)
                    return;
                s->line = grown;
                s->line_cap = cap;
            }
            memcpy(s->line + s->line_len, data, k);
            s->line_len += k;
            if (nl != NULL || s->line_len >= s->max) {
                emit_line(s, s->line, s->line_len);
                s->line_len = 0;
            }
        }
        data += k + (nl != NULL);
        n -= k + (nl != NULL);
    }
}

/* A chunk of output (captured or split into lines) or the end of the
 * stream: a partial last line is delivered, then the proc may complete. */
void exec_on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    stream *s = h->data;
    if (nread > 0) {
        s->total += (size_t)nread;
        if (s->mode == OUT_CAPTURE)
            capture(s, buf->base, (size_t)nread);
        else
            split_lines(s, buf->base, (size_t)nread);
    }
    if (nread < 0) {
        if (s->mode == OUT_LINES && s->line_len > 0) {
            emit_line(s, s->line, s->line_len);
            s->line_len = 0;
        }
        uv_read_stop(h);
        s->open = 0;
        exec_maybe_complete(s->p);
    }
}

typedef struct {
    uv_write_t req;
    char *data;
} write_req;

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    free(req);
}

/* Closes the child's stdin once the writes queued before are flushed;
 * does nothing when stdin is not a pipe. */
void exec_close_stdin(proc *p)
{
    uv_shutdown_t *req;
    if (!p->in_open)
        return;
    req = malloc(sizeof *req);
    if (req == NULL || uv_shutdown(req, (uv_stream_t *)&p->in, on_shutdown) != 0)
        free(req);
}

static void on_written(uv_write_t *req, int status)
{
    write_req *w = (write_req *)req;
    (void)status; /* EPIPE: the command did not read its input; not an error */
    free(w->data);
    free(w);
}

/* Queues data on the child's stdin; libuv keeps the order of writes and
 * copies the buffer list, the bytes stay alive until on_written. */
int exec_queue_write(proc *p, const char *data, size_t n)
{
    write_req *w = malloc(sizeof *w);
    uv_buf_t buf;
    int rc;
    if (w == NULL)
        return UV_ENOMEM;
    w->data = malloc(n ? n : 1);
    if (w->data == NULL) {
        free(w);
        return UV_ENOMEM;
    }
    memcpy(w->data, data, n);
    buf = uv_buf_init(w->data, (unsigned int)n);
    rc = uv_write(&w->req, (uv_stream_t *)&p->in, &buf, 1, on_written);
    if (rc != 0) {
        free(w->data);
        free(w);
    }
    return rc;
}

/* A descriptor the child gets is moved to 4 or above, so that putting the
 * child's fds 0-3 in place never overwrites one not yet placed (beat may
 * run with its own 0-2 closed). Returns the fd, or -1 with errno. */
static int lift(int fd)
{
    int high;
    if (fd < 0 || fd > 3)
        return fd;
    high = fcntl(fd, F_DUPFD_CLOEXEC, 4);
    close(fd);
    return high;
}

/* A pipe between beat and the child: beat's end (read when beat_reads)
 * opened on the libuv handle h, the child's end in *child. Returns 0 or
 * an errno; on failure h is initialised only if *inited is set. The
 * child's stdin is a socket pair, as libuv's own: closing it with pending
 * writes flushed (uv_shutdown) needs shutdown(2), which a pipe refuses. */
int exec_open_pipe(uv_loop_t *loop, uv_pipe_t *h, void *data, int beat_reads,
                   int *child, int *inited)
{
    int fds[2], mine;
    *inited = 0;
    if (beat_reads ? pipe2(fds, O_CLOEXEC) != 0
                   : socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
        return errno;
    mine = beat_reads ? fds[0] : fds[1];
    *child = lift(beat_reads ? fds[1] : fds[0]);
    if (*child < 0) {
        int err = errno;
        close(mine);
        return err;
    }
    uv_pipe_init(loop, h, 0);
    h->data = data;
    *inited = 1;
    if (uv_pipe_open(h, mine) != 0) {
        close(mine);
        close(*child);
        *child = -1;
        return EMFILE;
    }
    return 0;
}

/* The pipe the shim reports on: beat's end, non-blocking, watched by the
 * poll handle h for the hang-up only (exec.c), in *mine; the shim's end in
 * *child. Returns 0 or an errno; on failure h is initialised only if
 * *inited is set. */
int exec_open_status(uv_loop_t *loop, uv_poll_t *h, void *data, int *mine,
                     int *child, int *inited)
{
    int fds[2], err;
    *inited = 0;
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0)
        return errno;
    *child = lift(fds[1]);
    if (*child < 0) {
        err = errno;
        close(fds[0]);
        return err;
    }
    err = uv_poll_init(loop, h, fds[0]);
    if (err != 0) {
        close(fds[0]);
        close(*child);
        *child = -1;
        return -err;
    }
    h->data = data;
    *mine = fds[0];
    *inited = 1;
    return 0;
}

/* Reads one output spec {mode=, max=, path=, fn=} from the table at idx,
 * and sets up what the child gets as that stream in *child (-1: /dev/null). */
void exec_read_spec(lua_State *L, int idx, const char *field, stream *s,
                    int *child, proc *p)
{
    static const char *const modes[] = {"ignore", "capture", "file", "lines", NULL};
    s->p = p;
    s->fd = -1;
    s->fn_ref = LUA_NOREF;
    *child = -1;
    lua_getfield(L, idx, field);
    if (lua_isnil(L, -1)) {
        s->mode = OUT_IGNORE;
    } else {
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_getfield(L, -1, "mode");
        s->mode = luaL_checkoption(L, -1, NULL, modes);
        lua_pop(L, 1);
        lua_getfield(L, -1, "max");
        s->max = (size_t)luaL_optinteger(L, -1, 0); /* the default (1 MiB) is policy: exec.lua */
        lua_pop(L, 1);
        if (s->mode == OUT_FILE) {
            lua_getfield(L, -1, "path");
            s->fd = lift(open(luaL_checkstring(L, -1), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
            if (s->fd < 0)
                s->open_errno = errno;
            lua_pop(L, 1);
        } else if (s->mode == OUT_LINES) {
            lua_getfield(L, -1, "fn");
            luaL_checktype(L, -1, LUA_TFUNCTION);
            s->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        }
    }
    lua_pop(L, 1);
    if (s->mode == OUT_FILE) {
        *child = s->fd;
    } else if (s->mode == OUT_CAPTURE || s->mode == OUT_LINES) {
        int err = exec_open_pipe(beat_loop(L), &s->pipe, s, 1, child, &s->open);
        if (err != 0 && s->open_errno == 0)
            s->open_errno = err;
    }
}
