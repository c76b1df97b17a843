// Child processes for the demo and the tests: spawn, signal, wait with a deadline. The
// destructor kills (SIGKILL) and reaps a child that is still running.
//
// Thread-safety: one owner thread per Subprocess.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/clock.h"
#include "courier/status.h"

namespace courier {

class Subprocess {
 public:
  // stdout/stderr go to the given files (appended), or are inherited when empty; stdin is
  // read from `stdin_path` when given. With `own_group` the child leads a new process group,
  // and signals (and the kill when it is dropped running) go to the whole group: a shell's
  // children do not outlive it.
  static Result<Subprocess> Spawn(const std::vector<std::string>& argv,
                                  const std::string& stdout_path = "",
                                  const std::string& stderr_path = "",
                                  const std::string& stdin_path = "", bool own_group = false);
  Subprocess(Subprocess&& other) noexcept;
  Subprocess& operator=(Subprocess&& other) noexcept;
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;
  ~Subprocess();

  pid_t pid() const { return pid_; }
  void Signal(int sig) const;
  // The exit code (or 128 + signal number) once the child ended, or nullopt while it still
  // runs after `timeout`.
  std::optional<int> Wait(Duration timeout);
  bool Running();

 private:
  Subprocess(pid_t pid, bool group) : pid_(pid), group_(group) {}
  // Where signals go: the child, or its whole process group.
  pid_t Target() const { return group_ ? -pid_ : pid_; }
  pid_t pid_ = -1;
  bool group_ = false;
  std::optional<int> exit_;
};

// A shell command run to its end by RunShell.
struct ShellRun {
  int exit_code = 0;   // or 128 + the signal that ended it
  std::string output;  // its stdout, when captured
};

// Runs `command` with /bin/sh -c, `input` on its stdin (through a temp file, so a command
// that does not read it never blocks the writer), stdout captured when `capture_stdout` (else
// inherited), stderr inherited. A command still running after `timeout` is killed with every
// process it started (its own process group): kRetriable. Once `stop` (may be null) is
// requested, it is killed the same way without waiting for the timeout: kCancelled.
// The handlers of `courier consume` and `courier project --exec` run through it.
Result<ShellRun> RunShell(const std::string& command, std::string_view input, Duration timeout,
                          bool capture_stdout, const StopSignal* stop = nullptr);

// The path of the running executable.
std::string SelfExecutable();

}  // namespace courier
