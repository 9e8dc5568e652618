/*
 * ignore.c — whether git ignores an untracked file, answered without
 * libgit2 where that is certain.
 *
 * git_ignore_path_is_ignored answers for one path at ~10 µs: each call
 * stats the path and every .gitignore above it, and matches every rule.  A
 * full scan asks for each untracked file.  As git does, the scan keeps the
 * rules of the directories it walks (a stack, see ignore_push) and answers
 * itself in the two cases it can be sure of:
 *  - no rule that ignores could match the file's path: not ignored;
 *  - a simple rule (a literal name, or '*' then a literal suffix, matched
 *    against the name as git matches it) matches, and no rule that
 *    re-includes (!) could: ignored.
 * "Could match" over-approximates: a rule with a bracket or "**", a rule
 * from a source that cannot be read, anything unusual counts as matching,
 * and the question goes to libgit2, which decides as before.  Rules for
 * directories only (a trailing '/') never match a file; whether the file's
 * directory (or one above) is ignored is libgit2's to say, once per
 * directory (see scan.c): then the file is, unless a rule could re-include
 * it.
 */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "git.h"

/* One rule, as parsed from its line. */
typedef struct {
    const char *pat;  /* '!', a leading '/', a trailing '/' taken off */
    size_t len;
    unsigned neg : 1;      /* '!': re-includes */
    unsigned dironly : 1;  /* trailing '/': directories only */
    unsigned path : 1;     /* has a '/': matched against the path below the base */
    unsigned odd : 1;      /* '[', "**", a control byte: "could match" anything */
    unsigned simple : 2;   /* 1: a literal name, 2: '*' and a literal suffix */
} irule;

/* The rules of one source, applying below base ("" = everywhere). */
struct irules {
    char *base;
    size_t blen;
    char *text;       /* the file's bytes: the rules point into it */
    irule *v;
    size_t n;
    int unknown;      /* could not be read: every question goes to libgit2 */
};

static int plain_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
        c == '.' || c == '_' || c == '-' || c == '+' || c == '~' || c == ',' || c == '=' ||
        c == '@' || c == '%';
}

/* Parses the lines of text (NUL-terminated, modified in place) into rules. */
static int parse_rules(irules *rs)
{
    size_t cap = 16;
    char *s = rs->text;
    if (!(rs->v = malloc(cap * sizeof *rs->v)))
        return -1;
    while (*s) {
        char *line = s, *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        s = nl ? nl + 1 : s + len;
        /* trailing spaces go unless escaped (git's trim_trailing_spaces) */
        while (len > 0 && line[len - 1] == ' ' && !(len > 1 && line[len - 2] == '\\'))
            len--;
        if (len == 0 || line[0] == '#')
            continue;
        irule r = {0};
        if (line[0] == '!') {
            r.neg = 1;
            line++;
            len--;
        }
        if (len > 0 && line[len - 1] == '/') {
            r.dironly = 1;
            len--;
        }
        if (len > 0 && line[0] == '/') {
            r.path = 1;  /* anchored at the base */
            line++;
            len--;
        }
        if (len == 0)
            continue;
        if (memchr(line, '/', len))
            r.path = 1;
        int stars = 0, plain = 1;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)line[i];
            /* brackets, "**", escapes, blanks and control bytes: their
             * finer points (and where git and libgit2 differ) are not
             * second-guessed */
            if (c == '[' || c == '\\' || c == ' ' || c < 0x20 || c == 0x7f ||
                (c == '*' && i + 1 < len && line[i + 1] == '*'))
                r.odd = 1;
            if (c == '*')
                stars++;
            if (!plain_char((char)c) && !(c == '*' && i == 0))
                plain = 0;
        }
        if (plain && !r.path && !r.odd)
            r.simple = stars == 0 ? 1 : (stars == 1 && line[0] == '*') ? 2 : 0;
        line[len] = '\0';  /* the pattern ends here ('\n' or a trailing '/') */
        r.pat = line;
        r.len = len;
        if (rs->n == cap) {
            irule *nv = realloc(rs->v, 2 * cap * sizeof *nv);
            if (!nv)
                return -1;
            rs->v = nv;
            cap *= 2;
        }
        rs->v[rs->n++] = r;
    }
    return 0;
}

