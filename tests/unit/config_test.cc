#include "cli/config.h"

#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

#include "support/matchers.h"

namespace courier {
namespace {

ConfigKey Known(const std::string& k) {
  if (k == "source" || k == "sink") return {ConfigKey::Kind::kValue, "URL"};
  if (k == "batch-size") return {ConfigKey::Kind::kWholeNumber, "N"};
  if (k == "retain") return {ConfigKey::Kind::kFlag, ""};
  return {};
}

TEST(Config, KeysBecomeFlags) {
  auto args = ConfigToArgs("source = \"sqlite:///a.db\"\nbatch-size = 500\nretain = true\n",
                           "relay.toml", Known);
  ASSERT_OK(args);
  std::vector<std::string> sorted;
  for (const ConfigArg& a : *args) sorted.push_back(a.arg + " @" + std::to_string(a.line));
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<std::string>{"--batch-size=500 @2", "--retain @3",
                                              "--source=sqlite:///a.db @1"}));
}

// Each element of an array keeps its own line (a sink list spread over several lines).
TEST(Config, ArrayElementsKeepTheirLines) {
  auto args =
      ConfigToArgs("sink = [\n  \"file:///a\",\n\n  \"file:///b\",\n]\n", "relay.toml", Known);
  ASSERT_OK(args);
  ASSERT_EQ(args->size(), 2u);
  EXPECT_EQ((*args)[0].arg, "--sink=file:///a");
  EXPECT_EQ((*args)[0].line, 2);
  EXPECT_EQ((*args)[1].line, 4);
}

// With an error list, every error of the file is reported (not only the first), each at its
// line, and the good keys are still returned.
TEST(Config, EveryErrorIsCollected) {
  unsetenv("COURIER_TEST_MISSING");
  unsetenv("COURIER_TEST_MISSING_TOO");
  std::vector<std::string> errors;
  auto text = InterpolateEnv(
      "source = \"${COURIER_TEST_MISSING}\"\nbatch-size = 5\nsink = "
      "\"${COURIER_TEST_MISSING_TOO}\"\n"
      "x = \"${unterminated\"\n",
      "relay.toml", &errors);
  ASSERT_OK(text);
  auto args = ConfigToArgs(*text + "batch_sise = 1\nretain = { a = 1 }\nsinks = 2\n", "relay.toml",
                           Known, &errors);
  ASSERT_OK(args);
  EXPECT_EQ(errors, (std::vector<std::string>{
                        "relay.toml:1: environment variable COURIER_TEST_MISSING is not set",
                        "relay.toml:3: environment variable COURIER_TEST_MISSING_TOO is not set",
                        "relay.toml:4: unterminated ${ (write ${NAME}, or $${ for a literal)",
                        "relay.toml:5: unknown key 'batch_sise' (keys are the command's long "
                        "flags, see --help)",
                        "relay.toml:6: retain must be true or false, not a table",
                        "relay.toml:7: unknown key 'sinks' (keys are the command's long flags, "
                        "see --help)",
                        "relay.toml:4: unknown key 'x' (keys are the command's long flags, see "
                        "--help)",
                    }));
  std::vector<std::string> good;
  for (const ConfigArg& a : *args) good.push_back(a.arg);
  EXPECT_EQ(good, (std::vector<std::string>{"--batch-size=5", "--sink=", "--source="}));
}

