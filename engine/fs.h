/*
 * fs.h — what fs.c offers the other C modules besides beat.fs.
 */
#ifndef BEAT_FS_H
#define BEAT_FS_H

#include <stddef.h>

/* Writes all n bytes to fd, retrying short writes and EINTR; -1 with errno
 * set. */
int fs_write_all(int fd, const void *data, size_t n);

#endif
