/*
 * fs.h — small file helpers shared by fs.c and the git module (engine/git/).
 */
#ifndef BEAT_FS_H
#define BEAT_FS_H

#include <errno.h>
#include <stddef.h>
#include <unistd.h>

/* Writes all n bytes to fd, retrying short writes and EINTR; -1 with errno
 * set. */
static inline int fs_write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

#endif
