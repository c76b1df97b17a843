// Search-index sink for groonga (https://groonga.org), through its HTTP API (groonga_client.h):
//
//   groonga[+https]://host:port[/PREFIX][?tombstone_ttl=SECONDS]
//
// Changes of captured tables (Event::table_change) only. Each captured table is one groonga
// table, PREFIX + the table's name with '.' as '_' (`sales.orders` → `sales_orders`), keyed by
// the primary key's text, created on first use; each column of the row is a column of its
// own, created the first time it holds a value (strings, JSON objects and arrays: LongText with
// a full-text index in PREFIXcourier_terms; numbers: Float; booleans: Bool), so that
// `select --match_columns body --query word` finds rows. Three more columns per table:
// courier_source, the row's `after` as the event carried it, compact (the document a reader
// compares with the database, as Elasticsearch's _source), and courier_lsn / courier_position,
// its version.
//
// An insert, update or read loads the row; a delete deletes it; a truncate deletes every
// document of the table older than itself. No document ever goes back to an older version,
// also when events are delivered again: the sink reads the document's version (or its
// tombstone in PREFIXcourier_tombstones, kept `tombstone_ttl` seconds after a delete, a week by
// default; or the table's truncate in PREFIXcourier_truncates) and writes only a newer change.
// This check-then-write is safe because the relay is the only writer of these tables: it holds
// its outbox's lease, so no other relay writes between the read and the write. Writers other
// than courier must leave these tables alone.
//
// Errors: an unreachable or failing server (network errors, timeouts, HTTP 5xx) is retried as
// with any sink; a refusal (HTTP 4xx: a table or column name groonga does not allow, a value
// that does not fit its column) rejects the event with groonga's message, and the relay parks
// it as a dead letter. A refused load may have written some of the row's columns; the
// document's courier_source and version stay those of the change before.
#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "brokers/groonga/groonga_client.h"
#include "brokers/sink.h"
#include "brokers/table_change.h"
#include "core/encoding.h"
#include "core/url.h"

namespace courier {
namespace {

// A week: far longer than a relay is expected to stay down with events in flight.
constexpr int64_t kDefaultTombstoneTtl = 604800;
// How often expired tombstones are removed.
constexpr Duration kPurgeInterval{3600 * 1000};

bool IsNameChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '#' ||
         c == '@' || c == '-' || c == '_';
}

// {lsn, position} as groonga stores them.
Version VersionOf(const nlohmann::json& lsn, const nlohmann::json& position) {
  return Version{lsn.is_number() ? lsn.get<uint64_t>() : 0,
                 position.is_number() ? position.get<uint64_t>() : 0};
}

// A filter matching what is older than `v` in the columns `lsn` and `position`.
std::string OlderThan(const Version& v, const std::string& lsn, const std::string& position) {
  const std::string major = std::to_string(v.major);
  return "(" + lsn + " < " + major + " || (" + lsn + " == " + major + " && " + position + " < " +
         std::to_string(v.minor) + "))";
}

class GroongaSink final : public Sink {
 public:
  explicit GroongaSink(SinkOptions options) : options_(std::move(options)) {}

  Status Configure() override {
    COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(options_.url));
    const std::string usage = "groonga[+https]://host:port[/PREFIX][?tombstone_ttl=SECONDS]";
    if (url.hosts.empty() || url.hosts.find(',') != std::string::npos) {
      return InvalidArgumentError("groonga URL " + RedactUrl(options_.url) +
                                  " needs one host: " + usage);
    }
    prefix_ = url.path;
    if ((!prefix_.empty() && prefix_[0] == '_') ||
        !std::all_of(prefix_.begin(), prefix_.end(), IsNameChar)) {
      return InvalidArgumentError("groonga URL " + RedactUrl(options_.url) + ": the prefix '" +
                                  prefix_ +
                                  "' must be letters, digits, #, @, - or _, not starting with _");
    }
    for (const auto& [key, value] : url.query) {
      if (key != "tombstone_ttl") {
        return InvalidArgumentError("groonga sink: unknown parameter '" + key +
                                    "' (known: tombstone_ttl)");
      }
      const std::optional<int64_t> n = ParseInt64(value);
      if (!n || *n < 0) {
        return InvalidArgumentError(
            "groonga sink: tombstone_ttl must be seconds (0: forever), not '" + value + "'");
      }
      tombstone_ttl_ = *n;
    }
    base_ = std::string(url.scheme == "groonga+https" ? "https" : "http") + "://" + url.hosts;
    return Status::Ok();
  }

