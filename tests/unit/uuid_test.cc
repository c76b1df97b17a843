#include "core/uuid.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <set>

namespace courier {
namespace {

TEST(Uuid, V7IsCanonicalVersion7AndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewUuidV7();
    ASSERT_TRUE(IsUuid(id)) << id;
    EXPECT_EQ(id[14], '7') << id;
    EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos) << id;
    EXPECT_TRUE(seen.insert(id).second);
  }
}

TEST(Uuid, V7SortsByCreationMillisecond) {
  const std::string a = NewUuidV7();
  usleep(2000);
  const std::string b = NewUuidV7();
  EXPECT_LT(a.substr(0, 13), b.substr(0, 13));
}

TEST(Uuid, IsUuidRejectsMalformed) {
  EXPECT_FALSE(IsUuid("not-a-uuid"));
  EXPECT_FALSE(IsUuid("0190e5b2-7c1a-7abc-8def-0123456789ag"));
  EXPECT_TRUE(IsUuid("0190E5B2-7C1A-7ABC-8DEF-0123456789AB"));
}

}  // namespace
}  // namespace courier
