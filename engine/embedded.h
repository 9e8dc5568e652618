#ifndef BEAT_EMBEDDED_H
#define BEAT_EMBEDDED_H
#include <stddef.h>

/* One Lua source file compiled into the binary (see tools/embed.c). */
typedef struct {
    const char *module; /* "beat.exec", "strategies.retry" */
    const char *path;   /* source path relative to the tree: "lua/beat/exec.lua" */
    const char *source;
    size_t size;
} beat_embedded;

extern const beat_embedded beat_embedded_modules[];

#endif
