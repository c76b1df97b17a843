#include "courier/status.h"

#include <gtest/gtest.h>

namespace courier {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return InvalidArgumentError("odd");
  return x / 2;
}

Status Quarter(int x, int* out) {
  COURIER_ASSIGN_OR_RETURN(int h, Half(x));
  COURIER_ASSIGN_OR_RETURN(*out, Half(h));
  return Status::Ok();
}

TEST(Status, CarriesCodeAndContext) {
  Status st = RetriableError("connection refused").WithContext("fetch");
  EXPECT_EQ(st.code(), StatusCode::kRetriable);
  EXPECT_EQ(st.message(), "fetch: connection refused");
  EXPECT_EQ(st.ToString(), "retriable: fetch: connection refused");
  EXPECT_TRUE(Status::Ok().WithContext("x").ok());
}

TEST(Status, AssignOrReturnPropagatesTheError) {
  int out = 0;
  EXPECT_TRUE(Quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status st = Quarter(6, &out);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "odd");
}

TEST(Status, AResultBuiltFromAnOkStatusIsAnInternalError) {
  Result<int> r = Status::Ok();
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInternal);
  EXPECT_EQ(r.status().message(), "a Result was built from an OK status");
}

TEST(Status, AbortedAndFatalHaveNames) {
  EXPECT_EQ(AbortedError("version 3 taken").ToString(), "aborted: version 3 taken");
  EXPECT_EQ(FatalError("producer fenced").ToString(), "fatal: producer fenced");
}

}  // namespace
}  // namespace courier
