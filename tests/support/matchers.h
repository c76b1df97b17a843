// Assert the specific error, not just "not ok".
#pragma once

#include <gtest/gtest.h>

#include "courier/status.h"

#define EXPECT_OK(expr)                                      \
  do {                                                       \
    const auto& _st = (expr);                                \
    EXPECT_TRUE(_st.ok()) << ::courier::test::Describe(_st); \
  } while (false)
#define ASSERT_OK(expr)                                      \
  do {                                                       \
    const auto& _st = (expr);                                \
    ASSERT_TRUE(_st.ok()) << ::courier::test::Describe(_st); \
  } while (false)
#define EXPECT_STATUS(expr, expected_code)                                                    \
  do {                                                                                        \
    const auto& _st = (expr);                                                                 \
    EXPECT_EQ(::courier::test::CodeOf(_st), expected_code) << ::courier::test::Describe(_st); \
  } while (false)

namespace courier::test {
inline std::string Describe(const Status& s) { return s.ToString(); }
template <typename T>
std::string Describe(const Result<T>& r) {
  return r.status().ToString();
}
inline StatusCode CodeOf(const Status& s) { return s.code(); }
template <typename T>
StatusCode CodeOf(const Result<T>& r) {
  return r.ok() ? StatusCode::kOk : r.status().code();
}
}  // namespace courier::test