  Status Open() override {
    COURIER_RETURN_IF_ERROR(Configure());
    // Nothing connects yet: the server may be away now, Publish retries.
    COURIER_ASSIGN_OR_RETURN(client_, GroongaClient::Make(base_, options_.delivery_timeout));
    return Status::Ok();
  }

  std::vector<Status> Publish(std::span<const Event> batch, const StopSignal& stop) override {
    std::vector<Status> results(batch.size());
    client_->WatchStop(&stop, options_.shutdown_timeout);
    HeldBack held;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (held.Holds(batch[i], &results[i])) continue;
      if (Status fenced = CheckFence(stop); !fenced.ok()) {
        std::fill(results.begin() + static_cast<std::ptrdiff_t>(i), results.end(), fenced);
        break;
      }
      results[i] = Apply(batch[i]);
      if (results[i].ok()) continue;
      if (results[i].code() == StatusCode::kRejected) {
        held.Failed(batch[i]);
        continue;
      }
      // The server is away or failing: the rest would fail the same way, slowly.
      for (size_t j = i + 1; j < batch.size(); ++j) {
        results[j] = RetriableError("not sent: " + results[i].message());
      }
      break;
    }
    client_->WatchStop(nullptr, Duration(0));  // `stop` lives only as long as this call
    return results;
  }

  std::string Describe() const override { return RedactUrl(options_.url); }

 private:
  Status Apply(const Event& e) {
    if (!e.table_change) {
      return RejectedError(
          "the groonga sink indexes rows of captured tables (relay --capture); an outbox event "
          "(" +
          e.aggregate_type + " " + e.event_type + ") has no row");
    }
    COURIER_ASSIGN_OR_RETURN(TableChange change, ReadTableChange(e));
    COURIER_RETURN_IF_ERROR(EnsureBookkeeping());
    std::string table = prefix_ + change.table;
    std::replace(table.begin(), table.end(), '.', '_');
    COURIER_RETURN_IF_ERROR(EnsureTable(table));
    COURIER_ASSIGN_OR_RETURN(Version truncated, TruncatedAt(table));
    if (truncated >= e.version) return Status::Ok();  // stale: the table was emptied since
    if (change.kind == TableChange::Kind::kTruncate) return Truncate(table, e.version);
    const std::string tombstone_key = table + ":" + change.key;
    COURIER_ASSIGN_OR_RETURN(
        nlohmann::json current,
        client_->Run("select", {{"table", table},
                                {"filter", "_key == " + GroongaString(change.key)},
                                {"output_columns", "courier_lsn,courier_position,courier_source"},
                                {"limit", "1"}}));
    std::optional<std::string> held;  // the document's courier_source
    if (!current["records"].empty()) {
      const nlohmann::json& doc = current["records"][0];
      if (VersionOf(doc[0], doc[1]) >= e.version) return Status::Ok();  // stale
      held = doc[2].is_string() ? doc[2].get<std::string>() : "{}";
    } else {
      COURIER_ASSIGN_OR_RETURN(
          nlohmann::json tomb,
          client_->Run("select", {{"table", tombstones_},
                                  {"filter", "_key == " + GroongaString(tombstone_key)},
                                  {"output_columns", "lsn,position"},
                                  {"limit", "1"}}));
      if (!tomb["records"].empty() &&
          VersionOf(tomb["records"][0][0], tomb["records"][0][1]) >= e.version) {
        return Status::Ok();  // stale: deleted by a newer change
      }
    }
    if (change.kind == TableChange::Kind::kDelete) {
      if (held) COURIER_RETURN_IF_ERROR(Run("delete", {{"table", table}, {"key", change.key}}));
      return Load(tombstones_, {{"_key", tombstone_key},
                                {"lsn", e.version.major},
                                {"position", e.version.minor},
                                {"deleted_at", static_cast<double>(UnixMicrosNow()) / 1e6}});
    }
    const std::string row = held && !change.unavailable.empty()
                                ? CarryOver(change.after, *held, change.unavailable)
                                : change.after;
    COURIER_RETURN_IF_ERROR(LoadRow(table, change.key, row));
    // The version and the source last: a refused load above leaves them at the older change.
    return Load(table, {{"_key", change.key},
                        {"courier_lsn", e.version.major},
                        {"courier_position", e.version.minor},
                        {"courier_source", row}});
  }

  // The row's columns, each created the first time it holds a value.
  Status LoadRow(const std::string& table, const std::string& key, const std::string& row) {
    const nlohmann::json values = nlohmann::json::parse(row, nullptr, false);
    if (values.is_discarded() || !values.is_object()) {
      return RejectedError("the row of " + table + " " + key + " is no JSON object");
    }
    std::map<std::string, std::string>& columns = tables_[table];
    nlohmann::json record = {{"_key", key}};
    for (const auto& [name, value] : values.items()) {
      auto column = columns.find(name);
      if (column == columns.end()) {
        if (value.is_null()) continue;  // no type to give it yet
        const std::string type = value.is_number()    ? "Float"
                                 : value.is_boolean() ? "Bool"
                                                      : "LongText";
        COURIER_RETURN_IF_ERROR(CreateColumn(table, name, type));
        column = columns.find(name);
      }
      const std::string& type = column->second;
      if (value.is_null()) {
        // groonga has no NULL, and loading null leaves the old value: the column's empty value.
        if (type == "Float" || type == "Int64" || type == "Int32" || type == "UInt64") {
          record[name] = 0;
        } else if (type == "Bool") {
          record[name] = false;
        } else {
          record[name] = "";
        }
      } else if (value.is_object() || value.is_array()) {
        record[name] = value.dump();
      } else {
        record[name] = value;
      }
    }
    return Load(table, record);
  }

  Status Truncate(const std::string& table, const Version& v) {
    COURIER_RETURN_IF_ERROR(Run(
        "delete", {{"table", table}, {"filter", OlderThan(v, "courier_lsn", "courier_position")}}));
    COURIER_RETURN_IF_ERROR(
        Run("delete", {{"table", tombstones_},
                       {"filter", "_key @^ " + GroongaString(table + ":") + " && " +
                                      OlderThan(v, "lsn", "position")}}));
    COURIER_RETURN_IF_ERROR(
        Load(truncates_, {{"_key", table}, {"lsn", v.major}, {"position", v.minor}}));
    truncated_[table] = v;
    return Status::Ok();
  }

  Result<Version> TruncatedAt(const std::string& table) {
    auto known = truncated_.find(table);
    if (known != truncated_.end()) return known->second;
    COURIER_ASSIGN_OR_RETURN(nlohmann::json found,
                             client_->Run("select", {{"table", truncates_},
                                                     {"filter", "_key == " + GroongaString(table)},
                                                     {"output_columns", "lsn,position"}}));
    Version v;
    if (!found["records"].empty()) v = VersionOf(found["records"][0][0], found["records"][0][1]);
    truncated_[table] = v;  // only this relay writes it from now on (see the top)
    return v;
  }

  // The tables the sink keeps its bookkeeping in, and the lexicon of the full-text indexes.
  Status EnsureBookkeeping() {
    if (bookkept_) return PurgeTombstones();
    tombstones_ = prefix_ + "courier_tombstones";
    truncates_ = prefix_ + "courier_truncates";
    terms_ = prefix_ + "courier_terms";
    COURIER_RETURN_IF_ERROR(CreateTable(tombstones_, "TABLE_PAT_KEY", {}));
    COURIER_RETURN_IF_ERROR(CreateColumnOnce(tombstones_, "lsn", "UInt64"));
    COURIER_RETURN_IF_ERROR(CreateColumnOnce(tombstones_, "position", "UInt64"));
    COURIER_RETURN_IF_ERROR(CreateColumnOnce(tombstones_, "deleted_at", "Time"));
    COURIER_RETURN_IF_ERROR(CreateTable(truncates_, "TABLE_HASH_KEY", {}));
    COURIER_RETURN_IF_ERROR(CreateColumnOnce(truncates_, "lsn", "UInt64"));
    COURIER_RETURN_IF_ERROR(CreateColumnOnce(truncates_, "position", "UInt64"));
    COURIER_RETURN_IF_ERROR(
        CreateTable(terms_, "TABLE_PAT_KEY",
                    {{"default_tokenizer", "TokenBigram"}, {"normalizer", "NormalizerAuto"}}));
    bookkept_ = true;
    return PurgeTombstones();
  }

  // Tombstones older than tombstone_ttl, at most once per kPurgeInterval.
  Status PurgeTombstones() {
    const TimePoint now = Clock::Real().Now();
    if (tombstone_ttl_ == 0 || (last_purge_ && now - *last_purge_ < kPurgeInterval)) {
      return Status::Ok();
    }
    const double before = static_cast<double>(UnixMicrosNow()) / 1e6 - tombstone_ttl_;
    COURIER_RETURN_IF_ERROR(Run(
        "delete", {{"table", tombstones_}, {"filter", "deleted_at < " + std::to_string(before)}}));
    last_purge_ = now;
    return Status::Ok();
  }

  // The table of a captured table with its version and source columns; its other columns as
  // groonga lists them, so a restarted sink knows their types.
  Status EnsureTable(const std::string& table) {
    if (tables_.count(table) > 0) return Status::Ok();
    COURIER_RETURN_IF_ERROR(CreateTable(table, "TABLE_HASH_KEY", {}));
    COURIER_ASSIGN_OR_RETURN(nlohmann::json listed,
                             client_->Run("column_list", {{"table", table}}));
    std::map<std::string, std::string> columns;
    for (size_t i = 1; listed.is_array() && i < listed.size(); ++i) {
      // [id, name, path, type, flags, domain, range, source]
      const nlohmann::json& c = listed[i];
      if (c.size() > 6 && c[1].is_string() && c[6].is_string()) {
        columns[c[1].get<std::string>()] = c[6].get<std::string>();
      }
    }
    for (const auto& [name, type] :
         std::vector<std::pair<std::string, std::string>>{{"courier_lsn", "UInt64"},
                                                          {"courier_position", "UInt64"},
                                                          {"courier_source", "LongText"}}) {
      if (columns.count(name) == 0) {
        COURIER_RETURN_IF_ERROR(
            Run("column_create",
                {{"table", table}, {"name", name}, {"flags", "COLUMN_SCALAR"}, {"type", type}}));
      }
    }
    tables_[table] = std::move(columns);
    return Status::Ok();
  }

  Status CreateTable(const std::string& name, const std::string& flags, GroongaArgs more) {
    COURIER_ASSIGN_OR_RETURN(nlohmann::json exists, client_->Run("object_exist", {{"name", name}}));
    if (exists == true) return Status::Ok();
    GroongaArgs args = {{"name", name}, {"flags", flags}, {"key_type", "ShortText"}};
    args.insert(args.end(), more.begin(), more.end());
    return Run("table_create", args);
  }

  Status CreateColumnOnce(const std::string& table, const std::string& name,
                          const std::string& type) {
    COURIER_ASSIGN_OR_RETURN(nlohmann::json exists,
                             client_->Run("object_exist", {{"name", table + "." + name}}));
    if (exists == true) return Status::Ok();
    return Run("column_create",
               {{"table", table}, {"name", name}, {"flags", "COLUMN_SCALAR"}, {"type", type}});
  }

  // A column of a captured table; text gets a full-text index.
  Status CreateColumn(const std::string& table, const std::string& name, const std::string& type) {
    COURIER_RETURN_IF_ERROR(
        Run("column_create",
            {{"table", table}, {"name", name}, {"flags", "COLUMN_SCALAR"}, {"type", type}}));
    if (type == "LongText") {
      COURIER_RETURN_IF_ERROR(Run("column_create", {{"table", terms_},
                                                    {"name", table + "_" + name},
                                                    {"flags", "COLUMN_INDEX|WITH_POSITION"},
                                                    {"type", table},
                                                    {"source", name}}));
    }
    tables_[table][name] = type;
    return Status::Ok();
  }

  Status Load(const std::string& table, const nlohmann::json& record) {
    return Run("load", {{"table", table}}, nlohmann::json::array({record}).dump());
  }

  Status Run(std::string_view command, const GroongaArgs& args, std::string_view body = {}) {
    return client_->Run(command, args, body).status();
  }

  SinkOptions options_;
  std::string base_;
  std::string prefix_;
  int64_t tombstone_ttl_ = kDefaultTombstoneTtl;
  std::unique_ptr<GroongaClient> client_;
  bool bookkept_ = false;
  std::string tombstones_;
  std::string truncates_;
  std::string terms_;
  std::optional<TimePoint> last_purge_;
  // Per groonga table: its columns and their types, as far as this sink knows them.
  std::map<std::string, std::map<std::string, std::string>> tables_;
  // Per groonga table: the version of its last truncate ({0,0}: none).
  std::map<std::string, Version> truncated_;
};

}  // namespace

std::unique_ptr<Sink> MakeGroongaSink(const SinkOptions& options) {
  return std::make_unique<GroongaSink>(options);
}

}  // namespace courier
