// JSONL file sink: one line per event (core/encoding.h), acked after fsync; and its reader
// (`courier tail`), which gives the lines as they are.
//
// Every line of the file is always a whole event: a write or fsync that fails part way (a
// full disk, a file size limit) is cut back to the last complete line before anything is
// written again, and a last line left incomplete by a writer that crashed is cut back before
// the next write. Otherwise the retried batch would be appended after a torn line, and the
// first event of the retry would exist only inside a line that does not parse.
//
// Several relays may write one file (a standby that takes over, shards, other outboxes): each
// batch is written and fsynced under an exclusive flock(2) of the file, so a batch another
// process is writing is never taken for a torn line (and cut off after it was acked), and
// batches never interleave. The kernel drops the lock of a process that dies, leaving its
// torn line to the next writer to cut.
#include <fcntl.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "brokers/reader.h"
#include "brokers/sink.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/url.h"

namespace courier {
namespace {

std::string Errno() { return std::strerror(errno); }

}  // namespace

Result<std::string> FileSinkPath(const std::string& sink_url) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(sink_url));
  if (!url.hosts.empty() && url.hosts != "localhost") {
    return InvalidArgumentError("file sink URL " + sink_url +
                                " names a host; write file:///absolute/path.jsonl");
  }
  if (url.path.empty()) {
    return InvalidArgumentError("file sink URL " + sink_url +
                                " names no file; write file:///absolute/path.jsonl");
  }
  if (!url.query.empty()) {
    return InvalidArgumentError("file sink: unknown parameter '" + url.query.front().first +
                                "' (it takes none; a '?' in the file's name is written %3F)");
  }
  return "/" + url.path;
}

namespace {

class FileSink final : public Sink {
 public:
  explicit FileSink(SinkOptions options) : options_(std::move(options)) {}
  ~FileSink() override {
    if (fd_ >= 0) ::close(fd_);
  }

  Status Configure() override {
    COURIER_ASSIGN_OR_RETURN(path_, FileSinkPath(options_.url));
    return Status::Ok();
  }

