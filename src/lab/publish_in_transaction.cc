// Placeholder until the strategy's implementation lands: every method fails, so the lab
// reports it as not implemented instead of judging it.
#include "lab/strategy.h"

namespace courier::lab {
namespace {

class PublishInTransaction final : public Strategy {
 public:
  Status Start(const LabEnv&) override { return Unimplemented(); }
  Status Handle(const Command&) override { return Unimplemented(); }
  Status Prepare(const LabEnv&) override { return Unimplemented(); }
  Result<Expectation> Committed(const LabEnv&) override { return Unimplemented(); }
  Result<std::vector<DeliveredRecord>> Delivered(const LabEnv&) override { return Unimplemented(); }

 private:
  static Status Unimplemented() { return InternalError("not implemented yet"); }
};

}  // namespace

std::unique_ptr<Strategy> MakePublishInTransaction() {
  return std::make_unique<PublishInTransaction>();
}

}  // namespace courier::lab
