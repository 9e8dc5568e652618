/*
 * init.c — libgit2's initialisation, without the system's CA bundle.
 *
 * Debian's libgit2 (1.5) does HTTPS with mbedTLS, and git_libgit2_init()
 * sets mbedTLS up at once: it parses every certificate of
 * /etc/ssl/certs/ca-certificates.crt (mbedtls_x509_crt_parse_file: base64
 * and ASN.1 of ~140 certificates), 7-9 ms of CPU, most of what initialising
 * libgit2 costs. beat never talks to a remote (it opens, snapshots and
 * restores local repositories, and adds linked work trees; no clone, fetch
 * or push), so it does not need them.
 *
 * How: libgit2 and mbedTLS are linked statically (see the Makefile), with
 * --wrap=mbedtls_x509_crt_parse_file, so every call of it in them comes to
 * __wrap_mbedtls_x509_crt_parse_file here. While init_libgit2() runs
 * git_libgit2_init() the call loads nothing and succeeds; at any other time
 * it is passed on to mbedTLS's own (__real_...), so a later explicit
 * GIT_OPT_SET_SSL_CERT_LOCATIONS would work as usual.
 *
 * The consequence: libgit2's TLS configuration trusts no certificate
 * authority, so an HTTPS remote would fail certificate verification — it is
 * refused, never trusted.
 */
#include "git.h"

/* mbedTLS's certificate chain, opaque here (mbedtls/x509_crt.h). */
struct mbedtls_x509_crt;

int __real_mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path);
int __wrap_mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path);

static int initialising;

/* mbedTLS's parse_file, except during init_libgit2(), where it leaves the
 * (initialised, empty) chain as it is and returns 0, "parsed". */
int __wrap_mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path)
{
    if (initialising)
        return 0;
    return __real_mbedtls_x509_crt_parse_file(chain, path);
}

/* git_libgit2_init() without the CA bundle; its result. Refcounted by
 * libgit2, and never shut down. Called by the first require "beat._git":
 * commands that never use git never initialise it. */
int init_libgit2(void)
{
    int rc;
    initialising = 1;
    rc = git_libgit2_init();
    initialising = 0;
    return rc;
}
