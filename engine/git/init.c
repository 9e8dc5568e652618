/*
 * init.c — libgit2's initialisation, without the system's CA bundle.
 *
 * Debian's libgit2 (1.5) does HTTPS with mbedTLS, and git_libgit2_init()
 * sets mbedTLS up at once: it parses every certificate of
 * /etc/ssl/certs/ca-certificates.crt (mbedtls_x509_crt_parse_file: base64
 * and ASN.1 of ~140 certificates), 7-9 ms of CPU, ~75 % of what loading
 * beat.git costs. beat never talks to a remote (it opens, snapshots and
 * restores local repositories, and adds linked work trees; no clone, fetch
 * or push), so it does not need them.
 *
 * How: this shared object (build/beat-git.so) defines
 * mbedtls_x509_crt_parse_file itself. It is dlopen'd RTLD_LOCAL
 * (engine/gitload.c) with libgit2 and mbedTLS as its dependencies, and the
 * dynamic linker resolves libgit2's reference to that symbol by searching
 * the global scope (beat and the libraries it links: no mbedTLS there), then
 * the dlopen'd object's own scope in load order, where beat-git.so comes
 * before libmbedx509. So libgit2's call comes here. While init_libgit2() runs
 * git_libgit2_init() the call loads nothing and succeeds; at any other time
 * it is passed on to mbedTLS's own (dlsym RTLD_NEXT), so a later explicit
 * GIT_OPT_SET_SSL_CERT_LOCATIONS would work as usual.
 *
 * The consequence: libgit2's TLS configuration trusts no certificate
 * authority, so an HTTPS remote would fail certificate verification — it is
 * refused, never trusted. Where libgit2 uses another TLS library or loads
 * the bundle later, nothing calls this and nothing changes.
 */
#include <dlfcn.h>

#include "git.h"

/* mbedTLS's certificate chain, opaque here (mbedtls/x509_crt.h). */
struct mbedtls_x509_crt;

int mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path);

static int initialising;

/* mbedTLS's parse_file, except during init_libgit2(), where it leaves the
 * (initialised, empty) chain as it is and returns 0, "parsed". */
int mbedtls_x509_crt_parse_file(struct mbedtls_x509_crt *chain, const char *path)
{
    static int (*real)(struct mbedtls_x509_crt *, const char *);
    if (initialising)
        return 0;
    if (real == NULL)
        real = (int (*)(struct mbedtls_x509_crt *, const char *))
            dlsym(RTLD_NEXT, "mbedtls_x509_crt_parse_file");
    if (real == NULL)
        return -0x2900;  /* MBEDTLS_ERR_X509_FILE_IO_ERROR */
    return real(chain, path);
}

/* git_libgit2_init() without the CA bundle; its result. Refcounted by
 * libgit2, and never shut down. */
int init_libgit2(void)
{
    int rc;
    initialising = 1;
    rc = git_libgit2_init();
    initialising = 0;
    return rc;
}
