// The courier binary's input checks: `courier config check` runs the relay's own checks and
// reports every error of a file, each at its line; numbers and durations out of range are one
// line and exit 2 in every command; `courier help`.
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include "support/fixtures.h"

namespace courier::test {
namespace {

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::stringstream ss(text);
  for (std::string line; std::getline(ss, line);) lines.push_back(line);
  return lines;
}

// Every error of the file in one run, in the file's order, each `file:line: what is wrong`:
// values the relay refuses (sink parameters, numbers, the metrics address) included.
TEST(Cli, ConfigCheckReportsEveryErrorOfTheFile) {
  TempDir dir;
  const std::string file = dir.File("relay.toml");
  std::ofstream(file) << "source = \"sqlite://" << dir.File("app.db") << "\"\n"  // 1
                      << "sink = [\n"                                            // 2
                      << "  \"redis://127.0.0.1:6379/s?maxlen=abc\",\n"          // 3
                      << "  \"redis://127.0.0.1:6379/s?foo=1\",\n"               // 4
                      << "  \"redis-cache://127.0.0.1:6379/p?ttl=abc\",\n"       // 5
                      << "]\n"                                                   // 6
                      << "metrics-port = 99999\n"                                // 7
                      << "batch-size = \"1e3\"\n"                                // 8
                      << "lease = \"99999999999999d\"\n"                         // 9
                      << "batch_sise = 5\n"                                      // 10
                      << "secret = \"${COURIER_TEST_UNSET_VAR}\"\n";             // 11
  unsetenv("COURIER_TEST_UNSET_VAR");
  CommandResult r = RunCourier({"config", "check", file});
  EXPECT_EQ(r.exit_code, 2);
  const std::string e = "courier: error: " + file;
  EXPECT_EQ(Lines(r.err),
            (std::vector<std::string>{
                e + ":3: redis sink: maxlen must be a positive number, not 'abc'",
                e + ":4: redis sink: unknown parameter 'foo' (known: db, maxlen)",
                e + ":5: redis-cache sink: ttl must be seconds (0: none), not "
                    "'abc'",
                e + ":7: --metrics-port: Value 99999 not in range 0 to 65535",
                e + ":8: --batch-size must be a whole number from 1 to 1000000, not '1e3'",
                e + ":9: --lease: '99999999999999d' is too long a duration; at most 36500d",
                e + ":10: unknown key 'batch_sise' (keys are the command's long flags, see --help)",
                e + ":11: environment variable COURIER_TEST_UNSET_VAR is not set",
                e + ":11: unknown key 'secret' (keys are the command's long flags, see --help)",
            }))
      << r.err;
  EXPECT_EQ(r.out, "");
}

// Table capture's keys: a list of tables (or one string) and the event format, checked as the
// relay checks them.
TEST(Cli, ConfigCheckReadsCaptureAndFormat) {
  TempDir dir;
  const std::string file = dir.File("relay.toml");
  const std::string source = "source = \"postgres://app@127.0.0.1:1/app\"\n";
  std::ofstream(file) << source << "sink = \"file://" << dir.File("out.jsonl") << "\"\n"
                      << "mode = \"cdc\"\n"
                      << "capture = [\"public.products, sales.orders (id, status)\",\n"
                      << "           \"public.items WHERE (id > 0)\"]\n"
                      << "format = \"debezium\"\n";
  CommandResult ok = RunCourier({"config", "check", file});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find(": ok: relay from "), std::string::npos) << ok.out;

  std::ofstream(file, std::ios::trunc)
      << source << "sink = \"file://" << dir.File("out.jsonl") << "\"\n"  // 1, 2
      << "mode = \"cdc\"\n"                                               // 3
      << "capture = [\"public.products\",\n"                              // 4
      << "           \"public.items junk\"]\n"                            // 5
      << "format = \"avro\"\n";                                           // 6
  CommandResult bad = RunCourier({"config", "check", file});
  EXPECT_EQ(bad.exit_code, 2);
  const std::string e = "courier: error: " + file;
  EXPECT_EQ(Lines(bad.err),
            (std::vector<std::string>{
                e + ":5: --capture 'public.items junk': unexpected 'junk'; write TABLE "
                    "[(COLUMN, ...)] [WHERE (CONDITION)], entries separated by commas",
                e + ":6: --format must be courier or debezium, not 'avro'",
            }))
      << bad.err;

