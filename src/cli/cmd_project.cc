// `courier project` (every event once, in order, to a projection: courier/projection.h) and
// `courier project wait` (read-your-writes).
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <tuple>

#include "brokers/http/http.h"
#include "cli/commands.h"
#include "cli/project_http.h"
#include "cli/relay_config.h"
#include "core/encoding.h"
#include "core/http_endpoint.h"
#include "core/log.h"
#include "core/postgres.h"
#include "core/subprocess.h"
#include "courier/projection.h"
#include "eventstore/projection_wait.h"

namespace courier::cli {
namespace {

// Beyond --handler-timeout, before the server ends an idle projection transaction: the time
// between one handler's end and the next statement, on a loaded machine.
constexpr Duration kIdleMargin{10000};

// The event as `courier consume` gives it to a handler, with where it was: the event store's
// position and version, or Kafka's topic, partition and offset.
std::string EventLine(const ProjectedEvent& p) {
  Event e;
  e.event_id = p.event_id;
  e.aggregate_type = p.stream_type;
  e.aggregate_id = p.stream_id;
  e.event_type = p.event_type;
  e.payload = p.payload;
  e.headers = p.headers;
  e.created_at_us = p.created_at_us;
  nlohmann::json where = nlohmann::json::object();
  if (p.partition >= 0) {
    where["topic"] = p.topic;
    where["partition"] = p.partition;
    where["offset"] = p.offset;
  } else {
    where["position"] = p.position;
    where["version"] = p.version;
  }
  return EventToJsonLine(e, where.dump());
}

Event ToEvent(const ProjectedEvent& p) {
  Event e;
  e.event_id = p.event_id;
  e.aggregate_type = p.stream_type;
  e.aggregate_id = p.stream_id;
  e.event_type = p.event_type;
  e.payload = p.payload;
  e.headers = p.headers;
  e.created_at_us = p.created_at_us;
  return e;
}

// --exec: the command reads the event on stdin and prints SQL, which runs in the transaction
// of the checkpoint. A non-zero exit, or SQL that fails, rolls the batch back. On SIGTERM the
// command is killed at once (with its process group) rather than waited for up to `timeout`:
// the batch rolls back with its checkpoint and is applied again on restart.
ProjectionHandler ExecHandler(const std::string& command, Duration timeout) {
  return [command, timeout](pg_conn* conn, const ProjectedEvent& e) -> Status {
    COURIER_ASSIGN_OR_RETURN(ShellRun run, RunShell(command, EventLine(e) + "\n", timeout,
                                                    /*capture_stdout=*/true, &StopRequest()));
    if (run.exit_code != 0) {
      return RetriableError("handler exited with " + std::to_string(run.exit_code));
    }
    if (run.output.find_first_not_of(" \t\r\n") == std::string::npos) return Status::Ok();
    Status st = PgRun(conn, run.output);
    if (!st.ok()) return st.WithContext("the handler's SQL failed");
    return Status::Ok();
  };
}

// --to: a POST per event (Idempotency-Key = event_id). Its effects are outside the database,
// so the checkpoint only follows the 2xx: at-least-once.
ProjectionHandler HttpHandler(const std::string& url, Duration timeout) {
  return [url, timeout](pg_conn*, const ProjectedEvent& e) {
    return PostEvent(url, ToEvent(e), timeout);
  };
}

int RunWait(const ProjectFlags& f) {
  Duration timeout{0};
  if (Status st = ParseFlagDuration("--timeout", f.timeout, &timeout); !st.ok()) return Fail(st);
  const ProjectionOptions& o = f.options;
  if (o.name.empty()) return Fail(InvalidArgumentError("project wait needs --name NAME"));
  // Whether a flag was given, not its value: a negative one is wrong, not missing.
  const bool by_position = f.position_option->count() > 0;
  const bool by_offset = f.offset_option->count() > 0 || f.partition_option->count() > 0;
  for (auto [given, flag, value] :
       {std::tuple{by_position, "--position", f.position},
        std::tuple{by_offset, "--offset", f.offset},
        std::tuple{by_offset, "--partition", static_cast<long long>(f.partition)}}) {
    if (given && value < 0) {
      return Fail(
          InvalidArgumentError(std::string(flag) + " must be >= 0, not " + std::to_string(value)));
    }
  }
  Result<int64_t> at = 0;
  if (by_position) {
    if (by_offset) {
      return Fail(InvalidArgumentError(
          "project wait takes --position (event store) or --partition and --offset (Kafka)"));
    }
    at =
        WaitForEventPosition(o.db_url, o.name, f.position, timeout, o.events_table, &StopRequest());
  } else {
    if (f.offset_option->count() == 0 || f.partition_option->count() == 0) {
      return Fail(InvalidArgumentError(
          "project wait needs --partition P --offset O (Kafka) or --position N (event store)"));
    }
    at = WaitForOffset(o.db_url, o.name, f.topic, f.partition, f.offset, timeout, o.offsets_table,
                       &StopRequest());
  }
  if (!at.ok()) {
    const Status& st = at.status();
    // One line, as a timeout (or a SIGTERM before the answer) is an answer rather than a
    // failure of the command.
    if (st.code() == StatusCode::kRetriable || st.code() == StatusCode::kCancelled) {
      std::fprintf(stderr, "%s\n", log::Scrub(st.message()).c_str());
      return kExitFailure;
    }
    return Fail(st);
  }
  return 0;
}

}  // namespace

CLI::App* AddProjectCommand(CLI::App& app, ProjectFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "project",
      "Apply every event once, in order, to a projection in a PostgreSQL database (--db),\n"
      "keeping its checkpoint there: the event store's events in global order (--event-store;\n"
      "an event committed late with a lower position is never skipped), or a Kafka topic's\n"
      "(--from; listen-to-yourself: partitions assigned directly, next offsets in\n"
      "courier_projection_offsets, never Kafka's committed offsets).\n"
      "Handler: --exec 'COMMAND' (/bin/sh -c): the event as a JSON line on stdin; what the\n"
      "         command prints on stdout is SQL, run in the transaction that moves the\n"
      "         checkpoint: exactly-once effects. A non-zero exit or failing SQL rolls both\n"
      "         back and is retried. The SQL must not COMMIT or ROLLBACK.\n"
      "         --to http(s)://host/path: a POST per event (Idempotency-Key = event_id); its\n"
      "         effects are outside the database, so the checkpoint moves after the 2xx and a\n"
      "         crash in between sends the event again: at-least-once.\n"
      "A failing handler is retried with capped backoff until it passes: an event is never\n"
      "skipped. An unreachable database is waited for.\n"
      "--rebuild zeroes the checkpoint and replays from the first event; with --exec, --reset\n"
      "SQL (e.g. 'TRUNCATE balances') clears the projection's state in the same transaction.\n"
      "`project wait` waits until the projection applied a given offset or position.");
  cmd->add_flag("--event-store", f->event_store, "Read the event store in --db")->group("Source");
  cmd->add_option("--events-table", f->options.events_table,
                  "The event store's table (checkpoints: <table>_projections)")
      ->type_name("NAME")
      ->capture_default_str()
      ->group("Source");
  cmd->add_option("--from", f->options.from_url, "Or a Kafka topic: kafka://host:port/TOPIC")
      ->type_name("URL")
      ->group("Source");
  cmd->add_option("--db", f->options.db_url, "The projection's database (postgres://...)")
      ->type_name("URL")
      ->required();
  cmd->add_option("--name", f->options.name, "The projection's name (its checkpoint's key)")
      ->type_name("NAME")
      ->required();
  cmd->add_option("--exec", f->exec, "Handler command: event on stdin, SQL on stdout")
      ->type_name("COMMAND");
  cmd->add_option("--to", f->to_url, "Handler URL (at-least-once)")->type_name("URL");
  cmd->add_flag("--rebuild", f->rebuild, "Zero the checkpoint and replay from the start");
  cmd->add_option("--reset", f->reset_sql,
                  "--rebuild with --exec: SQL clearing the projection's state (required)")
      ->type_name("SQL");
  cmd->add_option("--batch", f->options.batch_size, "Events per transaction")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  cmd->add_option("--offsets-table", f->options.offsets_table, "Kafka: where the offsets are")
      ->type_name("NAME")
      ->capture_default_str();
  cmd->add_option("--handler-timeout", f->handler_timeout, "Per call")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--backoff-initial", f->backoff_initial, "First retry delay")
      ->type_name("DURATION")
      ->capture_default_str();
  cmd->add_option("--backoff-max", f->backoff_max, "Longest retry delay")
      ->type_name("DURATION")
      ->capture_default_str();
  const std::string kObs = "Read-your-writes and observability";
  cmd->add_option("--metrics-port", f->metrics_port,
                  "Serve /wait (read-your-writes: GET /wait?position=N or\n"
                  "?partition=P&offset=O, &timeout=5s), /metrics and /healthz on this port (0: "
                  "off)")
      ->type_name("PORT")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535))
      ->group(kObs);
  cmd->add_option("--metrics-host", f->metrics_host,
                  "IPv4 address or host name (localhost) to serve them on; 0.0.0.0 exposes "
                  "them to the network")
      ->type_name("HOST")
      ->capture_default_str()
      ->group(kObs);
  AddCommonFlags(cmd, common);
  CLI::App* wait = cmd->add_subcommand(
      "wait",
      "Wait until projection --name in --db has applied a message (Kafka: --partition P\n"
      "--offset O, and --topic when it reads several) or an event (--position N). Exit 0\n"
      "once applied; 1 with one line saying where the projection is after --timeout (or on\n"
      "SIGTERM/SIGINT, saying it was stopped).");
  wait->fallthrough();  // --db, --name, --offsets-table, --events-table are project's
  wait->add_option("--topic", f->topic, "Kafka topic")->type_name("TOPIC");
  f->partition_option =
      wait->add_option("--partition", f->partition, "Kafka partition")->type_name("P");
  f->offset_option =
      wait->add_option("--offset", f->offset, "Kafka offset the producer got back")->type_name("O");
  f->position_option =
      wait->add_option("--position", f->position, "Event store position")->type_name("N");
  wait->add_option("--timeout", f->timeout, "How long to wait")
      ->type_name("DURATION")
      ->capture_default_str();
  f->wait_command = wait;
  return cmd;
}

