// The bank account's domain, shared by both services of the example: the commands, the events
// they become, and the fold that turns a stream of events into a balance. No I/O here.
//
//   DepositFunds(amount)  -> FundsDeposited {"amount": N}
//   WithdrawFunds(amount) -> FundsWithdrawn {"amount": N}, refused when it would overdraw
//
// Listen-to-yourself writes the withdrawal to Kafka before anything can check the balance
// for sure, so there it is WithdrawalRequested: the projector, which applies each account's
// events in order, makes it a withdrawal or bounces it (Fold below, the same rule).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "courier/status.h"

namespace bank {

inline constexpr std::string_view kStreamType = "account";
inline constexpr std::string_view kFundsDeposited = "FundsDeposited";
inline constexpr std::string_view kFundsWithdrawn = "FundsWithdrawn";
inline constexpr std::string_view kWithdrawalRequested = "WithdrawalRequested";

enum class CommandType { kDeposit, kWithdraw };

struct Command {
  CommandType type = CommandType::kDeposit;
  std::string account;
  int64_t amount = 0;  // in cents, > 0
};

struct Decision {
  std::string event_type;
  std::string payload;
};

inline std::string AmountPayload(int64_t amount) {
  return "{\"amount\":" + std::to_string(amount) + "}";
}

// The amount of a payload written by AmountPayload (or by hand: {"amount": 12}); -1 when
// there is none.
inline int64_t AmountOf(std::string_view payload) {
  const size_t key = payload.find("\"amount\"");
  if (key == std::string_view::npos) return -1;
  size_t pos = payload.find(':', key);
  if (pos == std::string_view::npos) return -1;
  ++pos;
  while (pos < payload.size() && payload[pos] == ' ') ++pos;
  int64_t value = 0;
  bool digits = false;
  for (; pos < payload.size() && payload[pos] >= '0' && payload[pos] <= '9'; ++pos) {
    value = value * 10 + (payload[pos] - '0');
    digits = true;
  }
  return digits ? value : -1;
}

// An account's state as far as the events read so far say.
struct Account {
  int64_t balance = 0;
  int64_t version = 0;  // events folded (event sourcing: the stream's last version)

  // Applies one event. A WithdrawalRequested the balance cannot cover is bounced: it leaves
  // the balance alone, and Apply returns false (the projector records it as refused).
  bool Apply(std::string_view event_type, std::string_view payload) {
    ++version;
    const int64_t amount = AmountOf(payload);
    if (amount < 0) return false;
    if (event_type == kFundsDeposited) {
      balance += amount;
    } else if (event_type == kFundsWithdrawn) {
      balance -= amount;
    } else if (event_type == kWithdrawalRequested) {
      if (amount > balance) return false;
      balance -= amount;
    } else {
      return false;
    }
    return true;
  }
};

// Event sourcing: the command against the state folded from the stream. kFailedPrecondition
// for an overdraft, kInvalidArgument for a non-positive amount.
inline courier::Result<Decision> Decide(const Account& account, const Command& command) {
  if (command.amount <= 0) return courier::InvalidArgumentError("the amount must be positive");
  if (command.type == CommandType::kDeposit) {
    return Decision{std::string(kFundsDeposited), AmountPayload(command.amount)};
  }
  if (command.amount > account.balance) {
    return courier::FailedPreconditionError("insufficient funds: balance " +
                                            std::to_string(account.balance) + ", withdrawal " +
                                            std::to_string(command.amount));
  }
  return Decision{std::string(kFundsWithdrawn), AmountPayload(command.amount)};
}

}  // namespace bank
