// GroongaServer (harness.h): groonga-bin's HTTP server for the search-index sink's tests.
#include <curl/curl.h>

#include <filesystem>

#include "support/harness.h"

namespace courier::test {
namespace {

size_t Collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

}  // namespace

Result<std::unique_ptr<GroongaServer>> GroongaServer::Start() {
  if (!std::filesystem::exists("/usr/bin/groonga")) {
    return FailedPreconditionError("groonga is not installed (apt-get install groonga-bin)");
  }
  std::unique_ptr<GroongaServer> s(new GroongaServer());
  s->port_ = FreePort();
  COURIER_RETURN_IF_ERROR(s->StartAgain());
  return s;
}

std::string GroongaServer::Url(const std::string& prefix) const {
  return "groonga://127.0.0.1:" + std::to_string(port_) + (prefix.empty() ? "" : "/" + prefix);
}

Status GroongaServer::StartAgain() {
  std::vector<std::string> argv = {"/usr/bin/groonga", "-s",
                                   "--protocol",       "http",
                                   "--bind-address",   "127.0.0.1",
                                   "--port",           std::to_string(port_),
                                   "--log-path",       dir_.File("groonga.log"),
                                   "--query-log-path", dir_.File("query.log")};
  const std::string db = dir_.File("db");
  if (!std::filesystem::exists(db)) argv.push_back("-n");  // a new database the first time
  argv.push_back(db);
  COURIER_ASSIGN_OR_RETURN(Subprocess p,
                           Subprocess::Spawn(argv, dir_.File("out.log"), dir_.File("out.log")));
  process_.emplace(std::move(p));
  if (!WaitUntil([&] { return PortAccepts(port_); })) {
    return InternalError("groonga did not start; see " + dir_.File("out.log"));
  }
  return Status::Ok();
}

Status GroongaServer::Stop() { return StopChild(process_, "groonga"); }

Result<std::string> GroongaServer::Command(
    const std::string& command, const std::vector<std::pair<std::string, std::string>>& args) {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> easy(curl_easy_init(), curl_easy_cleanup);
  if (!easy) return InternalError("curl_easy_init failed");
  std::string url =
      "http://127.0.0.1:" + std::to_string(port_) + "/d/" + command + "?command_version=3";
  for (const auto& [key, value] : args) {
    char* escaped = curl_easy_escape(easy.get(), value.data(), static_cast<int>(value.size()));
    url += "&" + key + "=" + escaped;
    curl_free(escaped);
  }
  std::string answer;
  curl_easy_setopt(easy.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(easy.get(), CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(easy.get(), CURLOPT_WRITEDATA, &answer);
  curl_easy_setopt(easy.get(), CURLOPT_TIMEOUT_MS, 10000L);
  const CURLcode code = curl_easy_perform(easy.get());
  if (code != CURLE_OK) return RetriableError(std::string("groonga: ") + curl_easy_strerror(code));
  return answer;
}

}  // namespace courier::test