  std::ofstream(file, std::ios::trunc)
      << source << "sink = \"file://" << dir.File("out.jsonl") << "\"\n"
      << "capture = \"public.products\"\n";
  CommandResult polled = RunCourier({"config", "check", file});
  EXPECT_EQ(polled.exit_code, 2);
  EXPECT_NE(polled.err.find(":3: --capture needs --mode cdc: table changes are read from the "
                            "write-ahead log"),
            std::string::npos)
      << polled.err;
}

// One code path: for each setting, `config check` and the relay refuse it with the same
// message, exit 2, before connecting anywhere; and what config check accepts, the relay runs.
TEST(Cli, RelayRefusesExactlyWhatConfigCheckRefuses) {
  TempDir dir;
  const std::string file = dir.File("relay.toml");
  const std::string source = "source = \"sqlite://" + dir.File("app.db") + "\"\n";
  const std::string sink = "sink = \"file://" + dir.File("out.jsonl") + "\"\n";
  struct Case {
    std::string settings, error;
  };
  for (const Case& c : std::vector<Case>{
           {source + "sink = \"redis://127.0.0.1:1/s?maxlen=abc\"\n",
            "redis sink: maxlen must be a positive number, not 'abc'"},
           {source + "sink = \"redis://127.0.0.1:1/s?maxlen=12abc\"\n",
            "redis sink: maxlen must be a positive number, not '12abc'"},
           {source + "sink = \"redis://127.0.0.1:1/s?foo=1\"\n",
            "redis sink: unknown parameter 'foo' (known: db, maxlen)"},
           {source + "sink = \"redis-cache://127.0.0.1:1/p?ttl=abc\"\n",
            "redis-cache sink: ttl must be seconds (0: none), not 'abc'"},
           {source + "sink = \"redis://127.0.0.1:6379x/s\"\n",
            "'redis://127.0.0.1:6379x/s' has a bad port '6379x'; a port is a number from 1 to "
            "65535"},
           {source + "sink = \"nats://127.0.0.1:-1/s\"\n",
            "'nats://127.0.0.1:-1/s' has a bad port '-1'; a port is a number from 1 to 65535"},
           {"source = \"postgres://app:pw@127.0.0.1:99999/app\"\n" + sink,
            "'postgres://app:***@127.0.0.1:99999/app' has a bad port '99999'; a port is a number "
            "from 1 to 65535"},
           {source + "sink = \"file://" + dir.File("out.jsonl") + "?fsync=no\"\n",
            "file sink: unknown parameter 'fsync' (it takes none; a '?' in the file's name is "
            "written %3F)"},
           {source + "sink = \"amqp://mq:5672x/%2F/orders\"\n",
            "'amqp://mq:5672x/%2F/orders' has a bad port '5672x'; a port is a number from 1 to "
            "65535"},
           {source + "sink = \"nats://127.0.0.1:1/orders?foo=1\"\n",
            "nats URL: unknown parameter 'foo' (known with nats+tls://: cacert, cert, key, "
            "verify)"},
           {source + "sink = \"kafka://127.0.0.1:1/t?acks=1\"\n",
            "Kafka producer: `acks` must be set to `all` when `enable.idempotence` is true"},
           {source + sink + "metrics-port = 99999\n",
            "--metrics-port: Value 99999 not in range 0 to 65535"},
           {source + sink + "metrics-port = -1\n",
            "--metrics-port: Value -1 not in range 0 to 65535"},
           {source + sink + "metrics-port = 9100\nmetrics-host = \"no-such-host.invalid\"\n",
            "--metrics-host: 'no-such-host.invalid' is neither an IPv4 address nor a name that "
            "resolves to one"},
           {source + sink + "batch-size = \"1e3\"\n",
            "--batch-size must be a whole number from 1 to 1000000, not '1e3'"},
           {source + sink + "batch-size = -5\n",
            "--batch-size must be a whole number from 1 to 1000000, not '-5'"},
           {source + sink + "shard = \"1/4x\"\n", "--shard must be K/N (e.g. 0/4), not '1/4x'"},
           {source + sink + "retention = \"99999999999999d\"\n",
            "--retention: '99999999999999d' is too long a duration; at most 36500d"},
           {source + sink + "lease = \"500ms\"\n",
            "--lease must be at least 1s (it is renewed every quarter)"},
       }) {
    std::ofstream(file) << c.settings;
    CommandResult check = RunCourier({"config", "check", file});
    EXPECT_EQ(check.exit_code, 2) << c.settings;
    const std::vector<std::string> lines = Lines(check.err);
    ASSERT_EQ(lines.size(), 1u) << c.settings << check.err;
    EXPECT_EQ(lines[0].rfind("courier: error: " + file + ":", 0), 0u) << lines[0];
    EXPECT_NE(lines[0].find(": " + c.error), std::string::npos) << c.settings << lines[0];

    CommandResult relay = RunCourier({"relay", "--config", file, "--once"}, Duration(20000));
    EXPECT_EQ(relay.exit_code, 2) << c.settings << relay.err;
    EXPECT_EQ(relay.err.rfind("courier: error: " + c.error, 0), 0u) << c.settings << relay.err;
    EXPECT_EQ(Lines(relay.err).size(), 1u) << relay.err;
  }
  // No relay got as far as its source: the SQLite file was never created.
  EXPECT_NE(::access(dir.File("app.db").c_str(), F_OK), 0);
}