int RunProject(const ProjectFlags& f) {
  if (f.wait_command->parsed()) return RunWait(f);
  ProjectionOptions o = f.options;
  Duration handler_timeout{0};
  for (auto [flag, text, out] :
       {std::tuple{"--handler-timeout", &f.handler_timeout, &handler_timeout},
        std::tuple{"--backoff-initial", &f.backoff_initial, &o.backoff_initial},
        std::tuple{"--backoff-max", &f.backoff_max, &o.backoff_max}}) {
    if (Status st = ParseFlagDuration(flag, *text, out); !st.ok()) return Fail(st);
  }
  // A frozen projector's transaction (and the checkpoint's row lock its standby waits on) is
  // ended by the server once idle past what a handler may take.
  o.idle_in_transaction_timeout = handler_timeout + kIdleMargin;
  if (f.event_store == !o.from_url.empty()) {
    return Fail(InvalidArgumentError(
        "give the source as --event-store or --from kafka://host:port/TOPIC (one)"));
  }
  if (f.to_url.empty() == f.exec.empty()) {
    return Fail(InvalidArgumentError("give the handler as --exec COMMAND or --to URL (one)"));
  }
  if (!f.reset_sql.empty() && !f.rebuild) {
    return Fail(InvalidArgumentError("--reset is for --rebuild"));
  }
  if (f.rebuild && !f.exec.empty() && f.reset_sql.empty()) {
    return Fail(InvalidArgumentError(
        "--rebuild with --exec needs --reset SQL clearing the projection's state (replaying "
        "into the old state would apply every event twice)"));
  }
  ProjectionHandler handler;
  if (!f.to_url.empty()) {
    if (Status st = InitCurl(); !st.ok()) return Fail(st);
    handler = HttpHandler(f.to_url, handler_timeout);
  } else {
    handler = ExecHandler(f.exec, handler_timeout);
  }
  From from = From::Checkpoint();
  if (f.rebuild) {
    const std::string reset = f.reset_sql;
    from = From::Start([reset](pg_conn* conn) {
      return reset.empty() ? Status::Ok() : PgRun(conn, reset).WithContext("--reset");
    });
  }
  o.fault_points = FaultPointsFromEnvironment();
  Projection projection(o);
  // Ends the /wait requests in progress: on SIGTERM, and before the server stops (which waits
  // for them).
  StopSignal closing;
  std::unique_ptr<HttpEndpoint> endpoint;
  if (f.metrics_port > 0) {
    const ProjectionServer server{&o, f.event_store, &projection, &closing};
    auto started = HttpEndpoint::StartThreaded(
        f.metrics_host, f.metrics_port,
        [server](const HttpRequest& r) { return ServeProjection(r, server); });
    if (!started.ok()) return Fail(started.status());
    endpoint = std::move(started).value();
    log::Info("serving /wait, /metrics and /healthz",
              {{"address", f.metrics_host + ":" + std::to_string(endpoint->port())}});
  }
  // SIGTERM and SIGINT set StopRequest(); the projection has its own signal.
  std::atomic<bool> done{false};
  std::thread watcher([&] {
    while (!done.load()) {
      if (StopRequest().requested()) {
        projection.RequestStop();
        closing.Request();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  Status st = projection.Subscribe(from, handler);
  done.store(true);
  watcher.join();
  closing.Request();
  // The waits in progress answer (503) within their next check (200 ms); their answers are
  // sent before the server closes.
  if (endpoint != nullptr) endpoint->Drain(std::chrono::milliseconds(2000));
  endpoint.reset();
  if (!st.ok()) return Fail(st);
  return 0;
}

}  // namespace courier::cli
