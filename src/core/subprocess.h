// Child processes for the demo and the tests: spawn, signal, wait with a deadline. The
// destructor kills (SIGKILL) and reaps a child that is still running.
//
// Thread-safety: one owner thread per Subprocess.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "core/clock.h"
#include "courier/status.h"

namespace courier {

class Subprocess {
 public:
  // stdout/stderr go to the given files (appended), or are inherited when empty; stdin is
  // read from `stdin_path` when given.
  static Result<Subprocess> Spawn(const std::vector<std::string>& argv,
                                  const std::string& stdout_path = "",
                                  const std::string& stderr_path = "",
                                  const std::string& stdin_path = "");
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
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
  std::optional<int> exit_;
};

// The path of the running executable.
std::string SelfExecutable();

}  // namespace courier
