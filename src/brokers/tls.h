// TLS settings of broker URLs that speak TLS themselves (amqps://, NATS tls://), read from the
// URL's query: `cacert=PATH` (PEM CAs to trust; default the system's bundle), `cert=PATH` and
// `key=PATH` (a client certificate, both or neither) and `verify=false` (accept any server
// certificate: tests and migrations only). Kafka takes librdkafka's own `security.protocol`
// and `ssl.*` properties instead.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <string>

#include "courier/status.h"

namespace courier {

// Debian's bundle of the system's trusted CAs (package ca-certificates).
inline constexpr char kSystemCaBundle[] = "/etc/ssl/certs/ca-certificates.crt";

struct TlsSettings {
  bool enabled = false;
  std::string ca_file;  // "" is the system's bundle
  std::string cert_file;
  std::string key_file;
  bool verify = true;  // the server's certificate chain and host name
};

// Takes `key=value` when it is a TLS parameter: returns true and fills `tls` (or sets `error`).
inline bool TakeTlsParam(const std::string& key, const std::string& value, TlsSettings* tls,
                         Status* error) {
  if (key == "cacert") {
    tls->ca_file = value;
  } else if (key == "cert") {
    tls->cert_file = value;
  } else if (key == "key") {
    tls->key_file = value;
  } else if (key == "verify") {
    if (value != "true" && value != "false") {
      *error = InvalidArgumentError("verify must be true or false, not '" + value + "'");
    }
    tls->verify = value == "true";
  } else {
    return false;
  }
  return true;
}

// Checks the settings after the query was read; `secure_form` is the scheme that enables TLS.
inline Status CheckTlsSettings(const TlsSettings& tls, const std::string& secure_form) {
  const bool any =
      !tls.ca_file.empty() || !tls.cert_file.empty() || !tls.key_file.empty() || !tls.verify;
  if (any && !tls.enabled) {
    return InvalidArgumentError("cacert, cert, key and verify are TLS settings; use " +
                                secure_form + " to connect with TLS");
  }
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return InvalidArgumentError("a client certificate needs both cert=PATH and key=PATH");
  }
  return Status::Ok();
}

}  // namespace courier
