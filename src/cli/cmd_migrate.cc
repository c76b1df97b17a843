// `courier migrate`: create the outbox's tables (and, for CDC, its publication and slot).
#include <CLI/CLI.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/relay_config.h"
#include "core/url.h"
#include "schema/migrate.h"
#include "sources/source.h"

namespace courier::cli {

CLI::App* AddMigrateCommand(CLI::App& app, MigrateFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "migrate",
      "Create the outbox and dead-letter tables (idempotent, safe to re-run). With --mode cdc\n"
      "also the publication and the replication slot (run it as the table's owner); with\n"
      "--capture also the tables whose changes the relay publishes (docs/table-cdc.md).");
  AddSourceOption(cmd, &f->source);
  cmd->add_option("--mode", f->mode, "poll, or cdc to prepare change data capture")
      ->type_name("poll|cdc")
      ->capture_default_str();
  cmd->add_option("--slot", f->cdc.slot,
                  "CDC: replication slot (default courier_<db>_<table>_<hash>)")
      ->type_name("NAME");
  cmd->add_option("--publication", f->cdc.publication,
                  "CDC: publication (default: the table's name)")
      ->type_name("NAME");
  AddCaptureOption(cmd, &f->cdc.capture);
  cmd->add_option("--outbox-format", f->outbox_format,
                  "courier, or debezium to create Debezium's outbox table (id uuid, "
                  "aggregatetype, aggregateid, type, payload jsonb) if absent")
      ->type_name("courier|debezium")
      ->capture_default_str();
  AddTableOptions(cmd, &f->tables.outbox, &f->tables.dead_letter);
  AddEventStoreOption(cmd, &f->event_store);
  AddCommonFlags(cmd, common);
  return cmd;
}

int RunMigrate(const MigrateFlags& f) {
  auto is_cdc = ParseMode(f.mode);
  if (!is_cdc.ok()) return Fail(is_cdc.status());
  CdcOptions cdc = f.cdc;
  // Capturing tables is change data capture.
  cdc.enabled = *is_cdc || !cdc.capture.empty();
  TableNames tables = f.tables;
  bool debezium = false;
  if (Status st = ParseOutboxFormat(f.outbox_format, &debezium); !st.ok()) return Fail(st);
  if (debezium) tables.outbox_format = TableNames::OutboxFormat::kDebezium;
  if (f.event_store) {
    if (debezium || !cdc.capture.empty()) {
      return Fail(InvalidArgumentError(std::string("--event-store makes an event store; ") +
                                       (debezium ? "--outbox-format debezium" : "--capture") +
                                       " is for an outbox"));
    }
    UseEventStore(true, &tables);
  }
  MigrateReport report;
  Status st = Migrate(f.source, tables, cdc, &StopRequest(), &report);
  if (!st.ok()) return Fail(st);
  auto join = [](const std::vector<std::string>& names) {
    std::string out;
    for (const std::string& n : names) out += (out.empty() ? "" : ", ") + n;
    return out;
  };
  std::string what;
  if (!report.created.empty()) what = "created tables " + join(report.created);
  if (!report.existing.empty()) {
    what += (what.empty() ? "" : "; ") + std::string("already there: ") + join(report.existing);
  }
  std::printf("migrated %s: %s%s\n", RedactUrl(f.source).c_str(), what.c_str(),
              cdc.enabled ? "; publication and replication slot ready" : "");
  if (!report.captured.empty()) {
    std::printf("capturing %s (publication %s)\n", join(report.captured).c_str(),
                report.publication.c_str());
  }
  std::string applied;
  for (const AppliedMigration& m : report.applied) {
    applied += (applied.empty() ? "applied " : ", ") + std::to_string(m.version) + " " + m.name;
  }
  std::printf("schema version %d (%s): %s\n", report.version, SchemaVersionsTable(tables).c_str(),
              applied.empty() ? "up to date" : applied.c_str());
  return 0;
}

}  // namespace courier::cli
