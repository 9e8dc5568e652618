/*
 * Private declarations shared by the C half of beat's runtime.
 * Nothing here is visible to Lua except through the luaopen_* functions.
 */
#ifndef BEAT_RUNTIME_H
#define BEAT_RUNTIME_H

#include <pthread.h>
#include <sys/types.h>
#include <lua.h>
#include <lauxlib.h>
#include <uv.h>

#include "shim.h" /* BEAT_SIG_KILLALL, the shim, the /proc walk */

#define BEAT_MODULE(name, opener) int opener(lua_State *L);
#include "modules.h"
#undef BEAT_MODULE

/* runtime.c */
lua_State *beat_new_state(int argc, char **argv);
void beat_close_state(lua_State *L);
uv_loop_t *beat_loop(lua_State *L);
lua_State *beat_main_thread(lua_State *L);
int beat_pcall(lua_State *L, int nargs, int nresults);
void beat_call_ref(lua_State *L, int ref, int nargs);
const char *beat_exe_path(void);
/* pthread_create with every signal blocked in the new thread: signals stay
 * with beat's main thread (its signal handling, the shims' signals) */
int beat_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/* uv.c (besides luaopen_beat__runtime) */
void beat_track_coroutines(lua_State *L);
void beat_interrupts_close(void);

/* exec.c and exec_io.c: a child process (the shim running the command)
 * and the streams beat reads from it. */
enum { OUT_IGNORE, OUT_CAPTURE, OUT_FILE, OUT_LINES };

typedef struct proc proc;

typedef struct {
    proc *p;
    uv_pipe_t pipe;
    int mode, open, fd, open_errno;
    size_t max;        /* capture: bytes kept at most */
    char *head;        /* capture: the first max/2 bytes, grown as they come */
    size_t head_len, head_cap;
    char *tail;        /* capture: ring of the last max/2 bytes, once head is full */
    size_t tail_pos, tail_len;
    int lost;          /* capture: bytes dropped for want of memory */
    size_t total;
    int fn_ref;        /* lines: the Lua function */
    char *line;        /* lines: the partial line */
    size_t line_len, line_cap;
} stream;

struct proc {
    pid_t pid;                /* the shim */
    int sock;                 /* a shim that runs command after command: its socket; else -1 */
    struct proc *next_live;   /* the procs whose shim is busy with their command (exec.c) */
    uv_pipe_t in;
    uv_poll_t status;         /* the shim's report pipe, watched for its hang-up */
    int status_fd;
    stream out, err;
    lua_State *L;
    struct proc **box;        /* the userdata's pointer, cleared at completion */
    int self_ref, on_exit_ref;
    int in_open, status_open, exited, handles, abandoned;
    pid_t cmd_pid;            /* the command itself (its process group), from the shim */
    int64_t exit_status;
    int term_signal;
    char report[64];
    size_t report_len;
    char *cb_error;           /* first error raised by a lines callback */
};

/* exec.c: runs on_exit(result) once the shim has exited and every pipe has
 * reached end of file; does nothing before. */
void exec_maybe_complete(proc *p);

/* exec_io.c */
void exec_push_captured(lua_State *L, stream *s);
void exec_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
void exec_on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf);
void exec_close_stdin(proc *p);
int exec_queue_write(proc *p, const char *data, size_t n);
int exec_open_pipe(uv_loop_t *loop, uv_pipe_t *h, void *data, int beat_reads,
                   int *child, int *inited);
int exec_open_status(uv_loop_t *loop, uv_poll_t *h, void *data, int *mine,
                     int *child, int *inited);
void exec_read_spec(lua_State *L, int idx, const char *field, stream *s,
                    int *child, proc *p);

/* shim.c */
int beat_shim_main(int argc, char **argv);

/* proctree.c */
int beat_kill_descendants(pid_t root, int sig, pid_t skip_group);
int beat_live_children(pid_t parent);
void beat_kill_all_descendants(void);
/* exec.c: lets go every shim waiting for a command (killed, then reaped) */
void beat_exec_dismiss_warm(void);

/* git/watch.c */
void beat_git_ending(void);

#endif