// --metrics-host takes a name: localhost is resolved, by config check and by the relay, which
// serves /healthz there.
TEST(Cli, MetricsHostMayBeAName) {
  TempDir dir;
  const std::string file = dir.File("relay.toml");
  const int port = FreePort();
  std::ofstream(file) << "source = \"sqlite://" << dir.File("app.db") << "\"\n"
                      << "sink = \"file://" << dir.File("out.jsonl") << "\"\n"
                      << "metrics-host = \"localhost\"\nmetrics-port = " << port << "\n";
  CommandResult check = RunCourier({"config", "check", file});
  EXPECT_EQ(check.exit_code, 0) << check.err;
  ASSERT_OK(Migrate("sqlite://" + dir.File("app.db"), TableNames{}));
  CommandResult relay = RunCourier({"relay", "--config", file, "--once"});
  EXPECT_EQ(relay.exit_code, 0) << relay.err;
  EXPECT_NE(relay.err.find("serving the status page, /status.json, /metrics, /healthz and /readyz "
                           "address=localhost:" +
                           std::to_string(port)),
            std::string::npos)
      << relay.err;
}

// A config file is read bounded: /dev/zero, a directory or a FIFO (nobody writing) is one line
// and exit 2 at once, in config check and in --config alike.
TEST(Cli, ConfigFileThatIsNoRegularFileIsOneLine) {
  TempDir dir;
  const std::string fifo = dir.File("relay.fifo");
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  const std::string big = dir.File("big.toml");
  std::ofstream(big) << "# " << std::string(2 << 20, 'x') << "\n";
  struct Case {
    std::string path, error;
  };
  for (const Case& c : std::vector<Case>{
           {"/dev/zero",
            "config file /dev/zero is a character device, not a regular file; write the "
            "settings to a TOML file"},
           {dir.path(), "config file " + dir.path() + " is a directory; name the TOML file"},
           {fifo, "config file " + fifo +
                      " is a FIFO, not a regular file; write the settings to a TOML file"},
           {big, "config file " + big + " is larger than 1 MiB; it should hold a few settings"},
           {dir.File("missing.toml"),
            "cannot read config file " + dir.File("missing.toml") + ": No such file or directory"},
       }) {
    for (const std::vector<std::string>& args :
         {std::vector<std::string>{"config", "check", c.path},
          std::vector<std::string>{"relay", "--config", c.path}}) {
      CommandResult r = RunCourier(args, Duration(10000));
      EXPECT_EQ(r.exit_code, 2) << c.path;
      EXPECT_EQ(r.err, "courier: error: " + c.error + "\n");
    }
  }
}

