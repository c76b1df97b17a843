#include "core/fault_points.h"

#include <csignal>
#include <set>
#include <string>

namespace courier {
namespace {

class KillAt final : public FaultPoints {
 public:
  explicit KillAt(std::set<std::string, std::less<>> names) : names_(std::move(names)) {}
  void Reached(std::string_view name) override {
    if (names_.find(name) != names_.end()) ::raise(SIGKILL);
  }

 private:
  const std::set<std::string, std::less<>> names_;
};

}  // namespace

std::unique_ptr<FaultPoints> KillAtFaultPoints(std::string_view names) {
  std::set<std::string, std::less<>> set;
  while (!names.empty()) {
    const size_t comma = names.find(',');
    const std::string_view name = names.substr(0, comma);
    if (!name.empty()) set.emplace(name);
    if (comma == std::string_view::npos) break;
    names.remove_prefix(comma + 1);
  }
  if (set.empty()) return nullptr;
  return std::make_unique<KillAt>(std::move(set));
}

}  // namespace courier
