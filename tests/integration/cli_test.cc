// The courier binary: bad input gets one clear line and a non-zero exit; SIGTERM drains;
// dev-broker, tail, migrate and status work end to end.
#include <signal.h>

#include <fstream>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "cli/config.h"
#include "core/uuid.h"
#include "courier/relay.h"
#include "inbox/consume.h"
#include "stores/dead_letters.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

int64_t CountLines(const std::string& path) {
  const std::string text = ReadFile(path);
  return std::count(text.begin(), text.end(), '\n');
}

TEST(Cli, HelpTeaches) {
  CommandResult r = RunCourier({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("courier demo"), std::string::npos);
  CommandResult relay = RunCourier({"relay", "--help"});
  EXPECT_EQ(relay.exit_code, 0);
  EXPECT_NE(relay.out.find("{aggregate_type}"), std::string::npos);
}

// The value --help shows as `flag`'s default ("  --batch-size N=1000  ..." gives "1000"); empty
// when it shows none.
std::string HelpDefault(const std::string& help, const std::string& flag) {
  const size_t at = help.find("  " + flag + " ");
  if (at == std::string::npos) return "";
  const size_t eq = help.find('=', at);
  if (eq == std::string::npos || eq > help.find('\n', at)) return "";
  return help.substr(eq + 1, help.find_first_of(" \n", eq) - eq - 1);
}

// Each default is defined once, in the library's options structs; the commands' help (and
// their flags) take it from there.
TEST(Cli, HelpShowsTheLibrarysDefaults) {
  const RelayOptions relay;
  const std::string relay_help = RunCourier({"relay", "--help"}).out;
  EXPECT_EQ(HelpDefault(relay_help, "--batch-size"), std::to_string(relay.batch_size));
  for (auto [flag, value] : {std::pair{"--poll-interval", relay.poll_interval},
                             {"--lease", relay.lease},
                             {"--retention", relay.retention},
                             {"--cleanup-interval", relay.cleanup_interval},
                             {"--shutdown-timeout", relay.shutdown_timeout},
                             {"--backoff-initial", relay.backoff_initial},
                             {"--backoff-max", relay.backoff_max}}) {
    EXPECT_EQ(HelpDefault(relay_help, flag), FormatDuration(value)) << flag;
  }
  EXPECT_EQ(HelpDefault(relay_help, "--table"), relay.outbox_table);
  EXPECT_EQ(HelpDefault(relay_help, "--dead-letter-policy"), "park");
  const ConsumeOptions consume;
  const std::string consume_help = RunCourier({"consume", "--help"}).out;
  for (auto [flag, value] : {std::pair{"--handler-timeout", consume.handler_timeout},
                             {"--backoff-initial", consume.backoff_initial},
                             {"--backoff-max", consume.backoff_max},
                             {"--claim-idle", consume.claim_idle},
                             {"--inbox-retention", Duration(consume.retention)}}) {
    EXPECT_EQ(HelpDefault(consume_help, flag), FormatDuration(value)) << flag;
  }
}

// What --help says of `flag`: its line and the lines its text wraps onto, spaces collapsed.
std::string HelpEntry(const std::string& help, const std::string& flag) {
  size_t at = help.find("  " + flag + " ");
  if (at == std::string::npos) return "";
  size_t end = help.find('\n', at);
  // A wrapped text goes on in lines that start with spaces and no option.
  while (end != std::string::npos && end + 1 < help.size() && help[end + 1] == ' ' &&
         help[help.find_first_not_of(' ', end + 1)] != '-') {
    end = help.find('\n', end + 1);
  }
  std::string entry;
  for (char c : help.substr(at, end - at)) {
    if (c == '\n') c = ' ';
    if (c != ' ' || (!entry.empty() && entry.back() != ' ')) entry += c;
  }
  return entry;
}

// The options naming the outbox read the same, with the same defaults, in every command that
// takes them.
TEST(Cli, OutboxOptionsReadTheSameInEveryCommand) {
  const RelayOptions defaults;
  const std::string relay_help = RunCourier({"relay", "--help"}).out;
  EXPECT_EQ(HelpDefault(relay_help, "--table"), defaults.outbox_table);
  EXPECT_EQ(HelpDefault(relay_help, "--dead-letter-table"), defaults.dead_letter_table);
  for (const char* command : {"migrate", "status", "dead-letters"}) {
    const std::string help = RunCourier({command, "--help"}).out;
    for (const char* flag : {"--source", "--table", "--dead-letter-table"}) {
      ASSERT_NE(HelpEntry(relay_help, flag), "") << flag;
      EXPECT_EQ(HelpEntry(help, flag), HelpEntry(relay_help, flag)) << command << " " << flag;
    }
  }
}

TEST(Cli, UnknownSinkSchemeIsOneLineAndExit2) {
  TempDir dir;
  CommandResult r = RunCourier({"relay", "--source", "sqlite://" + dir.File("a.db"), "--sink",
                                "rabbit://localhost/x", "--once"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(FirstLine(r.err),
            "courier: error: unknown sink scheme 'rabbit' in rabbit://localhost/x; expected "
            "kafka://host:port/topic, redis://host:port/stream, redis-cache://host:port/prefix, "
            "nats[+tls]://host:port/subject, amqp[s]://host:port/vhost/exchange, "
            "http(s)://host/path, "
            "file:///path/events.jsonl or groonga[+https]://host:port/prefix");
}

TEST(Cli, UnknownSourceSchemeIsExit2) {
  CommandResult r =
      RunCourier({"relay", "--source", "mysql://h/db", "--sink", "file:///tmp/x", "--once"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("unknown source 'mysql://h/db'"), std::string::npos) << r.err;
}

TEST(Cli, MissingOutboxTableSaysToMigrate) {
  auto url = SharedPostgres().NewDatabase();
  ASSERT_OK(url);
  CommandResult r = RunCourier({"relay", "--source", *url, "--sink", "file:///dev/null", "--once"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("table \"courier_outbox\" does not exist"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("courier migrate --source"), std::string::npos) << r.err;
}

TEST(Cli, UnreachableDatabaseOnceFailsWithTheReasonAndNoSecret) {
  const std::string url =
      "postgres://postgres:hunter2@127.0.0.1:" + std::to_string(FreePort()) + "/nope";
  CommandResult r = RunCourier({"relay", "--source", url, "--sink", "file:///dev/null", "--once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("courier: error: cannot connect to postgres://postgres:***@127.0.0.1"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("hunter2"), std::string::npos) << "secrets must never be logged";
}

TEST(Cli, UnreachableDatabaseDaemonRetriesWithBackoffUntilSigterm) {
  TempDir dir;
  const std::string url = "postgres://postgres@127.0.0.1:" + std::to_string(FreePort()) + "/x";
  auto relay =
      SpawnCourier({"relay", "--source", url, "--sink", "file:///dev/null"}, dir.File("log"));
  ASSERT_OK(relay);
  auto retries = [&] {
    const std::string log = ReadFile(dir.File("log"));
    size_t n = 0;
    for (size_t pos = 0; (pos = log.find("msg=retrying", pos)) != std::string::npos; ++pos) ++n;
    if (n == 0) {
      for (size_t pos = 0; (pos = log.find(" retrying ", pos)) != std::string::npos; ++pos) ++n;
    }
    return n;
  };
  ASSERT_TRUE(WaitUntil([&] { return retries() >= 3; }, Duration(30000)))
      << ReadFile(dir.File("log"));
  EXPECT_NE(ReadFile(dir.File("log")).find("cannot connect to"), std::string::npos);
  relay->Signal(SIGTERM);
  auto code = relay->Wait(Duration(20000));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

TEST(Cli, UnreachableBrokerOnceFailsAndKeepsTheEvents) {
  TestDb db = TestDb::Make(false);
  ASSERT_OK(
      db.Transaction({InsertEventSql(NewUuidV7(), "a", 1), InsertEventSql(NewUuidV7(), "a", 2)}));
  CommandResult r = RunCourier({"relay", "--source", db.url, "--sink",
                                "kafka://127.0.0.1:" + std::to_string(FreePort()) + "/t", "--once",
                                "--delivery-timeout", "2s"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("courier: error: 2 of 2 events not acked by kafka://"), std::string::npos)
      << r.err;
  EXPECT_EQ(db.Count("courier_outbox"), 2) << "unacked events stay in the outbox";
}

// The operator's loop: list what is parked, retry it (the relay republishes it and what was
// held behind it), drop what cannot be fixed; mistakes are one line and exit 2.
TEST(Cli, DeadLettersListRetryAndDrop) {
  TestDb db = TestDb::Make(false);
  TempDir dir;
  const std::string out = dir.File("events.jsonl");
  ASSERT_OK(db.Transaction(
      {InsertEventSql(NewUuidV7(), "a", 1),
       "INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload, headers)"
       " VALUES ('order', 'a', 'Odd', '{\"seq\":2}', '[1]')",
       InsertEventSql(NewUuidV7(), "a", 3), InsertEventSql(NewUuidV7(), "b", 4)}));
  CommandResult relay =
      RunCourier({"relay", "--source", db.url, "--sink", "file://" + out, "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  EXPECT_EQ(CountLines(out), 2) << "a's first event and b's";

  CommandResult list = RunCourier({"dead-letters", "list", "--source", db.url});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("parked"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("held"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("headers must be a JSON object"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("2 shown (1 held, 1 parked)"), std::string::npos) << list.out;

  CommandResult no_ids = RunCourier({"dead-letters", "retry", "--source", db.url});
  EXPECT_EQ(no_ids.exit_code, 2);
  EXPECT_NE(no_ids.err.find("needs the ids"), std::string::npos) << no_ids.err;
  CommandResult bad_action = RunCourier({"dead-letters", "purge", "--source", db.url});
  EXPECT_EQ(bad_action.exit_code, 2);
  CommandResult bad_policy = RunCourier({"relay", "--source", db.url, "--sink", "file://" + out,
                                         "--dead-letter-policy", "ignore", "--once"});
  EXPECT_EQ(bad_policy.exit_code, 2);
  EXPECT_NE(bad_policy.err.find("--dead-letter-policy must be park or skip"), std::string::npos);

  // Unfixed, a retry parks it again; dropping it releases the held event.
  CommandResult retry = RunCourier({"dead-letters", "retry", "--all", "--source", db.url});
  EXPECT_EQ(retry.exit_code, 0) << retry.err;
  EXPECT_NE(retry.out.find("queued 1 dead letter"), std::string::npos) << retry.out;
  ASSERT_EQ(
      RunCourier({"relay", "--source", db.url, "--sink", "file://" + out, "--once"}).exit_code, 0);
  EXPECT_EQ(db.Count("courier_dead_letter WHERE status = 'parked' AND attempts = 2"), 1);
  EXPECT_EQ(db.Count("courier_dead_letter WHERE status = 'held'"), 1);
  // --all drops what failed, not the event held behind it (which never failed).
  CommandResult drop = RunCourier({"dead-letters", "drop", "--all", "--source", db.url});
  EXPECT_EQ(drop.exit_code, 0) << drop.err;
  EXPECT_NE(drop.out.find("dropped 1 dead letter"), std::string::npos) << drop.out;
  EXPECT_EQ(db.Count("courier_dead_letter WHERE status = 'held'"), 1);
  ASSERT_EQ(
      RunCourier({"relay", "--source", db.url, "--sink", "file://" + out, "--once"}).exit_code, 0);
  EXPECT_EQ(CountLines(out), 3) << "the held event went out once its blocker was dropped\n"
                                << ReadFile(out);
  EXPECT_EQ(db.Count("courier_dead_letter"), 0);
  CommandResult empty = RunCourier({"dead-letters", "list", "--source", db.url});
  EXPECT_NE(empty.out.find("no dead letters"), std::string::npos) << empty.out;
}

// `dead-letters list` shows each error whole (the last column), and with --json one object per
// dead letter and line, every field of it, for jq.
TEST(Cli, DeadLettersListShowsTheWholeErrorAndJsonLines) {
  TestDb db = TestDb::Make(true);
  const std::string bad_id = NewUuidV7(), held_id = NewUuidV7();
  ASSERT_OK(db.Transaction(
      {"INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload,"
       " headers) VALUES ('" +
           bad_id + "', 'order', 'a', 'Odd', '{\"seq\":1}', '[1]')",
       InsertEventSql(held_id, "a", 2)}));
  ASSERT_EQ(
      RunCourier({"relay", "--source", db.url, "--sink", "file:///dev/null", "--once"}).exit_code,
      0);
  // A broker's error can be long; the end of it is often the useful part.
  const std::string long_error = "broker says: " + std::string(300, 'x') + " the end";
  ASSERT_OK(db.Transaction(
      {"UPDATE courier_dead_letter SET error = '" + long_error + "' WHERE status = 'parked'"}));

  const CommandResult text = RunCourier({"dead-letters", "list", "--source", db.url});
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find(long_error + "\n"), std::string::npos) << text.out;

  const CommandResult json = RunCourier({"dead-letters", "list", "--json", "--source", db.url});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  std::vector<nlohmann::json> rows;
  std::stringstream lines(json.out);
  for (std::string line; std::getline(lines, line);) {
    rows.push_back(nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false));
    ASSERT_TRUE(rows.back().is_object()) << "one JSON object per line: " << line;
  }
  ASSERT_EQ(rows.size(), 2u) << json.out;
  EXPECT_EQ(rows[0]["status"], "parked");
  EXPECT_EQ(rows[0]["event_id"], bad_id);
  EXPECT_EQ(rows[0]["error"], long_error);
  EXPECT_EQ(rows[0]["attempts"], 1);
  EXPECT_EQ(rows[0]["outbox"], "courier_outbox");
  EXPECT_EQ(rows[0]["aggregate_type"], "order");
  EXPECT_EQ(rows[0]["aggregate_id"], "a");
  EXPECT_EQ(rows[0]["event_type"], "Odd");
  EXPECT_EQ(rows[0]["payload"], nlohmann::json::parse("{\"seq\":1}"));
  EXPECT_TRUE(rows[0]["id"].is_number_integer());
  EXPECT_TRUE(rows[0]["outbox_id"].is_number_integer());
  EXPECT_EQ(rows[1]["status"], "held");
  EXPECT_EQ(rows[1]["event_id"], held_id);

  ASSERT_OK(db.Transaction({"DELETE FROM courier_dead_letter"}));
  const CommandResult none = RunCourier({"dead-letters", "list", "--json", "--source", db.url});
  EXPECT_EQ(none.exit_code, 0) << none.err;
  EXPECT_EQ(none.out, "") << "no dead letters: no lines";
}

// `dead-letters retry|drop` of ids that are no dead letter of the outbox names them; exit 2
// when none of the ids matched, 0 with a warning when some did.
TEST(Cli, DeadLettersRetryOrDropOfUnknownIdsNamesThem) {
  TestDb db = TestDb::Make(false);
  ASSERT_OK(db.Transaction(
      {"INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload,"
       " headers) VALUES ('" +
           NewUuidV7() + "', 'order', 'a', 'Odd', '{}', '[1]')",
       InsertEventSql(NewUuidV7(), "a", 2)}));
  ASSERT_EQ(
      RunCourier({"relay", "--source", db.url, "--sink", "file:///dev/null", "--once"}).exit_code,
      0);
  auto store = DeadLetterStore::Open(db.url, TableNames{});
  ASSERT_OK(store);
  auto rows = (*store)->List(10);
  ASSERT_OK(rows);
  ASSERT_EQ(rows->size(), 2u);
  const std::string parked = std::to_string((*rows)[0].event.id);
  const std::string held = std::to_string((*rows)[1].event.id);

  const CommandResult unknown =
      RunCourier({"dead-letters", "retry", "424242", "434343", "--source", db.url});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("no dead letter of outbox courier_outbox in courier_dead_letter has"
                             " id 424242, 434343"),
            std::string::npos)
      << unknown.err;
  const CommandResult only_held = RunCourier({"dead-letters", "retry", held, "--source", db.url});
  EXPECT_EQ(only_held.exit_code, 2);
  EXPECT_NE(only_held.err.find("not queued: " + held + " is held"), std::string::npos)
      << only_held.err;
  const CommandResult some =
      RunCourier({"dead-letters", "retry", parked, "424242", "--source", db.url});
  EXPECT_EQ(some.exit_code, 0) << some.err;
  EXPECT_NE(some.out.find("queued 1 dead letter(s) of outbox courier_outbox for retry: " + parked),
            std::string::npos)
      << some.out;
  EXPECT_NE(some.err.find("warning: no dead letter of outbox courier_outbox in courier_dead_letter"
                          " has id 424242"),
            std::string::npos)
      << some.err;
  EXPECT_EQ(db.Count("courier_dead_letter WHERE status = 'retry'"), 1);

  const CommandResult drop_unknown =
      RunCourier({"dead-letters", "drop", "424242", "--source", db.url});
  EXPECT_EQ(drop_unknown.exit_code, 2);
  EXPECT_NE(drop_unknown.err.find("has id 424242"), std::string::npos) << drop_unknown.err;
  EXPECT_EQ(db.Count("courier_dead_letter"), 2) << "nothing dropped";
}

// `courier migrate` names every table it created, and those that were already there.
TEST(Cli, MigrateNamesEveryTableItCreates) {
  for (const bool postgres : {true, false}) {
    SCOPED_TRACE(postgres ? "PostgreSQL" : "SQLite");
    TempDir dir;
    std::string url = "sqlite://" + dir.File("app.db");
    if (postgres) {
      auto fresh = SharedPostgres().NewDatabase();
      ASSERT_OK(fresh);
      url = *fresh;
    }
    const CommandResult first = RunCourier({"migrate", "--source", url, "--table", "orders"});
    ASSERT_EQ(first.exit_code, 0) << first.err;
    const std::string tables =
        postgres ? "orders, courier_dead_letter, orders_lease, courier_inbox,"
                   " courier_inbox_parked, orders_cdc_slot, orders_cdc_backfill, orders_cdc_capture"
                 : "orders, courier_dead_letter, courier_inbox, courier_inbox_parked";
    EXPECT_NE(first.out.find(": created tables " + tables + "\n"), std::string::npos) << first.out;
    const CommandResult again = RunCourier({"migrate", "--source", url, "--table", "orders"});
    ASSERT_EQ(again.exit_code, 0) << again.err;
    EXPECT_NE(again.out.find(": already there: " + tables + "\n"), std::string::npos) << again.out;
  }
}

// `courier config check`: everything short of connecting, each error at its key's line;
// secrets from the environment never printed; TLS/SASL settings reach librdkafka.
TEST(Cli, ConfigCheckNamesTheLineAndHidesSecrets) {
  TempDir dir;
  auto check = [&](const std::string& text) {
    std::ofstream(dir.File("relay.toml")) << text;
    return RunCourier({"config", "check", dir.File("relay.toml")});
  };
  const std::string source = "source = \"sqlite:///tmp/app.db\"\n";
  setenv("COURIER_TEST_KAFKA_PASSWORD", "hunter2-secret", 1);
  CommandResult ok = check(source +
                           "sink = \"kafka://127.0.0.1:9092/t?security.protocol=SASL_SSL&"
                           "sasl.mechanisms=PLAIN&sasl.username=app&"
                           "sasl.password=${COURIER_TEST_KAFKA_PASSWORD}\"\n"
                           "lease = \"3s\"\ndead-letter-policy = \"skip\"\n");
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find(": ok: relay from sqlite:///tmp/app.db to kafka://"), std::string::npos)
      << ok.out;
  EXPECT_EQ(ok.out.find("hunter2-secret"), std::string::npos) << ok.out;
  EXPECT_NE(ok.out.find("sasl.password=***"), std::string::npos) << ok.out;

  const std::string file = dir.File("relay.toml");
  struct Case {
    std::string text, error;
  };
  for (const Case& c : std::vector<Case>{
           {source + "sink = \"file:///tmp/x\"\n\nlease = \"3x\"\n",
            file + ":4: --lease: '3x' has an unknown unit"},
           {source + "sink = \"file:///tmp/x\"\nbatch-size = 0\n",
            file + ":3: --batch-size must be a whole number from 1 to 1000000, not '0'"},
           {source + "\nsink = \"nope://x\"\n", file + ":3: unknown sink scheme 'nope'"},
           {source + "sink = \"kafka://h:1/t?security.protocol=bogus\"\n",
            file + ":2: Kafka property 'security.protocol'"},
           {source + "sink = \"amqps://mq/%2F/orders?verify=maybe\"\n",
            file + ":2: amqp URL: verify must be true or false, not 'maybe'"},
           {source + "sink = \"nats://n:4222/orders?cacert=/ca.pem\"\n",
            file + ":2: nats URL nats://n:4222/orders?cacert=/ca.pem: cacert, cert, key"},
           {source + "sink = \"file:///tmp/x\"\npublication = \"${COURIER_TEST_UNSET_VAR}\"\n",
            file + ":3: environment variable COURIER_TEST_UNSET_VAR is not set"},
           {source + "sink = \"file:///tmp/x\"\nsinks = 1\n", file + ":3: unknown key 'sinks'"},
           {"sink = \"file:///tmp/x\"\n", file + ": --source is required"},
           {source + "sink = [\"file:///tmp/x\"\n", file + ":2: "},
       }) {
    CommandResult r = check(c.text);
    EXPECT_EQ(r.exit_code, 2) << c.text;
    EXPECT_EQ(r.err.rfind("courier: error: " + c.error, 0), 0u) << c.text << "\n" << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "one line: " << r.err;
  }
}

// --log-format json: one JSON object per line, for log shippers; secrets redacted there too.
TEST(Cli, JsonLogsAreOneObjectPerLine) {
  TestDb db = TestDb::Make(true);
  const std::string malformed_id = NewUuidV7();
  ASSERT_OK(db.Transaction(
      {InsertEventSql(NewUuidV7(), "a", 1),
       "INSERT INTO courier_outbox (event_id, aggregate_type, aggregate_id, event_type, payload,"
       " headers) VALUES ('" +
           malformed_id + "', 'order', 'b', 'Odd', '{}', '[1]')"}));
  const std::string source = "postgres://postgres:hunter2-secret@" +
                             db.url.substr(std::string("postgres://postgres@").size());
  CommandResult r =
      RunCourier({"relay", "--source", source, "--sink", "file://" + db.dir.File("out.jsonl"),
                  "--once", "--log-format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  CommandResult bad = RunCourier(
      {"relay", "--source", source, "--sink", "nope://x", "--once", "--log-format", "json"});
  EXPECT_EQ(bad.exit_code, 2);
  const nlohmann::json error = nlohmann::json::parse(bad.err, nullptr, false);
  EXPECT_TRUE(error.is_object() && error.value("level", "") == "error") << bad.err;
  EXPECT_EQ(error.value("exit_code", nlohmann::json()), 2) << "numbers are numbers: " << bad.err;
  std::stringstream lines(r.err);
  int parsed = 0;
  std::map<std::string, nlohmann::json> by_msg;
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    ASSERT_TRUE(j.is_object()) << line;
    EXPECT_TRUE(j.contains("ts") && j.contains("level") && j.contains("msg")) << line;
    by_msg[j.value("msg", "")] = j;
    ++parsed;
  }
  EXPECT_GE(parsed, 3);
  const nlohmann::json& stopped = by_msg["relay stopped"];
  EXPECT_EQ(stopped.value("published", nlohmann::json()), 1) << r.err;
  EXPECT_EQ(stopped.value("dead_lettered", nlohmann::json()), 1) << r.err;
  EXPECT_EQ(by_msg["relay starting"].value("once", nlohmann::json()), true) << r.err;
  const nlohmann::json& malformed = by_msg["malformed event; parked in the dead-letter table"];
  EXPECT_EQ(malformed.value("event_id", ""), malformed_id) << r.err;
  EXPECT_TRUE(malformed.value("id", nlohmann::json()).is_number_integer()) << r.err;
  EXPECT_NE(r.err.find("\"msg\":\"relay stopped\""), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("hunter2-secret"), std::string::npos) << r.err;
}

// libpq settings in the source URL (sslmode, sslrootcert...) reach the connection.
TEST(Cli, SslmodeInTheSourceUrlReachesLibpq) {
  TestDb db = TestDb::Make(true);
  CommandResult r = RunCourier(
      {"relay", "--source", db.url + "?sslmode=require", "--sink", "file:///dev/null", "--once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("SSL"), std::string::npos) << r.err;
}

TEST(Cli, MalformedConfigNamesFileAndLine) {
  TempDir dir;
  std::ofstream(dir.File("relay.toml")) << "source = \"sqlite:///x.db\"\nsink = \"file:///tmp/x\"\n"
                                        << "batch_sise = 10\n";
  CommandResult r = RunCourier({"relay", "--config", dir.File("relay.toml")});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("relay.toml:3: unknown key 'batch_sise'"), std::string::npos) << r.err;
}

TEST(Cli, ConfigFileWithEnvironmentSecretDrivesTheRelay) {
  TestDb db = TestDb::Make(false);
  ASSERT_OK(db.Transaction({InsertEventSql(NewUuidV7(), "a", 1)}));
  TempDir dir;
  std::ofstream(dir.File("relay.toml")) << "source = \"${COURIER_TEST_SOURCE}\"\n"
                                        << "sink = \"file://" << dir.File("out.jsonl") << "\"\n"
                                        << "batch-size = 10\nonce = true\n";
  setenv("COURIER_TEST_SOURCE", db.url.c_str(), 1);
  CommandResult r = RunCourier({"relay", "--config", dir.File("relay.toml")});
  unsetenv("COURIER_TEST_SOURCE");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(db.Count("courier_outbox"), 0);
  EXPECT_NE(ReadFile(dir.File("out.jsonl")).find("\"aggregate_id\":\"a\""), std::string::npos);
}

TEST(Cli, SigtermStopsClaimingWaitsForAcksAndExitsZero) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  TestDb db = TestDb::Make(true);
  // 20k events, inserted server-side.
  ASSERT_OK(PgQuery(db.url,
                    "INSERT INTO courier_outbox (aggregate_type, aggregate_id, event_type, payload)"
                    " SELECT 'order', 'agg-' || (g % 10), 'Happened', json_build_object('seq', g)"
                    " FROM generate_series(1, 20000) g"));
  auto all = PgQuery(db.url, "SELECT event_id::text FROM courier_outbox");
  ASSERT_OK(all);
  const std::set<std::string> ids(all->begin(), all->end());
  TempDir dir;
  auto relay = SpawnCourier({"relay", "--source", db.url, "--sink",
                             "kafka://" + (*broker)->bootstrap() + "/order", "--batch-size", "200"},
                            dir.File("log"));
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") < 20000; }));
  relay->Signal(SIGTERM);
  auto code = relay->Wait(Duration(30000));
  ASSERT_TRUE(code.has_value()) << "relay did not exit after SIGTERM";
  EXPECT_EQ(*code, 0) << ReadFile(dir.File("log"));
  EXPECT_NE(ReadFile(dir.File("log")).find("relay stopped"), std::string::npos);
  // Whatever was not published is still in the outbox: a second run delivers it.
  CommandResult rest = RunCourier({"relay", "--source", db.url, "--sink",
                                   "kafka://" + (*broker)->bootstrap() + "/order", "--once"});
  EXPECT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_EQ(db.Count("courier_outbox"), 0);
  const std::vector<KafkaRecord> records = ReadTopic(**broker, "order");
  std::set<std::string> seen;
  for (const KafkaRecord& r : records) seen.insert(r.event.event_id);
  EXPECT_EQ(seen, ids) << "nothing lost across SIGTERM";
}

TEST(Cli, MigrateStatusDevBrokerAndTailEndToEnd) {
  TempDir dir;
  const std::string source = "sqlite://" + dir.File("app.db");
  CommandResult m1 = RunCourier({"migrate", "--source", source});
  CommandResult m2 = RunCourier({"migrate", "--source", source});
  EXPECT_EQ(m1.exit_code, 0) << m1.err;
  EXPECT_EQ(m2.exit_code, 0) << m2.err;

  TestDb db;
  db.postgres = false;
  db.url = source;
  ASSERT_OK(
      db.Transaction({InsertEventSql(NewUuidV7(), "o-1", 1), InsertEventSql(NewUuidV7(), "o-1", 2),
                      InsertEventSql(NewUuidV7(), "o-2", 3)}));
  CommandResult st = RunCourier({"status", "--source", source, "--json"});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("\"pending\":3"), std::string::npos) << st.out;
  EXPECT_NE(st.out.find("\"relay_active\":false"), std::string::npos) << st.out;

  auto broker = SpawnCourier({"dev-broker", "--bootstrap-file", dir.File("bootstrap")},
                             dir.File("broker.log"));
  ASSERT_OK(broker);
  ASSERT_TRUE(WaitUntil([&] { return !ReadFile(dir.File("bootstrap")).empty(); }));
  std::string bootstrap = ReadFile(dir.File("bootstrap"));
  bootstrap.pop_back();  // newline
  CommandResult relay = RunCourier(
      {"relay", "--source", source, "--sink", "kafka://" + bootstrap + "/orders", "--once"});
  EXPECT_EQ(relay.exit_code, 0) << relay.err;
  CommandResult tail = RunCourier({"tail", "kafka://" + bootstrap + "/orders", "--exit-at-end"});
  EXPECT_EQ(tail.exit_code, 0) << tail.err;
  size_t lines = 0;
  for (char c : tail.out) lines += c == '\n';
  EXPECT_EQ(lines, 3u) << tail.out;
  EXPECT_NE(tail.out.find("\"aggregate_id\":\"o-2\""), std::string::npos) << tail.out;
  EXPECT_NE(tail.out.find("\"payload\":{\"seq\":3}"), std::string::npos) << tail.out;

  broker->Signal(SIGTERM);
  auto code = broker->Wait(Duration(20000));
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(*code, 0);
}

TEST(Cli, CdcOnSqliteIsExit2WithTheReason) {
  TempDir dir;
  const std::string source = "sqlite://" + dir.File("a.db");
  CommandResult m = RunCourier({"migrate", "--source", source, "--mode", "cdc"});
  EXPECT_EQ(m.exit_code, 2);
  EXPECT_NE(m.err.find("--mode cdc needs PostgreSQL"), std::string::npos) << m.err;
  CommandResult r = RunCourier(
      {"relay", "--mode", "cdc", "--source", source, "--sink", "file:///dev/null", "--once"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("a SQLite outbox is polled"), std::string::npos) << r.err;
  CommandResult bad = RunCourier(
      {"relay", "--mode", "wal", "--source", source, "--sink", "file:///dev/null", "--once"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--mode must be poll or cdc"), std::string::npos) << bad.err;
}

// migrate --mode cdc prepares the slot; status shows its lag and warns while no relay
// streams from it (it pins WAL); a CDC relay drains and the warning goes.
TEST(Cli, CdcMigrateRelayAndStatusShowTheSlot) {
  TestDb db = TestDb::Make(true);
  CommandResult m =
      RunCourier({"migrate", "--source", db.url, "--mode", "cdc", "--slot", "courier_cli_slot"});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  EXPECT_NE(m.out.find("replication slot ready"), std::string::npos) << m.out;
  ASSERT_OK(
      db.Transaction({InsertEventSql(NewUuidV7(), "a", 1), InsertEventSql(NewUuidV7(), "a", 2)}));
  CommandResult st = RunCourier({"status", "--source", db.url});
  EXPECT_EQ(st.exit_code, 0) << st.err;
  EXPECT_NE(st.out.find("cdc slot           courier_cli_slot  inactive  confirmed "),
            std::string::npos)
      << st.out;
  EXPECT_NE(st.out.find("warning: slot courier_cli_slot is inactive and retains"),
            std::string::npos)
      << st.out;
  TempDir dir;
  auto relay = SpawnCourier({"relay", "--mode", "cdc", "--slot", "courier_cli_slot", "--source",
                             db.url, "--sink", "file://" + dir.File("events.jsonl")},
                            dir.File("relay.log"));
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }));
  ASSERT_TRUE(WaitUntil([&] {
    CommandResult j = RunCourier({"status", "--source", db.url, "--json"});
    return j.out.find("\"name\":\"courier_cli_slot\",\"exists\":true,\"active\":true") !=
               std::string::npos &&
           j.out.find("\"pending\":0") != std::string::npos;
  }));
  CommandResult active = RunCourier({"status", "--source", db.url});
  EXPECT_EQ(active.out.find("warning:"), std::string::npos) << active.out;
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(20000)), 0) << ReadFile(dir.File("relay.log"));
  std::ifstream in(dir.File("events.jsonl"));
  size_t lines = 0;
  for (std::string line; std::getline(in, line);) ++lines;
  EXPECT_EQ(lines, 2u);
}

TEST(Cli, TailFollowsNewEventsLive) {
  auto broker = DevBroker::Start(1);
  ASSERT_OK(broker);
  ASSERT_OK((*broker)->CreateTopic("live", 2));
  TempDir dir;
  auto tail = Subprocess::Spawn(
      {COURIER_BINARY, "tail", "kafka://" + (*broker)->bootstrap() + "/live", "--limit", "2"},
      dir.File("out"), dir.File("err"));
  ASSERT_OK(tail);
  TestDb db = TestDb::Make(false);
  // The tail starts at the end: it must see the events relayed after it says it follows.
  ASSERT_TRUE(WaitUntil([&] {
    return ReadFile(dir.File("err")).find("following") != std::string::npos;
  })) << ReadFile(dir.File("err"));
  ASSERT_OK(
      db.Transaction({InsertEventSql(NewUuidV7(), "k", 1), InsertEventSql(NewUuidV7(), "k", 2)}));
  CommandResult relay = RunCourier({"relay", "--source", db.url, "--sink",
                                    "kafka://" + (*broker)->bootstrap() + "/live", "--once"});
  ASSERT_EQ(relay.exit_code, 0) << relay.err;
  auto code = tail->Wait(Duration(30000));
  ASSERT_TRUE(code.has_value()) << "tail did not print 2 events";
  EXPECT_EQ(*code, 0);
  EXPECT_NE(ReadFile(dir.File("out")).find("\"seq\":2"), std::string::npos);
}

}  // namespace
}  // namespace courier::test

namespace courier::test {
namespace {

TEST(Cli, SecondRelayStandsByAndTakesOverWhenTheFirstIsKilled) {
  for (bool postgres : {true, false}) {
    SCOPED_TRACE(postgres ? "postgres" : "sqlite");
    auto broker = DevBroker::Start(1);
    ASSERT_OK(broker);
    TestDb db = TestDb::Make(postgres);
    const std::vector<std::string> args = {"relay",
                                           "--source",
                                           db.url,
                                           "--sink",
                                           "kafka://" + (*broker)->bootstrap() + "/order",
                                           "--poll-interval",
                                           "20ms"};
    auto first = SpawnCourier(args, db.dir.File("first.log"));
    ASSERT_OK(first);
    ASSERT_TRUE(WaitUntil([&] {
      return ReadFile(db.dir.File("first.log")).find("connected to source") != std::string::npos;
    }));
    auto second = SpawnCourier(args, db.dir.File("second.log"));
    ASSERT_OK(second);
    ASSERT_TRUE(WaitUntil([&] {
      return ReadFile(db.dir.File("second.log")).find("standing by") != std::string::npos;
    })) << ReadFile(db.dir.File("second.log"));

    // --once does not wait behind an active relay.
    CommandResult once =
        RunCourier({"relay", "--source", db.url, "--sink", "file:///dev/null", "--once"});
    EXPECT_EQ(once.exit_code, 1);
    EXPECT_NE(once.err.find("another relay is active on this outbox"), std::string::npos)
        << once.err;
    CommandResult status = RunCourier({"status", "--source", db.url, "--json"});
    EXPECT_NE(status.out.find("\"relay_active\":true"), std::string::npos) << status.out;

    first->Signal(SIGKILL);
    first->Wait(Duration(10000));
    ASSERT_TRUE(WaitUntil([&] {
      return ReadFile(db.dir.File("second.log")).find("took over") != std::string::npos;
    })) << ReadFile(db.dir.File("second.log"));
    const std::string id = NewUuidV7();
    ASSERT_OK(db.Transaction({InsertEventSql(id, "a", 1)}));
    ASSERT_TRUE(WaitUntil([&] { return db.Count("courier_outbox") == 0; }));
    second->Signal(SIGTERM);
    EXPECT_EQ(second->Wait(Duration(20000)).value_or(-1), 0);
    ExpectDelivered(ReadTopic(**broker, "order"), {id});
  }
}

}  // namespace
}  // namespace courier::test

namespace courier::test {
namespace {

TEST(Cli, UnreachableBrokerDaemonLogsAndKeepsEventsUntilSigterm) {
  TestDb db = TestDb::Make(true);
  ASSERT_OK(db.Transaction({InsertEventSql(NewUuidV7(), "a", 1)}));
  auto relay = SpawnCourier(
      {"relay", "--source", db.url, "--sink",
       "kafka://127.0.0.1:" + std::to_string(FreePort()) + "/t", "--shutdown-timeout", "1s"},
      db.dir.File("log"));
  ASSERT_OK(relay);
  ASSERT_TRUE(WaitUntil([&] {
    return ReadFile(db.dir.File("log")).find("Kafka client error; retrying with backoff") !=
           std::string::npos;
  })) << ReadFile(db.dir.File("log"));
  relay->Signal(SIGTERM);
  EXPECT_EQ(relay->Wait(Duration(30000)).value_or(-1), 0) << ReadFile(db.dir.File("log"));
  EXPECT_EQ(db.Count("courier_outbox"), 1) << "an unacked event stays in the outbox";
}

TEST(Cli, TailReadsTheJsonlFileSink) {
  TestDb db = TestDb::Make(false);
  ASSERT_OK(
      db.Transaction({InsertEventSql(NewUuidV7(), "a", 1), InsertEventSql(NewUuidV7(), "b", 2)}));
  const std::string sink = "file://" + db.dir.File("events.jsonl");
  ASSERT_EQ(RunCourier({"relay", "--source", db.url, "--sink", sink, "--once"}).exit_code, 0);
  CommandResult tail = RunCourier({"tail", sink, "--exit-at-end"});
  EXPECT_EQ(tail.exit_code, 0) << tail.err;
  EXPECT_NE(tail.out.find("\"aggregate_id\":\"a\""), std::string::npos) << tail.out;
  EXPECT_NE(tail.out.find("\"payload\":{\"seq\":2}"), std::string::npos) << tail.out;
}

}  // namespace
}  // namespace courier::test