// Numbers and durations out of range, in every command: one line naming the flag, exit 2
// (dev-broker --partitions -1 was an assertion failure in librdkafka, 1e3 a batch of 1).
TEST(Cli, NumbersOutOfRangeAreOneLineAndExit2) {
  TempDir dir;
  const std::string source = "sqlite://" + dir.File("app.db");
  const std::string sink = "file://" + dir.File("out.jsonl");
  struct Case {
    std::vector<std::string> args;
    std::string error;
  };
  for (const Case& c : std::vector<Case>{
           {{"relay", "--source", source, "--sink", sink, "--batch-size", "1e3"},
            "--batch-size must be a whole number from 1 to 1000000, not '1e3'"},
           {{"relay", "--source", source, "--sink", sink, "--batch-size", "0x10"},
            "--batch-size must be a whole number from 1 to 1000000, not '0x10'"},
           {{"relay", "--source", source, "--sink", sink, "--metrics-port", "-1"},
            "--metrics-port: Value -1 not in range 0 to 65535"},
           {{"relay", "--source", source, "--sink", sink, "--metrics-port", "99999"},
            "--metrics-port: Value 99999 not in range 0 to 65535"},
           {{"relay", "--source", source, "--sink", sink, "--lease", "99999999999999d"},
            "--lease: '99999999999999d' is too long a duration; at most 36500d"},
           {{"relay", "--source", source, "--sink", sink, "--poll-interval", "nan"},
            "--poll-interval: 'nan' is not a duration; write e.g. 250ms, 5s, 2m, 7d"},
           {{"dev-broker", "--partitions", "-1", "--topic", "t"},
            "--partitions: Value -1 not in range 1 to 1000"},
           {{"dev-broker", "--partitions", "0", "--topic", "t"},
            "--partitions: Value 0 not in range 1 to 1000"},
           {{"dev-broker", "--brokers", "100000"}, "--brokers: Value 100000 not in range 1 to 32"},
           {{"dev-broker", "--brokers", "-3"}, "--brokers: Value -3 not in range 1 to 32"},
           {{"tail", "file://" + dir.File("out.jsonl"), "--limit", "-1"},
            "--limit: Value -1 not in range 0 to 9223372036854775807"},
           {{"dead-letters", "list", "--source", source, "--limit", "-5"},
            "--limit: Value -5 not in range 1 to 1000000"},
           {{"consume", "--from", "redis://127.0.0.1:1/s", "--db", source, "--consumer", "c",
             "--exec", "true", "--max-attempts", "-1"},
            "--max-attempts: Value -1 not in range 0 to 1000000"},
           {{"consume", "--from", "redis://127.0.0.1:1/s", "--db", source, "--consumer", "c",
             "--exec", "true", "--claim-idle", "99999999999999d"},
            "--claim-idle: '99999999999999d' is too long a duration; at most 36500d"},
       }) {
    CommandResult r = RunCourier(c.args, Duration(20000));
    EXPECT_EQ(r.exit_code, 2) << c.args[0] << " " << c.error << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("courier: error: " + c.error, 0), 0u) << r.err;
    EXPECT_EQ(Lines(r.err).size(), 1u) << r.err;
  }
}

// A value of a TOML type its flag cannot take: one line naming the file, the line, the key and
// what it takes, exit 2, from the relay and from config check alike. `checkpoints-in-flight =
// true` became a bare flag, which took the next argument for its value ("not '--once'"); a
// float such as 4.0 or 1e1 read as a whole number.
TEST(Cli, ConfigValueOfTheWrongTypeNamesTheFileLineKeyAndType) {
  TempDir dir;
  const std::string file = dir.File("relay.toml");
  const std::string settings = "source = \"postgres://app@127.0.0.1:1/app\"\nsink = \"file://" +
                               dir.File("out.jsonl") + "\"\n";
  struct Case {
    std::string line, error;
  };
  for (const Case& c : std::vector<Case>{
           {"checkpoints-in-flight = true",
            "checkpoints-in-flight must be a whole number (N), not the boolean true"},
           {"checkpoints-in-flight = 4.0",
            "checkpoints-in-flight must be a whole number (N), not the float 4.0"},
           {"batch-size = 1e1", "batch-size must be a whole number (N), not the float 10.0"},
           {"metrics-port = 9100.5",
            "metrics-port must be a whole number (PORT), not the float 9100.5"},
           {"poll-interval = false",
            "poll-interval must be a value (DURATION), not the boolean false"},
       }) {
    std::ofstream(file, std::ios::trunc) << settings << c.line << "\n";
    const std::string expected = "courier: error: " + file + ":3: " + c.error + "\n";
    CommandResult relay = RunCourier({"relay", "--config", file, "--once"}, Duration(20000));
    EXPECT_EQ(relay.exit_code, 2) << c.line;
    EXPECT_EQ(relay.err, expected);
    CommandResult check = RunCourier({"config", "check", file});
    EXPECT_EQ(check.exit_code, 2) << c.line;
    EXPECT_EQ(check.err, expected);
  }
  // The right types are read as before.
  std::ofstream(file, std::ios::trunc)
      << settings << "checkpoints-in-flight = 2\npoll-interval = 250\nonce = true\n";
  CommandResult check = RunCourier({"config", "check", file});
  EXPECT_EQ(check.exit_code, 0) << check.err;
}

