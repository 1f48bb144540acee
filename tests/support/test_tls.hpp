#pragma once

// A certificate authority made by a test (OpenSSL's API, no binary needed):
// a self-signed CA and a server certificate it signed for 127.0.0.1 and
// localhost, written as PEM files into a directory, valid for a day.

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

namespace vigil::test {

struct test_tls {
  std::string ca_file;   ///< the CA's certificate: what a client trusts
  std::string cert_file; ///< the server's certificate
  std::string key_file;  ///< the server's private key
};

namespace detail_tls {

using key_ptr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using cert_ptr = std::unique_ptr<X509, decltype(&X509_free)>;

inline void need(bool ok, const char* what) {
  if (!ok)
    throw std::runtime_error(std::string{"test_tls: "} + what);
}

inline void add_ext(X509* x, X509V3_CTX* ctx, int nid, const char* value) {
  auto* ext = X509V3_EXT_conf_nid(nullptr, ctx, nid, value);
  need(ext != nullptr, value);
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
}

/// A certificate for `key`, named `cn`, signed by `signer` as `issuer`
/// (null: self-signed).
inline cert_ptr make_cert(EVP_PKEY* key, EVP_PKEY* signer, X509* issuer,
                          const char* cn, long serial, bool ca) {
  cert_ptr x{X509_new(), &X509_free};
  X509_set_version(x.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), serial);
  X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x.get()), 24 * 3600);
  X509_set_pubkey(x.get(), key);
  auto* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn), -1,
                             -1, 0);
  X509_set_issuer_name(x.get(), issuer != nullptr
                                  ? X509_get_subject_name(issuer)
                                  : name);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer : x.get(), x.get(), nullptr,
                 nullptr, 0);
  add_ext(x.get(), &ctx, NID_subject_key_identifier, "hash");
  if (ca) {
    add_ext(x.get(), &ctx, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x.get(), &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(x.get(), &ctx, NID_basic_constraints, "CA:FALSE");
    add_ext(x.get(), &ctx, NID_authority_key_identifier, "keyid:always");
    add_ext(x.get(), &ctx, NID_subject_alt_name, "IP:127.0.0.1,DNS:localhost");
    add_ext(x.get(), &ctx, NID_ext_key_usage, "serverAuth");
  }
  need(X509_sign(x.get(), signer, EVP_sha256()) > 0, "X509_sign");
  return x;
}

template <class F>
void write_pem(const std::string& path, F f) {
  auto* out = std::fopen(path.c_str(), "w");
  need(out != nullptr, "cannot write a PEM file");
  bool ok = f(out) == 1;
  std::fclose(out);
  need(ok, "PEM_write");
}

} // namespace detail_tls

/// Makes a CA and a server certificate in `dir` (ca.pem, server.pem,
/// server.key).
inline test_tls make_test_tls(const std::string& dir) {
  using namespace detail_tls;
  key_ptr ca_key{EVP_EC_gen("P-256"), &EVP_PKEY_free};
  key_ptr key{EVP_EC_gen("P-256"), &EVP_PKEY_free};
  need(ca_key && key, "EVP_EC_gen");
  auto ca = make_cert(ca_key.get(), ca_key.get(), nullptr, "vigil test CA", 1,
                      true);
  auto leaf = make_cert(key.get(), ca_key.get(), ca.get(), "127.0.0.1", 2,
                        false);
  test_tls out{dir + "/ca.pem", dir + "/server.pem", dir + "/server.key"};
  write_pem(out.ca_file, [&](FILE* f) { return PEM_write_X509(f, ca.get()); });
  write_pem(out.cert_file,
            [&](FILE* f) { return PEM_write_X509(f, leaf.get()); });
  write_pem(out.key_file, [&](FILE* f) {
    return PEM_write_PrivateKey(f, key.get(), nullptr, nullptr, 0, nullptr,
                                nullptr);
  });
  return out;
}

} // namespace vigil::test
