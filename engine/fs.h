/*
 * fs.h — small descriptor helpers shared by fs.c, exec.c and the git module
 * (engine/git/).
 */
#ifndef BEAT_FS_H
#define BEAT_FS_H

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
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

/* Sends n bytes of data and nfds (at most 4) descriptors, SCM_RIGHTS, in
 * one message on the unix socket sock, retrying EINTR; what sendmsg
 * returns. */
static inline ssize_t fs_send_fds(int sock, const void *data, size_t n,
                                  const int *fds, int nfds)
{
    union {
        char space[CMSG_SPACE(4 * sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct iovec io = {(void *)data, n};
    struct msghdr m;
    struct cmsghdr *c;
    size_t size = (size_t)nfds * sizeof(int);
    ssize_t w;

    memset(&ctl, 0, sizeof ctl);
    memset(&m, 0, sizeof m);
    m.msg_iov = &io;
    m.msg_iovlen = 1;
    m.msg_control = ctl.space;
    m.msg_controllen = CMSG_SPACE(size);
    c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(size);
    memcpy(CMSG_DATA(c), fds, size);
    do
        w = sendmsg(sock, &m, MSG_NOSIGNAL);
    while (w < 0 && errno == EINTR);
    return w;
}

#endif
