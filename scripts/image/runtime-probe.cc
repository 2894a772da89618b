// runtime-probe: built by scripts/image/build.sh --runtime against the build
// machine's Debian -dev packages and shipped in the image as
// /opt/attested-runner/runtime-probe. Run inside the booted VM, it proves the
// dynamic loader finds the GitHub runner's runtime libraries (the list of
// actions/runner's installdependencies.sh plus what .NET and node link):
// ICU (with its data: a collator is opened and used), libstdc++, libgcc_s,
// zlib, OpenSSL, Kerberos (GSSAPI) and LTTng-UST. It prints one line per
// library and exits 0, or names what failed and exits 1.
#include <gssapi/gssapi.h>
#include <lttng/ust-version.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <unicode/ucol.h>
#include <unicode/uversion.h>
#include <zlib.h>

#include <cstdio>
#include <stdexcept>
#include <string>


int main() {
  try {
    UErrorCode e = U_ZERO_ERROR;
    UCollator *c = ucol_open("de_DE", &e);
    if (U_FAILURE(e)) throw std::runtime_error(std::string("ICU collator: ") + u_errorName(e));
    const UChar a[] = {0x00e4, 0}, z[] = {'z', 0};  // "ä" sorts before "z" in German
    if (ucol_strcoll(c, a, -1, z, -1) != UCOL_LESS) throw std::runtime_error("ICU collation is wrong");
    ucol_close(c);
    UVersionInfo v;
    u_getVersion(v);
    char iv[U_MAX_VERSION_STRING_LENGTH];
    u_versionToString(v, iv);
    std::printf("icu %s (collation data present)\n", iv);

    std::printf("zlib %s\n", zlibVersion());

    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (!EVP_Digest("abc", 3, md, &n, EVP_sha256(), nullptr) || n != 32 || md[0] != 0xba)
      throw std::runtime_error("OpenSSL SHA-256");
    if (!OPENSSL_init_ssl(0, nullptr)) throw std::runtime_error("OpenSSL libssl");
    std::printf("%s (libssl, libcrypto)\n", OpenSSL_version(OPENSSL_VERSION));

    OM_uint32 minor = 0;
    gss_OID_set mechs = GSS_C_NO_OID_SET;
    if (gss_indicate_mechs(&minor, &mechs) != GSS_S_COMPLETE) throw std::runtime_error("GSSAPI mechanisms");
    std::printf("gssapi (krb5) %zu mechanisms\n", mechs->count);
    gss_release_oid_set(&minor, &mechs);

    std::printf("lttng-ust %s\n", LTTNG_UST_VERSION);
    std::printf("libstdc++ and libgcc_s: exceptions work\n");
    throw std::logic_error("unwound");
  } catch (const std::logic_error &) {
    std::printf("runtime-probe: OK\n");
    return 0;
  } catch (const std::exception &x) {
    std::fprintf(stderr, "runtime-probe: FAIL: %s\n", x.what());
    return 1;
  }
}