/*
 * The rules of the file at path, applying below base: NULL when there is no
 * such file; rules marked unknown when it cannot be read (or is not a
 * regular file).  *oom set when out of memory.
 */
static irules *load_rules(const char *path, const char *base, int *oom)
{
    irules *rs = calloc(1, sizeof *rs);
    struct stat st;
    int fd;
    if (!rs || !(rs->base = str_dup(base))) {
        free(rs);
        *oom = 1;
        return NULL;
    }
    rs->blen = strlen(base);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT || errno == ENOTDIR) {
            free(rs->base);
            free(rs);
            return NULL;
        }
        rs->unknown = 1;
        return rs;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (off_t)1 << 24 ||
        !(rs->text = malloc((size_t)st.st_size + 1))) {
        rs->unknown = 1;
        close(fd);
        return rs;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, rs->text + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    rs->text[got] = '\0';
    if (got != (size_t)st.st_size || memchr(rs->text, '\0', got) || parse_rules(rs) < 0)
        rs->unknown = 1;  /* a NUL byte, a short read: not second-guessed */
    return rs;
}

static void free_rules(irules *rs)
{
    if (!rs)
        return;
    free(rs->base);
    free(rs->text);
    free(rs->v);
    free(rs);
}

/* Opens the rules every path is under: info/exclude and the user's
 * excludes file (core.excludesFile, else git/ignore in the XDG directory),
 * as libgit2 finds them.  A stack that cannot be had is NULL: libgit2 then
 * answers everything. */
ignstack *ignore_open(brepo *r)
{
    ignstack *st = calloc(1, sizeof *st);
    git_config *cfg = NULL;
    git_buf b = {0};
    char *p = NULL;
    int oom = 0;
    if (!st)
        return NULL;
    if (asprintf(&p, "%sinfo/exclude", git_repository_commondir(r->repo)) < 0) {
        free(st);
        return NULL;
    }
    st->global[0] = load_rules(p, "", &oom);
    free(p);
    p = NULL;
    if (git_repository_config_snapshot(&cfg, r->repo) == 0 &&
        git_config_get_path(&b, cfg, "core.excludesfile") == 0) {
        st->global[1] = load_rules(b.ptr, "", &oom);
    } else if (git_libgit2_opts(GIT_OPT_GET_SEARCH_PATH, GIT_CONFIG_LEVEL_XDG, &b) == 0) {
        /* the first directory of the search path that has the file */
        for (const char *s = b.ptr ? b.ptr : ""; *s && !st->global[1] && !oom;) {
            size_t n = strcspn(s, ":");
            if (n && asprintf(&p, "%.*s/ignore", (int)n, s) >= 0) {
                st->global[1] = load_rules(p, "", &oom);
                free(p);
                p = NULL;
            }
            s += n;
            if (*s == ':')
                s++;
        }
    } else {
        st->unknown = 1;
    }
    git_buf_dispose(&b);
    git_config_free(cfg);
    git_error_clear();
    if (oom) {
        ignore_close(st);
        return NULL;
    }
    return st;
}

void ignore_close(ignstack *st)
{
    if (!st)
        return;
    for (size_t i = 0; i < st->n; i++)
        free_rules(st->v[i]);
    free(st->v);
    free_rules(st->global[0]);
    free_rules(st->global[1]);
    free(st);
}

/*
 * The directory dir ("" = the root, else "a/b") is entered: its .gitignore
 * (when it has one: has is 1 for a regular file, 2 for anything else
 * there) applies below it.  Returns the stack depth to pop back to.
 */
