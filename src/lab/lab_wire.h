// The wire between the lab and a strategy's service process: an abstract unix socket (no file
// to clean up, no path length limit to meet), one text line per message.
//
//   lab → service:  CMD <seq> <order_id> <version> <event_id> <commit_fails 0|1> <fault 0|1|2>
//                   FINISH <milliseconds>
//   service → lab:  READY | START-FAILED <why>
//                   OK <seq> | ERR <seq> <why>
//                   FINISHED | FINISH-FAILED <why>
//
// Thread-safety: none; each end is used by one thread.
#pragma once

#include <string>

#include "core/clock.h"
#include "courier/status.h"

namespace courier::lab {

// An owned file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  UniqueFd& operator=(UniqueFd&& o) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// A listening socket in the abstract namespace under `name`.
Result<UniqueFd> ListenAbstract(const std::string& name);
// The next connection, or nullopt-like invalid fd when none came within `timeout`.
Result<UniqueFd> AcceptWithin(int listen_fd, Duration timeout);
Result<UniqueFd> ConnectAbstract(const std::string& name);

class LineSocket {
 public:
  LineSocket() = default;
  explicit LineSocket(UniqueFd fd) : fd_(std::move(fd)) {}
  enum class Got { kLine, kTimeout, kClosed };
  // The next line (without its '\n') into `line`.
  Got ReadLine(Duration timeout, std::string* line);
  // Whether a whole line is already buffered or the socket has input (ReadLine won't wait).
  bool Readable(Duration timeout);
  Status WriteLine(std::string line);
  bool valid() const { return fd_.valid(); }
  void Close() {
    fd_ = UniqueFd();
    buffer_.clear();
  }

 private:
  UniqueFd fd_;
  std::string buffer_;
};

}  // namespace courier::lab
