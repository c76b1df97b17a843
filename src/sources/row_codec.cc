#include "sources/row_codec.h"

#include "core/encoding.h"
#include "core/uuid.h"

namespace courier {
namespace {

constexpr const char* kNilUuid = "00000000-0000-0000-0000-000000000000";

}  // namespace

OutboxRow::View OutboxRow::view() const {
  auto v = [](const std::optional<std::string>& c) -> std::optional<std::string_view> {
    if (!c) return std::nullopt;
    return std::string_view(*c);
  };
  return {v(id),         v(event_id), v(aggregate_type), v(aggregate_id),
          v(event_type), v(payload),  v(headers),        v(created_at_us)};
}

void DecodeOutboxRow(const OutboxRow::View& row, DecodedRow* out) {
  Event& e = out->event;
  std::string& problem = out->error;  // the first one found, then prefixed with the row
  problem.clear();
  e.id = 0;
  e.row_id = 0;
  e.version = Version{};
  e.table_change = false;
  e.created_at_us = 0;
  auto fail = [&problem](std::string_view what, std::string_view value = {},
                         std::string_view rest = {}) {
    if (!problem.empty()) return;
    problem.append(what).append(value).append(rest);
  };
  if (!row.id) {
    fail("column id is NULL");
  } else if (std::optional<int64_t> id = ParseInt64(*row.id)) {
    e.id = *id;
    e.row_id = *id;
    if (*id > 0) e.version = Version{static_cast<uint64_t>(*id), 0};
  } else {
    fail("column id '", *row.id, "' is not an integer");
  }
  if (!row.event_id) {
    e.event_id.clear();
    fail("column event_id is NULL");
  } else {
    e.event_id.assign(*row.event_id);
    if (!IsUuid(e.event_id)) {
      fail("column event_id '", row.event_id->substr(0, 64), "' is not a UUID");
    } else if (e.event_id == kNilUuid) {
      fail("column event_id is the nil UUID (the row had no event_id); set one");
    }
  }
  const std::pair<const std::optional<std::string_view>*, std::string*> texts[] = {
      {&row.aggregate_type, &e.aggregate_type},
      {&row.aggregate_id, &e.aggregate_id},
      {&row.event_type, &e.event_type}};
  const char* names[] = {"aggregate_type", "aggregate_id", "event_type"};
  for (size_t i = 0; i < 3; ++i) {
    const auto& [in, field] = texts[i];
    field->clear();
    if (!*in) {
      fail("column ", names[i], " is NULL");
    } else if ((*in)->empty()) {
      fail("column ", names[i], " is empty");
    } else {
      field->assign(**in);
    }
  }
  // NULL: an event without a body, published with an empty one (see the header).
  e.payload.assign(row.payload.value_or(std::string_view()));
  e.headers.clear();
  if (row.headers) {
    Result<Headers> headers = HeadersFromJson(*row.headers);
    if (headers.ok()) {
      e.headers = std::move(headers).value();
    } else {
      fail("column headers: ", headers.status().message());
    }
  }
  if (!row.created_at_us) {
    fail("column created_at is NULL");
  } else if (std::optional<int64_t> us = ParseInt64(*row.created_at_us)) {
    e.created_at_us = *us;
  } else {
    fail("column created_at is ", row.created_at_us->substr(0, 64), ", not a finite time");
  }
  if (!problem.empty()) {
    problem.insert(0, "outbox row " + std::string(row.id.value_or("?")) + ": ");
  }
}

DecodedRow DecodeOutboxRow(const OutboxRow& row) {
  DecodedRow d;
  DecodeOutboxRow(row.view(), &d);
  return d;
}

std::string PgCreatedAtSql(const std::string& column) {
  // extract(epoch FROM 'infinity') is Infinity, which no int8 holds: casting it would fail
  // the whole fetch.
  return "CASE WHEN isfinite(" + column + ") AND " + column +
         " < '294000-01-01' THEN ((extract(epoch FROM " + column +
         ") * 1000000)::int8)::text ELSE quote_literal(" + column + "::text) END";
}

std::string SqliteCreatedAtSql(const std::string& column) {
  // julianday() is NULL for text that is no date (and for NULL); numbers are taken as Julian
  // day numbers, so only text counts as a time.
  return "CASE WHEN " + column + " IS NULL THEN NULL WHEN typeof(" + column +
         ") = 'text' AND julianday(" + column + ") IS NOT NULL THEN CAST(CAST(round((julianday(" +
         column + ") - 2440587.5) * 86400000.0) AS INTEGER) * 1000 AS TEXT) ELSE quote(CAST(" +
         column + " AS TEXT)) END";
}

void DecodeEventStoreRow(const OutboxRow::View& row, std::optional<std::string_view> version,
                         DecodedRow* out) {
  DecodeOutboxRow(row, out);
  if (!version) {
    if (out->error.empty()) {
      out->error = "outbox row " + std::string(row.id.value_or("?")) + ": column version is NULL";
    }
    return;
  }
  if (out->error.empty()) {
    out->event.headers.emplace_back("version", *version);
    out->event.headers.emplace_back("position", *row.id);
  }
}

DecodedRow DecodeEventStoreRow(const OutboxRow& row, const std::optional<std::string>& version) {
  DecodedRow d;
  DecodeEventStoreRow(row.view(),
                      version ? std::optional<std::string_view>(*version) : std::nullopt, &d);
  return d;
}

namespace {

// A decoded row into `batch`: an event, or a malformed row to park when its id can be read.
Status AddDecoded(const OutboxRow& row, DecodedRow d, FetchedBatch* batch) {
  if (d.error.empty()) {
    batch->events.push_back(std::move(d.event));
    return Status::Ok();
  }
  if (!row.id || !ParseInt64(*row.id)) return InvalidArgumentError(d.error);
  batch->malformed.push_back({d.event.id, d.error, kParked, d.event.aggregate_type,
                              d.event.aggregate_id, d.event.event_id});
  return Status::Ok();
}

}  // namespace

Status AddOutboxRow(const OutboxRow& row, FetchedBatch* batch) {
  return AddDecoded(row, DecodeOutboxRow(row), batch);
}

Status AddEventStoreRow(const OutboxRow& row, const std::optional<std::string>& version,
                        FetchedBatch* batch) {
  return AddDecoded(row, DecodeEventStoreRow(row, version), batch);
}

}  // namespace courier
