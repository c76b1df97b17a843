// Errors as values. A Status says what went wrong and, through its code, what the caller
// should do next: retry the same call later (kRetriable), read again and redo the whole
// read-decide-write (kAborted), give up on this one item (kRejected), or stop and fix the
// input (kInvalidArgument, kNotFound, kFailedPrecondition).
//
// Thread-safety: Status and Result are values; distinct objects may be used from different
// threads, one object is not synchronised.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace courier {

enum class StatusCode {
  kOk = 0,
  // Transient: the network, a server or a lock. Retry the same call later (with backoff).
  kRetriable,
  // The destination refuses this one item for good (e.g. too large). Park it, go on.
  kRejected,
  // The caller's input is wrong (bad URL, bad config). Retrying cannot help.
  kInvalidArgument,
  // Something the caller named does not exist (e.g. the outbox table).
  kNotFound,
  // The system is not in a state where the call can work (e.g. not inside a transaction).
  kFailedPrecondition,
  // The operation was stopped on request (shutdown).
  kCancelled,
  // A bug or an unexpected answer from a dependency.
  kInternal,
  // Another instance holds the lease now (it ran out, or the destination fenced this
  // producer): publish nothing more; stand by and compete for the lease again.
  kFenced,
  // Lost a race the caller can win by starting over: an append whose expected version another
  // writer took first (a unique violation, SQLSTATE 23505), a transaction the broker aborted.
  // Re-read, decide again, write again.
  kAborted,
  // This client can do nothing more (e.g. a Kafka producer's fatal error): drop it and make a
  // new one; retrying on the same client cannot help.
  kFatal,
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "retriable: connection refused"
  std::string ToString() const;

  // Returns a copy whose message is "context: message".
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status RetriableError(std::string m) { return {StatusCode::kRetriable, std::move(m)}; }
inline Status RejectedError(std::string m) { return {StatusCode::kRejected, std::move(m)}; }
inline Status InvalidArgumentError(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status FailedPreconditionError(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status CancelledError(std::string m) { return {StatusCode::kCancelled, std::move(m)}; }
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status FencedError(std::string m) { return {StatusCode::kFenced, std::move(m)}; }
inline Status AbortedError(std::string m) { return {StatusCode::kAborted, std::move(m)}; }
inline Status FatalError(std::string m) { return {StatusCode::kFatal, std::move(m)}; }

// A value or the Status saying why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  // A Result holds a value or an error: built from an OK status it has neither, so it becomes
  // an internal error instead of an "ok" Result whose value() is empty.
  Result(Status status)  // NOLINT: implicit by design
      : status_(status.ok() ? Status(StatusCode::kInternal, "a Result was built from an OK status")
                            : std::move(status)) {}

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T&& operator*() && { return std::move(*value_); }

 private:
  std::optional<T> value_;
  Status status_;  // Ok when value_ is set.
};

}  // namespace courier

#define COURIER_CONCAT_INNER(a, b) a##b
#define COURIER_CONCAT(a, b) COURIER_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when `expr` is not ok.
#define COURIER_RETURN_IF_ERROR(expr)          \
  do {                                         \
    ::courier::Status _courier_st = (expr);    \
    if (!_courier_st.ok()) return _courier_st; \
  } while (false)

// COURIER_ASSIGN_OR_RETURN(auto x, MakeX()); declares x from a Result or returns its Status.
#define COURIER_ASSIGN_OR_RETURN(lhs, expr) \
  COURIER_ASSIGN_OR_RETURN_IMPL(COURIER_CONCAT(_courier_result_, __LINE__), lhs, expr)
#define COURIER_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