  Status Open() override {
    COURIER_RETURN_IF_ERROR(Configure());
    // O_RDWR rather than O_WRONLY: an incomplete last line is found by reading the tail (and
    // opening a FIFO does not wait for a reader). O_NONBLOCK: a FIFO whose reader stopped
    // reading makes writes wait in poll(), where the delivery timeout and a stop are seen.
    fd_ = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
    if (fd_ < 0) {
      return InvalidArgumentError("cannot open " + path_ + " for appending: " + Errno());
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return InternalError("fstat " + path_ + ": " + Errno());
    // Devices and pipes (file:///dev/null, a FIFO) have no lines to keep whole.
    regular_ = S_ISREG(st.st_mode);
    return Status::Ok();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override {
    if (Status fenced = CheckFence(stop); !fenced.ok()) {
      return std::vector<Status>(batch.size(), fenced);
    }
    buffer_.clear();  // keeps its capacity: one allocation for the run, not per batch
    for (const Event& e : batch) {
      AppendEventJsonLine(e, &buffer_);
      buffer_.push_back('\n');
    }
    Status st = Append(buffer_, stop);
    if (buffer_.capacity() > kKeptBuffer) std::string().swap(buffer_);  // a batch of big events
    return std::vector<Status>(batch.size(), st);
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  // Writes `data` and fsyncs it, under the file's lock; on failure the file is cut back to
  // where it was, so that it ends with a complete line before anyone writes again.
  Status Append(const std::string& data, const StopSignal& stop) {
    if (!regular_) return WriteAndSync(data, stop);
    COURIER_RETURN_IF_ERROR(Lock(stop));
    struct Unlock {
      int fd;
      ~Unlock() { ::flock(fd, LOCK_UN); }
    } unlock{fd_};
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return RetriableError("fstat " + path_ + ": " + Errno());
    // Under the lock every writer's batch is whole and synced: a last line without its newline
    // is a crashed writer's (or this one's, when cutting it back failed).
    COURIER_ASSIGN_OR_RETURN(const off_t before, CompleteLength(st.st_size));
    if (before < st.st_size) {
      log::Warn("cutting an incomplete last line off the file (a write was interrupted)",
                {{"file", path_}, {"bytes", st.st_size - before}, {"kept_bytes", before}});
      COURIER_RETURN_IF_ERROR(CutBack(before));
    }
    Status written = WriteAndSync(data, stop);
    if (written.ok()) return written;
    if (Status cut = CutBack(before); !cut.ok()) return written.WithContext(cut.message());
    return written;
  }

  Status WriteAndSync(const std::string& data, const StopSignal& stop) {
    COURIER_RETURN_IF_ERROR(WriteAll(data, stop));
    // Durable before acked: the relay deletes the rows only after this returns ok. EINVAL: a
    // device or pipe, which has nothing to sync.
    if (::fsync(fd_) != 0 && errno != EINVAL) {
      return RetriableError("fsync " + path_ + ": " + Errno());
    }
    return Status::Ok();
  }

  // The file's exclusive lock, waited for as long as a write may take (another process holds
  // it while it writes and syncs a batch; one that is frozen holds it until it goes on).
  Status Lock(const StopSignal& stop) {
    const TimePoint start = Clock::Real().Now();
    bool said = false;
    while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      if (errno == EINTR) continue;
      if (errno != EWOULDBLOCK) return RetriableError("flock " + path_ + ": " + Errno());
      if (!said) {
        log::Debug("waiting for the file's lock: another process is writing to it",
                   {{"file", path_}});
        said = true;
      }
      const Duration waited = std::chrono::duration_cast<Duration>(Clock::Real().Now() - start);
      if (options_.delivery_timeout.count() > 0 && waited > options_.delivery_timeout) {
        return RetriableError(path_ + ": another process has held the file's lock for " +
                              std::to_string(waited.count()) +
                              " ms (another relay writing to it, frozen?)");
      }
      if (stop.abandoned() || (stop.requested() && waited > options_.shutdown_timeout)) {
        return CancelledError(path_ + ": stopped while another process held the file's lock");
      }
      Clock::Real().SleepFor(Duration(2), StopSignal());
    }
    return Status::Ok();
  }

  // Truncates the file to `size`, the end of its last complete line, and makes that durable.
  Status CutBack(off_t size) {
    if (::ftruncate(fd_, size) != 0 || ::fsync(fd_) != 0) {
      return RetriableError("cannot cut " + path_ + " back to its last complete line: " + Errno());
    }
    return Status::Ok();
  }

  // The length of the file up to and including its last newline (0 when it has none).
  Result<off_t> CompleteLength(off_t size) {
    char buf[4096];
    off_t end = size;
    while (end > 0) {
      const off_t start = end > static_cast<off_t>(sizeof buf) ? end - sizeof buf : 0;
      const ssize_t n = ::pread(fd_, buf, static_cast<size_t>(end - start), start);
      if (n < 0) {
        if (errno == EINTR) continue;
        return RetriableError("read " + path_ + ": " + Errno());
      }
      if (n != end - start) return RetriableError("short read of " + path_);
      for (ssize_t i = n; i > 0; --i) {
        if (buf[i - 1] == '\n') return start + i;
      }
      end = start;
    }
    return off_t{0};
  }

  Status WriteAll(const std::string& data, const StopSignal& stop) {
    const TimePoint start = Clock::Real().Now();
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(fd_, data.data() + done, data.size() - done);
      if (n >= 0) {
        done += static_cast<size_t>(n);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return RetriableError("write " + path_ + ": " + Errno());
      // A pipe that is full: its reader is not reading.
      const Duration waited = std::chrono::duration_cast<Duration>(Clock::Real().Now() - start);
      if (options_.delivery_timeout.count() > 0 && waited > options_.delivery_timeout) {
        return RetriableError("write " + path_ + ": its reader took nothing for " +
                              std::to_string(waited.count()) + " ms");
      }
      if (stop.abandoned() || (stop.requested() && waited > options_.shutdown_timeout)) {
        return CancelledError("write " + path_ + ": stopped while its reader took nothing");
      }
      pollfd p{fd_, POLLOUT, 0};
      ::poll(&p, 1, 100);
    }
    return Status::Ok();
  }

  SinkOptions options_;
  std::string path_;
  int fd_ = -1;
  bool regular_ = false;
  // A batch's lines, reused from batch to batch up to kKeptBuffer bytes.
  std::string buffer_;
  static constexpr size_t kKeptBuffer = 4 << 20;
};

// The file's lines from its start, or those appended after the reader opened it; with
// to_end, the end of the file is the end.
class FileReader final : public Reader {
 public:
  Status Open(const ReaderOptions& o) {
    COURIER_ASSIGN_OR_RETURN(path_, FileSinkPath(o.url));
    // A directory opens, and reading it fails as if it were at its end: an empty file.
    struct stat st {};
    if (::stat(path_.c_str(), &st) != 0) {
      return InvalidArgumentError("cannot open " + path_ + ": " + Errno());
    }
    if (S_ISDIR(st.st_mode)) {
      return InvalidArgumentError("cannot read " + path_ +
                                  ": it is a directory; name the sink's file "
                                  "(file:///absolute/path.jsonl)");
    }
    in_.open(path_);
    if (!in_) return InvalidArgumentError("cannot open " + path_ + ": " + Errno());
    if (!o.from_beginning && !o.to_end) in_.seekg(0, std::ios::end);
    to_end_ = o.to_end;
    return Status::Ok();
  }

  Result<std::optional<Message>> Next(Duration timeout) override {
    const TimePoint deadline = Clock::Real().Now() + timeout;
    std::string line;
    while (!std::getline(in_, line)) {
      // At the end for now: a writer may append more (the sink writes whole lines only).
      in_.clear();
      if (to_end_ || Clock::Real().Now() >= deadline) return std::optional<Message>();
      Clock::Real().SleepFor(Duration(100), StopSignal());
    }
    Message m;
    m.topic = path_;
    m.line = std::move(line);
    return std::optional<Message>(std::move(m));
  }

  Status Ack(const Message&) override { return Status::Ok(); }

 private:
  std::string path_;
  std::ifstream in_;
  bool to_end_ = false;
};

}  // namespace

std::unique_ptr<Sink> MakeFileSink(const SinkOptions& options) {
  return std::make_unique<FileSink>(options);
}

Result<std::unique_ptr<Reader>> MakeFileReader(const ReaderOptions& options) {
  auto reader = std::make_unique<FileReader>();
  COURIER_RETURN_IF_ERROR(reader->Open(options));
  return std::unique_ptr<Reader>(std::move(reader));
}

}  // namespace courier
