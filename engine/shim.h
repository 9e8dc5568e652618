/*
 * The per-command shim (shim.c) and the /proc walk (proctree.c). These two
 * files build twice: into beat, and on their own, linked only with a libc,
 * as the small helper beat embeds and starts commands through (exec.c).
 * So this header names nothing from Lua or libuv.
 */
#ifndef BEAT_SHIM_H
#define BEAT_SHIM_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

/* The signal a shim takes as "end everything now": sent by beat for
 * proc:kill("KILL") and delivered by the kernel when beat dies. A fixed
 * number, not SIGRTMIN + 1: SIGRTMIN is 34 in glibc (beat) but 35 in musl
 * (the embedded shim may be built with either); 35 is free in both. */
#define BEAT_SIG_KILLALL 35

/* shim.c: argv = {name, GRACE_MS, PARENT_PID, FILE, ARGV0, ARGS...} */
int beat_shim_main(int argc, char **argv);

/* shim.c: a shim that runs commands one after another (`beat-shim warm
 * PARENT_PID`), each from one message on the socket at fd 3: the command's
 * descriptors 0-3 (SCM_RIGHTS) and BEAT_WARM_MAX bytes at most of
 * NUL-terminated strings: GRACE_MS, PARENT_PID, FILE, ARGC, the ARGC
 * arguments, ENVC, the ENVC variables, the directory ("" for none). Once a
 * command and its leftovers are gone it has written its last report line
 * and closed the command's fd 3, and waits for the next message. */
#define BEAT_WARM_MAX (128 * 1024)
int beat_shim_warm(pid_t parent);

/* proctree.c */
int beat_kill_descendants(pid_t root, int sig, pid_t skip_group);
int beat_live_children(pid_t parent);

/* build/shim_blob.c (beat only): the helper's executable, built from
 * shim.c and proctree.c by the Makefile and carried in beat's binary. */
extern const unsigned char beat_shim_blob[];
extern const size_t beat_shim_blob_size;

#endif
