// JSONL file sink: one line per event (core/encoding.h), acked after fsync.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/encoding.h"
#include "core/url.h"
#include "sinks/sink.h"

namespace courier {
namespace {

class FileSink final : public Sink {
 public:
  explicit FileSink(SinkOptions options) : options_(std::move(options)) {}
  ~FileSink() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Open() override {
    ASSIGN_OR_RETURN(Url url, ParseUrl(options_.url));
    if (!url.hosts.empty() && url.hosts != "localhost") {
      return InvalidArgumentError("file sink URL " + options_.url +
                                  " names a host; write file:///absolute/path.jsonl");
    }
    path_ = "/" + url.path;
    if (url.path.empty()) {
      return InvalidArgumentError("file sink URL " + options_.url +
                                  " names no file; write file:///absolute/path.jsonl");
    }
    fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0) {
      return InvalidArgumentError("cannot open " + path_ +
                                  " for appending: " + std::strerror(errno));
    }
    return Status::Ok();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal&) override {
    std::string buffer;
    for (const Event& e : batch) {
      buffer += EventToJsonLine(e);
      buffer.push_back('\n');
    }
    Status st = WriteAll(buffer);
    // Durable before acked: the relay deletes the rows only after this returns ok.
    if (st.ok() && ::fsync(fd_) != 0) {
      st = RetriableError("fsync " + path_ + ": " + std::strerror(errno));
    }
    return std::vector<Status>(batch.size(), st);
  }

  std::string Describe() const override { return options_.url; }

 private:
  Status WriteAll(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        return RetriableError("write " + path_ + ": " + std::strerror(errno));
      }
      done += static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  SinkOptions options_;
  std::string path_;
  int fd_ = -1;
};

}  // namespace

std::unique_ptr<Sink> MakeFileSink(const SinkOptions& options) {
  return std::make_unique<FileSink>(options);
}

}  // namespace courier