// A config file is a regular file of at most 1 MiB: /dev/zero, a directory or a FIFO is one
// error line, at once.
TEST(Config, OnlyRegularFilesOfBoundedSizeAreRead) {
  const std::string dir = ::testing::TempDir() + "/config_read_" + std::to_string(::getpid());
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  EXPECT_EQ(ReadConfigFile(dir).status().message(),
            "config file " + dir + " is a directory; name the TOML file");
  const std::string fifo = dir + "/fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(
      ReadConfigFile(fifo).status().message(),
      "config file " + fifo + " is a FIFO, not a regular file; write the settings to a TOML file");
  EXPECT_EQ(ReadConfigFile("/dev/zero").status().message(),
            "config file /dev/zero is a character device, not a regular file; write the "
            "settings to a TOML file");
  const std::string big = dir + "/big.toml";
  {
    std::ofstream out(big);
    out << "# " << std::string(kMaxConfigBytes, 'x') << "\n";
  }
  EXPECT_EQ(ReadConfigFile(big).status().message(),
            "config file " + big + " is larger than 1 MiB; it should hold a few settings");
  const std::string small = dir + "/relay.toml";
  std::ofstream(small) << "batch-size = 5\n";
  EXPECT_EQ(*ReadConfigFile(small), "batch-size = 5\n");
  EXPECT_STATUS(ReadConfigFile(dir + "/missing.toml"), StatusCode::kInvalidArgument);
  for (const std::string& f : {fifo, big, small}) ::unlink(f.c_str());
  ::rmdir(dir.c_str());
}

TEST(Config, UnknownKeyNamesTheLine) {
  auto args = ConfigToArgs("source = \"x\"\n\nbatch_sise = 5\n", "relay.toml", Known);
  EXPECT_STATUS(args, StatusCode::kInvalidArgument);
  EXPECT_NE(args.status().message().find("relay.toml:3: unknown key 'batch_sise'"),
            std::string::npos)
      << args.status().message();
}

// A value of a TOML type the flag cannot take is one line naming the file, the line, the key
// and what it takes: a boolean for a value (`checkpoints-in-flight = true` became a bare flag,
// which took the next argument for its value), a float for a whole number (4.0 read as 4).
TEST(Config, ValuesOfTheWrongTypeNameTheLineTheKeyAndTheType) {
  struct Case {
    std::string text, error;
  };
  for (const Case& c : std::vector<Case>{
           {"batch-size = true\n",
            "relay.toml:1: batch-size must be a whole number (N), not the "
            "boolean true"},
           {"source = \"x\"\nbatch-size = 4.0\n",
            "relay.toml:2: batch-size must be a whole number (N), not the float 4.0"},
           {"batch-size = 1e1\n",
            "relay.toml:1: batch-size must be a whole number (N), not the float 10.0"},
           {"batch-size = 1.5\n",
            "relay.toml:1: batch-size must be a whole number (N), not the float 1.5"},
           {"sink = false\n", "relay.toml:1: sink must be a value (URL), not the boolean false"},
           {"sink = [\"file:///a\",\n  true]\n",
            "relay.toml:2: sink must be a value (URL), not the boolean true"},
           {"source = { a = 1 }\n", "relay.toml:1: source must be a value (URL), not a table"},
       }) {
    auto args = ConfigToArgs(c.text, "relay.toml", Known);
    ASSERT_FALSE(args.ok()) << c.text;
    EXPECT_EQ(args.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(args.status().message(), c.error);
  }
  // Floats stay floats where a value is not a whole number (a duration of 1.5 ms), and
  // whole numbers and flags are read as before.
  auto args = ConfigToArgs("source = 1.5\nsink = 2.0\nbatch-size = 4\nretain = false\n",
                           "relay.toml", Known);
  ASSERT_OK(args);
  std::vector<std::string> got;
  for (const ConfigArg& a : *args) got.push_back(a.arg);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<std::string>{"--batch-size=4", "--sink=2.0", "--source=1.5"}));
}

TEST(Config, SyntaxErrorNamesTheLine) {
  auto args = ConfigToArgs("source = \"x\"\nsink = \n", "relay.toml", Known);
  EXPECT_STATUS(args, StatusCode::kInvalidArgument);
  EXPECT_EQ(args.status().message().rfind("relay.toml:2:", 0), 0u) << args.status().message();
}

