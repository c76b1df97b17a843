// Secrets in URLs never reach the output: a password that was not percent-encoded is refused
// before libpq can split it and echo the pieces; a wrong password fails without repeating it;
// both in text and in --log-format json. (The running relay's cmdline, logs, /metrics, status
// and dead letters: Operations.SecretsNeverShowInCmdlineLogsMetricsStatusOrDeadLetters.)
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "support/fixtures.h"

namespace courier::test {
namespace {

// Each line of a --log-format json stderr is one JSON object.
void ExpectJsonLines(const std::string& err) {
  std::stringstream lines(err);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_TRUE(nlohmann::json::parse(line, nullptr, false).is_object()) << line;
  }
}

void ExpectNone(const std::string& text, const std::vector<std::string>& pieces) {
  for (const std::string& piece : pieces) {
    EXPECT_EQ(text.find(piece), std::string::npos) << "'" << piece << "' printed: " << text;
  }
}

// libpq would read "app:pa" as host:port and echo "pa", "ss", "w@rd%zz@127.0.0.1..." back.
TEST(Secrets, UnencodedPasswordIsRefusedWithHowToWriteItAndNoPieceOfIt) {
  const std::string port = std::to_string(SharedPostgres().port());
  const std::string bad_pg = "postgres://app:pa/ss?w@rd%zz@127.0.0.1:" + port + "/app";
  const std::vector<std::string> pieces = {"pa/ss", "ss?w",   "w@rd",
                                           "rd%zz", "\"pa\"", "invalid integer value"};
  TempDir dir;
  const std::string sqlite = "sqlite://" + dir.File("app.db");
  ASSERT_OK(Migrate(sqlite, TableNames{}));
  std::ofstream(dir.File("relay.toml"))
      << "source = \"" << bad_pg << "\"\nsink = \"file:///tmp/x\"\n";
  const std::vector<std::vector<std::string>> commands = {
      {"relay", "--source", bad_pg, "--sink", "file:///dev/null", "--once"},
      {"relay", "--source", sqlite, "--sink", "redis://:pa/ss?w@rd%zz@127.0.0.1:6379/s", "--once"},
      {"relay", "--source", sqlite, "--sink", "amqp://app:pa/ss?w@rd%zz@127.0.0.1/%2F/x", "--once"},
      {"relay", "--source", sqlite, "--sink", "nats://app:pa/ss?w@rd%zz@127.0.0.1:4222/s",
       "--once"},
      {"relay", "--config", dir.File("relay.toml"), "--once"},
      {"status", "--source", bad_pg},
      {"migrate", "--source", bad_pg},
      {"dead-letters", "list", "--source", bad_pg},
      {"consume", "--from", "redis://127.0.0.1:6379/s", "--db", bad_pg, "--consumer", "c", "--exec",
       "true"},
  };
  for (const auto& command : commands) {
    for (const bool json : {false, true}) {
      std::vector<std::string> args = command;
      if (json) args.insert(args.end(), {"--log-format", "json"});
      CommandResult r = RunCourier(args);
      EXPECT_EQ(r.exit_code, 2) << args[0] << " " << args[2] << "\n" << r.err;
      EXPECT_NE(r.err.find("must be percent-encoded: write '@' as %40, '/' as %2F, '?' as %3F"),
                std::string::npos)
          << r.err;
      ExpectNone(r.err + r.out, pieces);
      if (json) ExpectJsonLines(r.err);
    }
  }
  CommandResult check = RunCourier({"config", "check", dir.File("relay.toml")});
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_NE(check.err.find("relay.toml:1: "), std::string::npos) << check.err;
  ExpectNone(check.err + check.out, pieces);
}

// The server checks this role's password: a wrong one fails with the server's reason and
// without the password, and the right one, percent-encoded, works.
TEST(Secrets, WrongPasswordFailsWithoutItAndAnEncodedOneWorks) {
  TestDb db = TestDb::Make(true);
  const std::string role = PostgresServer::kPasswordCheckedRole;
  ASSERT_OK(PgQuery(db.url, "DROP ROLE IF EXISTS " + role));
  ASSERT_OK(PgQuery(db.url, "CREATE ROLE " + role + " LOGIN SUPERUSER PASSWORD 'p@ss/w?rd#1%'"));
  const std::string rest = db.url.substr(std::string("postgres://postgres@").size());
  const std::string wrong = "postgres://" + role + ":wr%40ng%2Fsecret@" + rest;
  for (const bool json : {false, true}) {
    std::vector<std::string> args = {"relay",  "--source",         wrong,
                                     "--sink", "file:///dev/null", "--once"};
    if (json) args.insert(args.end(), {"--log-format", "json"});
    CommandResult r = RunCourier(args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find("password authentication failed for user"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("postgres://" + role + ":***@127.0.0.1"), std::string::npos) << r.err;
    ExpectNone(r.err, {"wr@ng/secret", "wr%40ng%2Fsecret"});
    if (json) ExpectJsonLines(r.err);
  }
  CommandResult ok =
      RunCourier({"status", "--source", "postgres://" + role + ":p%40ss%2Fw%3Frd%231%25@" + rest});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("source             postgres://" + role + ":***@"), std::string::npos)
      << ok.out;
  ExpectNone(ok.out + ok.err, {"p@ss/w?rd#1%", "p%40ss%2Fw%3Frd%231%25"});
}

}  // namespace
}  // namespace courier::test
