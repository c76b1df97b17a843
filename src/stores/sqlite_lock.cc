// The SQLite implementation of Leadership: a lock file beside the database.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/log.h"
#include "stores/leadership.h"

namespace courier {
namespace {

class FileLock final : public Leadership {
 public:
  FileLock(std::string database, std::string describe, Clock* clock)
      : database_(std::move(database)),
        path_(database_ + ".courier-relay.lock"),
        describe_(std::move(describe)),
        clock_(clock != nullptr ? clock : &Clock::Real()) {}
  ~FileLock() override { Release(); }

  // flock is released by the kernel when the holder dies: nothing can take it from a live
  // holder, so `fence` is never abandoned.
  Status Acquire(const StopSignal& stop, bool wait, StopSignal* /*fence*/) override {
    if (fd_ >= 0) return Status::Ok();
    int fd = ::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      return InvalidArgumentError("cannot open lock file " + path_ + ": " + std::strerror(errno));
    }
    bool logged = false;
    while (!stop.requested()) {
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) {
        fd_ = fd;
        if (logged) log::Info("took over the outbox", {{"database", database_}});
        return Status::Ok();
      }
      if (!wait) {
        ::close(fd);
        return FailedPreconditionError("another relay is active on this outbox (" + describe_ +
                                       "); stop it first, or run without --once to stand by");
      }
      if (!logged) {
        log::Info("another relay is active on this outbox; standing by", {{"database", database_}});
        logged = true;
      }
      clock_->SleepFor(Duration(200), stop);
    }
    ::close(fd);
    return CancelledError("stopped while standing by");
  }

  bool held() const override { return fd_ >= 0; }

  void Release() override {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  std::string database_;
  std::string path_;
  std::string describe_;
  Clock* clock_;
  int fd_ = -1;
};

}  // namespace

std::unique_ptr<Leadership> MakeFileLock(std::string database, std::string describe, Clock* clock) {
  return std::make_unique<FileLock>(std::move(database), std::move(describe), clock);
}

}  // namespace courier
