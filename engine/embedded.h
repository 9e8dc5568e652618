#ifndef BEAT_EMBEDDED_H
#define BEAT_EMBEDDED_H
#include <stddef.h>

/* One Lua file compiled into the binary as bytecode (see tools/embed.c). */
typedef struct {
    const char *module;         /* "beat.exec", "strategies.retry" */
    const char *path;           /* source path relative to the tree: "lua/beat/exec.lua" */
    const unsigned char *chunk; /* lua_dump of the file, debug information kept */
    size_t size;
} beat_embedded;

extern const beat_embedded beat_embedded_modules[];

/* lua_ident of the Lua library that compiled the chunks. */
extern const char beat_embedded_lua[];

#endif
