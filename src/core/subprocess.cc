#include "core/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <optional>

extern char** environ;

namespace courier {

Result<Subprocess> Subprocess::Spawn(const std::vector<std::string>& argv,
                                     const std::string& stdout_path, const std::string& stderr_path,
                                     const std::string& stdin_path, bool own_group) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (!stdin_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, 0, stdin_path.c_str(), O_RDONLY, 0);
  }
  if (!stdout_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, 1, stdout_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  if (!stderr_path.empty()) {
    posix_spawn_file_actions_addopen(&actions, 2, stderr_path.c_str(),
                                     O_WRONLY | O_CREAT | O_APPEND, 0644);
  }
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  if (own_group) {
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
  }
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawnattr_destroy(&attr);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return InternalError("spawn " + argv[0] + ": " + std::strerror(rc));
  return Subprocess(pid, own_group);
}

Subprocess::Subprocess(Subprocess&& other) noexcept
    : pid_(other.pid_), group_(other.group_), exit_(other.exit_) {
  other.pid_ = -1;
}

Subprocess& Subprocess::operator=(Subprocess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !exit_) {
      ::kill(Target(), SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    pid_ = other.pid_;
    group_ = other.group_;
    exit_ = other.exit_;
    other.pid_ = -1;
  }
  return *this;
}

Subprocess::~Subprocess() {
  if (pid_ > 0 && !exit_) {
    ::kill(Target(), SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

void Subprocess::Signal(int sig) const {
  if (pid_ > 0 && !exit_) ::kill(Target(), sig);
}

std::optional<int> Subprocess::Wait(Duration timeout) {
  if (exit_ || pid_ <= 0) return exit_;
  const TimePoint deadline = Clock::Real().Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_;
    }
    if (r < 0 && errno != EINTR) {
      exit_ = -1;
      return exit_;
    }
    if (Clock::Real().Now() >= deadline) return std::nullopt;
    ::usleep(5000);
  }
}

bool Subprocess::Running() { return !Wait(Duration(0)).has_value(); }

namespace {

// A temp file removed when it goes out of scope.
class TempFile {
 public:
  TempFile() : fd_(::mkstemp(path_)) {}
  ~TempFile() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(path_);
    }
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  const char* path() const { return path_; }

 private:
  char path_[32] = "/tmp/courier-shell-XXXXXX";
  int fd_;
};

}  // namespace

Result<ShellRun> RunShell(const std::string& command, std::string_view input, Duration timeout,
                          bool capture_stdout, const StopSignal* stop) {
  TempFile in;
  if (!in.ok()) return InternalError("cannot create a temp file for the command's input");
  if (::write(in.fd(), input.data(), input.size()) != static_cast<ssize_t>(input.size())) {
    return InternalError("cannot write the command's input");
  }
  std::optional<TempFile> out;
  if (capture_stdout) {
    out.emplace();
    if (!out->ok()) return InternalError("cannot create a temp file for the command's output");
  }
  COURIER_ASSIGN_OR_RETURN(
      Subprocess child,
      Subprocess::Spawn({"/bin/sh", "-c", command}, out ? out->path() : "", "", in.path(),
                        /*own_group=*/true));
  // In slices, to notice a stop request (SIGTERM) long before the timeout.
  const TimePoint deadline = Clock::Real().Now() + timeout;
  std::optional<int> code;
  while (true) {
    const Duration left = std::chrono::duration_cast<Duration>(deadline - Clock::Real().Now());
    code = child.Wait(std::max(Duration(0), std::min(left, Duration(50))));
    if (code || left <= Duration(0)) break;
    if (stop != nullptr && stop->requested()) {
      // Dropping `child` kills its process group.
      return Status(StatusCode::kCancelled, "stopping: the command was killed");
    }
  }
  if (!code) {
    return RetriableError("command still running after " + std::to_string(timeout.count()) +
                          " ms; killed");
  }
  ShellRun run{.exit_code = *code, .output = {}};
  if (out) {
    char buf[65536];
    for (ssize_t n;
         (n = ::pread(out->fd(), buf, sizeof buf, static_cast<off_t>(run.output.size()))) > 0;) {
      run.output.append(buf, static_cast<size_t>(n));
    }
  }
  return run;
}

std::string SelfExecutable() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "courier";
  return std::string(buf, static_cast<size_t>(n));
}

}  // namespace courier
