// The lab's wire (lab/lab_wire.h) and `courier lab-service`: one strategy's orders service,
// which the lab SIGKILLs and starts again.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "core/subprocess.h"
#include "lab/lab.h"
#include "lab/lab_wire.h"
#include "lab/strategy.h"

namespace courier::lab {

UniqueFd& UniqueFd::operator=(UniqueFd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) close(fd_);
}

namespace {

// The abstract address: a leading NUL, then the name (not NUL-terminated).
socklen_t AbstractAddress(const std::string& name, sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  const size_t n = std::min(name.size(), sizeof addr->sun_path - 1);
  std::memcpy(addr->sun_path + 1, name.data(), n);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

bool WaitReadable(int fd, Duration timeout) {
  pollfd p{fd, POLLIN, 0};
  const int rc = poll(&p, 1, static_cast<int>(std::max<int64_t>(0, timeout.count())));
  return rc > 0;
}

}  // namespace

Result<UniqueFd> ListenAbstract(const std::string& name) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return InternalError(std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr;
  const socklen_t len = AbstractAddress(name, &addr);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0 || listen(fd.get(), 4) != 0) {
    return InternalError("listen on @" + name + ": " + std::strerror(errno));
  }
  return fd;
}

Result<UniqueFd> AcceptWithin(int listen_fd, Duration timeout) {
  if (!WaitReadable(listen_fd, timeout)) return UniqueFd();
  UniqueFd fd(accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
  if (!fd.valid()) return InternalError(std::string("accept: ") + std::strerror(errno));
  return fd;
}

Result<UniqueFd> ConnectAbstract(const std::string& name) {
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return InternalError(std::string("socket: ") + std::strerror(errno));
  sockaddr_un addr;
  const socklen_t len = AbstractAddress(name, &addr);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    return RetriableError("connect to @" + name + ": " + std::strerror(errno));
  }
  return fd;
}

bool LineSocket::Readable(Duration timeout) {
  if (buffer_.find('\n') != std::string::npos) return true;
  return fd_.valid() && WaitReadable(fd_.get(), timeout);
}

LineSocket::Got LineSocket::ReadLine(Duration timeout, std::string* line) {
  const TimePoint deadline = Clock::Real().Now() + timeout;
  while (true) {
    const size_t nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      *line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return Got::kLine;
    }
    if (!fd_.valid()) return Got::kClosed;
    const auto left = std::chrono::duration_cast<Duration>(deadline - Clock::Real().Now());
    if (left.count() <= 0 && !WaitReadable(fd_.get(), Duration(0))) return Got::kTimeout;
    if (!WaitReadable(fd_.get(), std::max(left, Duration(0)))) return Got::kTimeout;
    char buf[4096];
    const ssize_t n = read(fd_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Got::kClosed;  // the other end died (or closed)
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

Status LineSocket::WriteLine(std::string line) {
  for (char& ch : line) {
    if (ch == '\n' || ch == '\r') ch = ' ';
  }
  line += '\n';
  size_t off = 0;
  while (off < line.size()) {
    const ssize_t n = send(fd_.get(), line.data() + off, line.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return RetriableError(std::string("write: ") + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
  return Status::Ok();
}

namespace {

Status Serve(const ServiceOptions& o, LineSocket& lab) {
  const StrategyInfo* info = FindStrategy(o.strategy);
  if (info == nullptr) return InvalidArgumentError("unknown strategy " + o.strategy);
  LabEnv env;
  env.strategy = o.strategy;
  env.db_url = o.db_url;
  env.schema = o.schema;
  env.bootstrap = o.bootstrap;
  env.topic = o.topic;
  env.workdir = o.workdir;
  env.self = SelfExecutable();
  env.partitions = o.partitions;
  std::unique_ptr<Strategy> strategy = info->make();
  if (Status st = strategy->Start(env); !st.ok()) {
    (void)lab.WriteLine("START-FAILED " + st.ToString());
    return st;
  }
  COURIER_RETURN_IF_ERROR(lab.WriteLine("READY"));
  while (true) {
    if (!lab.Readable(Duration(50))) {
      strategy->Idle();
      continue;
    }
    std::string line;
    if (lab.ReadLine(Duration(1000), &line) != LineSocket::Got::kLine) {
      return Status::Ok();  // the lab is gone, or stopped this service
    }
    std::istringstream in(line);
    std::string verb;
    in >> verb;
    if (verb == "CMD") {
      Command c;
      int fails = 0, fault = 0;
      in >> c.seq >> c.order_id >> c.version >> c.event_id >> fails >> fault;
      if (in.fail()) return InvalidArgumentError("bad command line: " + line);
      c.commit_fails = fails != 0;
      c.fault = fault == 1 ? Fault::kCrashBetween : fault == 2 ? Fault::kCrashInside : Fault::kNone;
      Status st = strategy->Handle(c);
      COURIER_RETURN_IF_ERROR(
          lab.WriteLine(st.ok() ? "OK " + std::to_string(c.seq)
                                : "ERR " + std::to_string(c.seq) + " " + st.ToString()));
    } else if (verb == "FINISH") {
      int64_t ms = 0;
      in >> ms;
      Status st = strategy->Finish(Clock::Real().Now() + Duration(ms));
      COURIER_RETURN_IF_ERROR(
          lab.WriteLine(st.ok() ? "FINISHED" : "FINISH-FAILED " + st.ToString()));
      return Status::Ok();
    } else {
      return InvalidArgumentError("bad command line: " + line);
    }
  }
}

}  // namespace

int RunService(const ServiceOptions& o) {
  auto fd = ConnectAbstract(o.socket);
  if (!fd.ok()) {
    std::fprintf(stderr, "courier lab-service: %s\n", fd.status().ToString().c_str());
    return 1;
  }
  LineSocket lab(std::move(*fd));
  Status st = Serve(o, lab);
  if (!st.ok()) {
    std::fprintf(stderr, "courier lab-service: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}

}  // namespace courier::lab