// Found by tests/fuzz/config_fuzz.cc: toml++ 3.3.0 reached __builtin_unreachable() on these
// characters (undefined behaviour; the sanitizer build aborts). They are syntax errors.
TEST(Config, NonAsciiOutsideStringsIsASyntaxError) {
  auto key = ConfigToArgs("source = \"x\"\n\xc3\xbc = 2\n", "relay.toml", Known);
  EXPECT_STATUS(key, StatusCode::kInvalidArgument);
  EXPECT_EQ(key.status().message(),
            "relay.toml:2: Error while parsing root table: expected keys, tables, whitespace or "
            "comments, saw '\xc3\xbc'");
  auto date = ConfigToArgs("retention = 1979-05-2\xc9\xab\xcf\xbe:32:00Z\n", "relay.toml", Known);
  EXPECT_STATUS(date, StatusCode::kInvalidArgument);
  EXPECT_EQ(date.status().message(),
            "relay.toml:1: Error while parsing value: could not determine value type");
}

TEST(Config, EnvironmentInterpolation) {
  setenv("COURIER_TEST_SECRET", "s3cret", 1);
  auto text = InterpolateEnv(
      "sink = \"kafka://h/t?sasl.password=${COURIER_TEST_SECRET}\"\n"
      "x = \"$${literal}\"",
      "f.toml");
  ASSERT_OK(text);
  EXPECT_EQ(*text, "sink = \"kafka://h/t?sasl.password=s3cret\"\nx = \"${literal}\"");
  unsetenv("COURIER_TEST_MISSING");
  auto missing = InterpolateEnv("a = 1\nb = \"${COURIER_TEST_MISSING}\"", "f.toml");
  EXPECT_STATUS(missing, StatusCode::kInvalidArgument);
  EXPECT_EQ(missing.status().message(),
            "f.toml:2: environment variable COURIER_TEST_MISSING is not set");
}

TEST(Config, Durations) {
  EXPECT_EQ(ParseDuration("250ms")->count(), 250);
  EXPECT_EQ(ParseDuration("1.5s")->count(), 1500);
  EXPECT_EQ(ParseDuration("2m")->count(), 120000);
  EXPECT_EQ(ParseDuration("7d")->count(), 7 * 86400000LL);
  EXPECT_EQ(ParseDuration("40")->count(), 40);
  EXPECT_STATUS(ParseDuration("soon"), StatusCode::kInvalidArgument);
  EXPECT_STATUS(ParseDuration("5 parsecs"), StatusCode::kInvalidArgument);
}

// Found by tests/fuzz/config_fuzz.cc: NaN, infinity and huge values were converted to int64
// (undefined behaviour; GCC's code made 1e300 a negative duration).
// The commands show the library's default durations with FormatDuration: each reads back as
// the same duration, in the largest unit that divides it.
TEST(Config, FormattedDurationsReadBackExactly) {
  for (auto [ms, text] : {std::pair<int64_t, const char*>{0, "0"},
                          {100, "100ms"},
                          {1500, "1500ms"},
                          {5000, "5s"},
                          {60000, "1m"},
                          {90000, "90s"},
                          {3600000, "1h"},
                          {7 * 86400000LL, "7d"}}) {
    EXPECT_EQ(FormatDuration(std::chrono::milliseconds(ms)), text);
    auto back = ParseDuration(text);
    ASSERT_TRUE(back.ok()) << text;
    EXPECT_EQ(back->count(), ms) << text;
  }
}

TEST(Config, DurationsOutOfRangeAreErrors) {
  EXPECT_EQ(ParseDuration("36500d")->count(), 36500 * 86400000LL);
  for (const char* text : {"36501d", "1e300", "inf", "1e300d"}) {
    auto d = ParseDuration(text);
    EXPECT_STATUS(d, StatusCode::kInvalidArgument);
    EXPECT_EQ(d.status().message(),
              "'" + std::string(text) + "' is too long a duration; at most 36500d");
  }
  auto nan = ParseDuration("nan");
  EXPECT_STATUS(nan, StatusCode::kInvalidArgument);
  EXPECT_EQ(nan.status().message(), "'nan' is not a duration; write e.g. 250ms, 5s, 2m, 7d");
}

}  // namespace
}  // namespace courier
