/*
 * init.c — libgit2's initialisation, without what only a remote would use.
 *
 * Debian's libgit2 (1.5) sets up HTTPS (mbedTLS) and SSH (libssh2, with
 * OpenSSL's libcrypto) in git_libgit2_init(), at once. beat never talks to
 * a remote (it opens, snapshots and restores local repositories, and adds
 * linked work trees; no clone, fetch or push), so while init_libgit2() runs
 * three of those steps are left out:
 *   - the system's CA bundle (mbedtls_x509_crt_parse_file of
 *     /etc/ssl/certs/ca-certificates.crt: base64 and ASN.1 of ~140
 *     certificates, 7-9 ms of CPU) is not parsed: libgit2's TLS
 *     configuration trusts no certificate authority, so an HTTPS remote
 *     would fail certificate verification — it is refused, never trusted;
 *   - libssh2 is not initialised (OpenSSL's error strings and engines,
 *     ~0.35 ms): libssh2 does it itself when the first SSH session is
 *     made (libssh2_session_init_ex calls _libssh2_init_if_needed);
 *   - mbedTLS's random generator, which libgit2 seeds for TLS, is seeded
 *     from the system (getrandom) and the CPU clock, without HAVEGE, a
 *     generator that times a long loop of its own (~0.35 ms, more on a
 *     virtual machine) and that mbedTLS 3 removed. The system's source is
 *     the strong one; HAVEGE only added to it.
 *
 * How: libgit2, mbedTLS and libssh2 are linked statically (see the
 * Makefile) with --wrap=SYMBOL for each function below, so their calls of it
 * from another object file come to __wrap_SYMBOL here. While init_libgit2()
 * runs git_libgit2_init(), each wrapper does what is said above; at any
 * other time it passes the call on to the library's own (__real_SYMBOL), so
 * a later explicit GIT_OPT_SET_SSL_CERT_LOCATIONS works as usual.
 */
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>

#include "git.h"

static int initialising;

/* mbedTLS's certificate chain, opaque here (mbedtls/x509_crt.h). */
struct mbedtls_x509_crt;

int __real_mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path);
int __wrap_mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path);

/* mbedTLS's parse_file, except during init_libgit2(), where it leaves the
 * (initialised, empty) chain as it is and returns 0, "parsed". */
int __wrap_mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path)
{
    if (initialising)
        return 0;
    return __real_mbedtls_x509_crt_parse_file(chain, path);
}

int __real_libssh2_init(int flags);
int __wrap_libssh2_init(int flags);

/* libssh2_init, except during init_libgit2(), where it returns 0 and leaves
 * libssh2 to initialise itself on first use. */
int __wrap_libssh2_init(int flags)
{
    if (initialising)
        return 0;
    return __real_libssh2_init(flags);
}

#if defined(MBEDTLS_HAVEGE_C)
#include <mbedtls/entropy_poll.h>
#include <mbedtls/havege.h>

void __real_mbedtls_havege_init(mbedtls_havege_state *hs);
void __wrap_mbedtls_havege_init(mbedtls_havege_state *hs);
int __real_mbedtls_ctr_drbg_seed(mbedtls_ctr_drbg_context *ctx,
                                 int (*f_entropy)(void *, unsigned char *, size_t),
                                 void *p_entropy, const unsigned char *custom, size_t len);
int __wrap_mbedtls_ctr_drbg_seed(mbedtls_ctr_drbg_context *ctx,
                                 int (*f_entropy)(void *, unsigned char *, size_t),
                                 void *p_entropy, const unsigned char *custom, size_t len);

/* HAVEGE's state, as mbedtls_entropy_init makes it for its source: during
 * init_libgit2() left empty (its first fill is the slow part), as the
 * source is taken out before anything polls it (below). */
void __wrap_mbedtls_havege_init(mbedtls_havege_state *hs)
{
    if (initialising) {
        memset(hs, 0, sizeof *hs);
        return;
    }
    __real_mbedtls_havege_init(hs);
}

/* Seeds a random generator; during init_libgit2(), from an entropy context
 * whose HAVEGE source is first taken out. */
int __wrap_mbedtls_ctr_drbg_seed(mbedtls_ctr_drbg_context *ctx,
                                 int (*f_entropy)(void *, unsigned char *, size_t),
                                 void *p_entropy, const unsigned char *custom, size_t len)
{
    if (initialising && f_entropy == mbedtls_entropy_func && p_entropy != NULL) {
        mbedtls_entropy_context *e = p_entropy;
        int kept = 0;
        for (int i = 0; i < e->source_count; i++)
            if (e->source[i].f_source != mbedtls_havege_poll)
                e->source[kept++] = e->source[i];
        e->source_count = kept;
    }
    return __real_mbedtls_ctr_drbg_seed(ctx, f_entropy, p_entropy, custom, len);
}
#endif

/* git_libgit2_init() without the above; its result. Refcounted by libgit2,
 * and never shut down. Called by the first require "beat._git": commands
 * that never use git never initialise it. */
int init_libgit2(void)
{
    int rc;
    initialising = 1;
    rc = git_libgit2_init();
    initialising = 0;
    return rc;
}
