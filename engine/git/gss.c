/*
 * gss.c — Kerberos (GSSAPI) for libgit2, loaded on its first use.
 *
 * libgit2 calls GSSAPI only to authenticate to an HTTP remote with
 * "Negotiate" (auth_negotiate.c), and beat never talks to a remote (see
 * init.c). Linked as a shared library, libgssapi_krb5 made every start of
 * beat load it and the six it needs (krb5, k5crypto, krb5support, com_err,
 * keyutils, resolv), relocate them and run their constructors: ~0.3-0.5 ms
 * of every `beat` command, for nothing. Debian ships it without an archive,
 * so it cannot be linked statically with the rest of libgit2.
 *
 * So the nine symbols libgit2 takes from it are defined here. Each function
 * loads the library (dlopen, once) on its first call and passes the call on
 * to the library's own; when the library cannot be loaded it returns
 * GSS_S_FAILURE, which libgit2 reports as a failed authentication. The one
 * variable, the name type of a host-based service, is the OID RFC 2744
 * gives it: GSSAPI compares name types by value, never by address. beat's
 * binary exports none of these (it is not linked with --export-dynamic), so
 * the library, once loaded, still calls its own functions, not these.
 * The types are RFC 2744's, as the ABI sees them: OM_uint32 and pointers.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>

typedef uint32_t OM_uint32;

typedef struct {
    OM_uint32 length;
    void *elements;
} gss_OID_desc;

#define GSS_S_FAILURE (13u << 16)

/* 1.2.840.113554.1.2.1.4, GSS_C_NT_HOSTBASED_SERVICE (RFC 2744, 4.2) */
static unsigned char hostbased_service[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x01, 0x04};
static gss_OID_desc hostbased_service_oid = {sizeof hostbased_service, hostbased_service};

extern gss_OID_desc *GSS_C_NT_HOSTBASED_SERVICE;
gss_OID_desc *GSS_C_NT_HOSTBASED_SERVICE = &hostbased_service_oid;

static pthread_once_t loaded = PTHREAD_ONCE_INIT;
static void *library;

static void load(void)
{
    library = dlopen("libgssapi_krb5.so.2", RTLD_NOW | RTLD_LOCAL);
}

/* The library's own function `name`, or NULL when it cannot be loaded. */
static void *resolve(const char *name)
{
    pthread_once(&loaded, load);
    return library ? dlsym(library, name) : NULL;
}

/* Defines `name` with the parameters `params` (the first is always the
 * minor status) to call the library's function of that name with `args`. */
#define FORWARD(name, params, args)               \
    OM_uint32 name params;                        \
    OM_uint32 name params                         \
    {                                             \
        OM_uint32 (*real) params;                 \
        *(void **)&real = resolve(#name);         \
        if (real == NULL) {                       \
            *minor = 0;                           \
            return GSS_S_FAILURE;                 \
        }                                         \
        return real args;                         \
    }

FORWARD(gss_indicate_mechs, (OM_uint32 *minor, void **mech_set), (minor, mech_set))
FORWARD(gss_release_oid_set, (OM_uint32 *minor, void **set), (minor, set))
FORWARD(gss_import_name, (OM_uint32 *minor, void *buffer, gss_OID_desc *type, void **name),
        (minor, buffer, type, name))
FORWARD(gss_release_name, (OM_uint32 *minor, void **name), (minor, name))
FORWARD(gss_init_sec_context,
        (OM_uint32 *minor, void *cred, void **context, void *target, gss_OID_desc *mech,
         OM_uint32 req_flags, OM_uint32 time_req, void *bindings, void *input_token,
         gss_OID_desc **actual_mech, void *output_token, OM_uint32 *ret_flags, OM_uint32 *time_rec),
        (minor, cred, context, target, mech, req_flags, time_req, bindings, input_token,
         actual_mech, output_token, ret_flags, time_rec))
FORWARD(gss_delete_sec_context, (OM_uint32 *minor, void **context, void *output_token),
        (minor, context, output_token))
FORWARD(gss_release_buffer, (OM_uint32 *minor, void *buffer), (minor, buffer))
FORWARD(gss_display_status,
        (OM_uint32 *minor, OM_uint32 status, int type, gss_OID_desc *mech, OM_uint32 *context,
         void *status_string),
        (minor, status, type, mech, context, status_string))