// --checkpoints-in-flight pipelines PostgreSQL's checkpoints; a SQLite outbox checkpoints each
// batch before the next. Given with a SQLite source it is refused, as --mode cdc and --shard
// are: one line, exit 2, before anything is opened; left out, SQLite runs as ever.
TEST(Cli, CheckpointsInFlightIsRefusedForSqlite) {
  TempDir dir;
  const std::string source = "sqlite://" + dir.File("app.db");
  const std::string sink = "file://" + dir.File("out.jsonl");
  const std::string error =
      "--checkpoints-in-flight applies to PostgreSQL (its checkpoints commit on a connection of "
      "their own); a SQLite outbox checkpoints each batch before the next: leave it out";
  for (const char* n : {"4", "0"}) {
    CommandResult r = RunCourier(
        {"relay", "--source", source, "--sink", sink, "--checkpoints-in-flight", n, "--once"});
    EXPECT_EQ(r.exit_code, 2) << n;
    EXPECT_EQ(r.err, "courier: error: " + error + "\n");
  }
  const std::string file = dir.File("relay.toml");
  std::ofstream(file) << "source = \"" << source << "\"\nsink = \"" << sink
                      << "\"\ncheckpoints-in-flight = 2\n";
  CommandResult check = RunCourier({"config", "check", file});
  EXPECT_EQ(check.exit_code, 2);
  EXPECT_EQ(check.err, "courier: error: " + file + ":3: " + error + "\n");
  // Nothing was opened.
  EXPECT_NE(::access(dir.File("app.db").c_str(), F_OK), 0);

  ASSERT_OK(Migrate(source, TableNames{}));
  CommandResult plain = RunCourier({"relay", "--source", source, "--sink", sink, "--once"});
  EXPECT_EQ(plain.exit_code, 0) << plain.err;
  // PostgreSQL takes it (config check: the values are checked before connecting).
  std::ofstream(file, std::ios::trunc) << "source = \"postgres://app@127.0.0.1:1/app\"\nsink = \""
                                       << sink << "\"\ncheckpoints-in-flight = 2\n";
  CommandResult pg = RunCourier({"config", "check", file});
  EXPECT_EQ(pg.exit_code, 0) << pg.err;
}

// `courier help` is `courier --help`; `courier help COMMAND` is `courier COMMAND --help`.
TEST(Cli, HelpCommand) {
  CommandResult top = RunCourier({"help"});
  EXPECT_EQ(top.exit_code, 0) << top.err;
  EXPECT_EQ(top.out, RunCourier({"--help"}).out);
  EXPECT_NE(top.out.find("help"), std::string::npos);
  for (const char* command : {"relay", "consume", "config", "dev-broker"}) {
    CommandResult sub = RunCourier({"help", command});
    EXPECT_EQ(sub.exit_code, 0) << command << sub.err;
    EXPECT_EQ(sub.out, RunCourier({command, "--help"}).out) << command;
    EXPECT_NE(sub.out.find(command), std::string::npos) << sub.out;
  }
  CommandResult unknown = RunCourier({"help", "nope"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_EQ(unknown.err,
            "courier: error: unknown command 'nope'; courier help lists the commands\n");
  // The consume help says what --claim-idle does for each broker.
  CommandResult consume = RunCourier({"help", "consume"});
  EXPECT_NE(consume.out.find("NATS redelivers after it"), std::string::npos) << consume.out;
}

}  // namespace
}  // namespace courier::test