size_t ignore_push(ignstack *st, brepo *r, const char *dir, int has)
{
    size_t depth = st->n;
    if (!has)
        return depth;
    char *base = NULL, *path = NULL;
    int oom = 0;
    irules *rs = NULL;
    if (asprintf(&base, "%s%s", dir, dir[0] ? "/" : "") < 0 ||
        asprintf(&path, "%s%s.gitignore", r->workdir, base) < 0) {
        st->unknown = 1;
    } else if (has == 1) {
        rs = load_rules(path, base, &oom);
    } else {
        /* a link or something else: whatever libgit2 makes of it */
        rs = calloc(1, sizeof *rs);
        if (rs && !(rs->base = str_dup(base))) {
            free(rs);
            rs = NULL;
        }
        if (rs) {
            rs->blen = strlen(base);
            rs->unknown = 1;
        }
    }
    free(base);
    free(path);
    if (oom || (has && !rs && has == 2)) {
        st->unknown = 1;
        return depth;
    }
    if (rs) {
        irules **nv = vec_room(st->v, st->n, &st->cap, sizeof *nv, 8);
        if (!nv) {
            free_rules(rs);
            st->unknown = 1;
            return depth;
        }
        st->v = nv;
        st->v[st->n++] = rs;
    }
    return depth;
}

/* Leaves the directories entered since depth was returned by ignore_push. */
void ignore_pop(ignstack *st, size_t depth)
{
    while (st->n > depth)
        free_rules(st->v[--st->n]);
}

/* Whether the rule could match the file at path (name: its last part) and,
 * in *sure, whether it certainly does. */
static int could_match(const irules *rs, const irule *ru, const char *path,
    const char *name, int *sure)
{
    *sure = 0;
    if (ru->dironly)
        return 0;  /* directories only: not a file */
    if (ru->odd)
        return 1;
    if (ru->path) {
        /* against the path below the base; without FNM_PATHNAME '*' also
         * crosses '/', which only widens the match */
        return fnmatch(ru->pat, path + rs->blen, FNM_CASEFOLD) == 0;
    }
    if (ru->simple == 1) {
        if (strcmp(ru->pat, name) == 0) {
            *sure = 1;
            return 1;
        }
        return strcasecmp(ru->pat, name) == 0;
    }
    if (ru->simple == 2) {
        size_t sl = ru->len - 1, nl = strlen(name);
        if (nl < sl)
            return 0;
        if (memcmp(name + nl - sl, ru->pat + 1, sl) == 0) {
            *sure = 1;
            return 1;
        }
        return strcasecmp(name + nl - sl, ru->pat + 1) == 0;
    }
    return fnmatch(ru->pat, name, FNM_CASEFOLD) == 0;
}

/*
 * Whether the untracked regular file at path (relative to the work tree) is
 * ignored, as libgit2 would say: 1 or 0 when the rules on the stack settle
 * it, -1 when libgit2 must say.  dir_ignored tells whether its directory
 * (or one above) is: then the file is too, unless a rule could re-include
 * it (libgit2 lets one, where git does not: that case stays libgit2's).
 */
int ignore_file(const ignstack *st, const char *path, int dir_ignored)
{
    const char *name = strrchr(path, '/');
    int pos = 0, sure = 0, neg = 0;
    name = name ? name + 1 : path;
    if (st->unknown)
        return -1;
    for (size_t k = 0; k < st->n + 2; k++) {
        const irules *rs = k < 2 ? st->global[k] : st->v[k - 2];
        if (!rs)
            continue;
        if (rs->unknown)
            return -1;
        if (strncmp(path, rs->base, rs->blen) != 0)
            continue;  /* not below it (cannot be, on the stack) */
        for (size_t i = 0; i < rs->n; i++) {
            int s;
            if (!could_match(rs, &rs->v[i], path, name, &s))
                continue;
            if (rs->v[i].neg) {
                neg = 1;
            } else {
                pos = 1;
                sure |= s;
            }
        }
    }
    if (dir_ignored)
        return neg ? -1 : 1;
    if (!pos)
        return 0;
    if (sure && !neg)
        return 1;
    return -1;
}
