// A projection's Kafka source (listen-to-yourself): every partition of the topics assigned
// directly (no consumer group, so no rebalance hands a partition to another member mid-batch),
// the next offset of each kept in the projection's database with its effects:
//   courier_projection_offsets(name, topic, partition, next_offset, updated_at)
// A restart starts each partition at the offset stored there; Kafka's own committed offsets
// are never used.
#include <cstdlib>
#include <map>
#include <sstream>
#include <utility>

#include "brokers/kafka/kafka_reader.h"
#include "core/log.h"
#include "core/url.h"
#include "eventstore/projection_source.h"

namespace courier {
namespace {

using TopicPartition = std::pair<std::string, int32_t>;

class KafkaProjectionSource final : public ProjectionSource {
 public:
  KafkaProjectionSource(const ProjectionOptions& o, Url url, std::vector<std::string> topics)
      : name_(o.name),
        table_(QuoteIdent(o.offsets_table)),
        url_(std::move(url)),
        topics_(std::move(topics)) {}

  Status Prepare(PGconn* conn) override {
    return PgRun(conn, "CREATE TABLE IF NOT EXISTS " + table_ +
                           " (name text NOT NULL, topic text NOT NULL, partition integer NOT "
                           "NULL, next_offset bigint NOT NULL, updated_at timestamptz NOT NULL "
                           "DEFAULT now(), PRIMARY KEY (name, topic, partition))");
  }

  Status Resume(PGconn* conn) override {
    COURIER_ASSIGN_OR_RETURN(
        PgResult r,
        PgExec(conn, "SELECT topic, partition, next_offset FROM " + table_ + " WHERE name = $1",
               {name_}));
    committed_.clear();
    for (int i = 0; i < PQntuples(r.get()); ++i) {
      committed_[{PQgetvalue(r.get(), i, 0), std::atoi(PQgetvalue(r.get(), i, 1))}] =
          std::strtoll(PQgetvalue(r.get(), i, 2), nullptr, 10);
    }
    handed_ = committed_;
    // A fresh consumer starting at the stored offsets: whatever it had read ahead is dropped.
    reader_.reset();
    COURIER_ASSIGN_OR_RETURN(reader_, KafkaReader::Open(url_.hosts, topics_,
                                                        /*from_beginning=*/true, url_.query));
    // Records the projection has not applied yet but the broker no longer holds (retention)
    // would be skipped without a word: stop instead, and let the operator decide.
    for (const auto& [tp, next] : committed_) {
      COURIER_ASSIGN_OR_RETURN(int64_t first, reader_->FirstOffset(tp.first, tp.second));
      if (next < first) {
        return FailedPreconditionError(
            tp.first + "[" + std::to_string(tp.second) + "]: projection " + name_ +
            " has applied the records before offset " + std::to_string(next) +
            ", but the broker keeps only those from offset " + std::to_string(first) +
            " on (retention deleted the rest): raise the topic's retention, then rebuild the "
            "projection (--rebuild) from a source that has every event");
      }
    }
    reader_->StartAt(committed_);
    log::Info("projection resuming from stored offsets",
              {{"name", name_}, {"partitions", static_cast<int64_t>(committed_.size())}});
    return Status::Ok();
  }

  Result<std::vector<ProjectedEvent>> Next(int limit, Duration timeout) override {
    std::vector<ProjectedEvent> out;
    if (reader_ == nullptr) return RetriableError("the Kafka source is not resumed");
    Duration wait = timeout;
    while (static_cast<int>(out.size()) < limit) {
      COURIER_ASSIGN_OR_RETURN(std::optional<KafkaRecord> record, reader_->Poll(wait));
      if (!record) break;
      wait = Duration(0);  // the first waits; the rest take what has arrived
      const TopicPartition tp{record->topic, record->partition};
      // A partition assigned again (a new one appeared) restarts where it was assigned:
      // what was handed out already is not handed out twice.
      if (auto h = handed_.find(tp); h != handed_.end() && record->offset < h->second) continue;
      handed_[tp] = record->offset + 1;
      out.push_back(ToProjected(std::move(*record)));
    }
    return out;
  }

  Status SaveCheckpoint(PGconn* conn, const std::vector<ProjectedEvent>& batch) override {
    for (const auto& [tp, next] : NextOffsets(batch)) {
      const auto known = committed_.find(tp);
      Result<PgResult> r =
          known != committed_.end()
              ? PgExec(conn,
                       "UPDATE " + table_ +
                           " SET next_offset = $4, updated_at = now() WHERE name = $1 AND "
                           "topic = $2 AND partition = $3 AND next_offset = $5",
                       {name_, tp.first, std::to_string(tp.second), std::to_string(next),
                        std::to_string(known->second)})
              : PgExec(conn,
                       "INSERT INTO " + table_ +
                           " (name, topic, partition, next_offset) VALUES ($1, $2, $3, $4) "
                           "ON CONFLICT DO NOTHING",
                       {name_, tp.first, std::to_string(tp.second), std::to_string(next)});
      COURIER_RETURN_IF_ERROR(r.status());
      if (std::atoi(PQcmdTuples(r->get())) != 1) {
        return Status(StatusCode::kAborted, tp.first + "[" + std::to_string(tp.second) +
                                                "]'s offset is no longer where this projection "
                                                "left it");
      }
    }
    return PgExec(conn, "SELECT pg_notify($1, $2)", {kProjectionChannel, name_}).status();
  }

  void Committed(const std::vector<ProjectedEvent>& batch) override {
    for (const auto& [tp, next] : NextOffsets(batch)) committed_[tp] = next;
  }

  Status ClearCheckpoint(PGconn* conn) override {
    return PgExec(conn, "DELETE FROM " + table_ + " WHERE name = $1", {name_}).status();
  }

 private:
  static std::map<TopicPartition, int64_t> NextOffsets(const std::vector<ProjectedEvent>& batch) {
    std::map<TopicPartition, int64_t> next;
    for (const ProjectedEvent& e : batch) next[{e.topic, e.partition}] = e.offset + 1;
    return next;
  }

  static ProjectedEvent ToProjected(KafkaRecord r) {
    ProjectedEvent p;
    p.event_id = std::move(r.event.event_id);
    p.stream_type = std::move(r.event.aggregate_type);
    p.stream_id = std::move(r.event.aggregate_id);
    p.event_type = std::move(r.event.event_type);
    p.payload = std::move(r.event.payload);
    p.headers = std::move(r.event.headers);
    for (const auto& [key, value] : p.headers) {
      if (key == "version") p.version = std::strtoll(value.c_str(), nullptr, 10);
      if (key == "position") p.position = std::strtoll(value.c_str(), nullptr, 10);
    }
    p.topic = std::move(r.topic);
    p.partition = r.partition;
    p.offset = r.offset;
    p.created_at_us = r.event.created_at_us;
    return p;
  }

  const std::string name_;
  const std::string table_;  // quoted
  const Url url_;
  const std::vector<std::string> topics_;
  std::unique_ptr<KafkaReader> reader_;
  // The next offset per partition as committed in the database, and as handed out to the
  // engine (ahead of it while a batch is in hand).
  std::map<TopicPartition, int64_t> committed_;
  std::map<TopicPartition, int64_t> handed_;
};

}  // namespace

Result<std::unique_ptr<ProjectionSource>> MakeKafkaSource(const ProjectionOptions& o) {
  COURIER_ASSIGN_OR_RETURN(Url url, ParseUrl(o.from_url));
  if (url.hosts.empty()) {
    return InvalidArgumentError("--from " + RedactUrl(o.from_url) +
                                " has no broker; write kafka://host:port/TOPIC");
  }
  std::vector<std::string> topics;
  std::stringstream ss(url.path);
  for (std::string t; std::getline(ss, t, ',');) {
    if (!t.empty()) topics.push_back(t);
  }
  if (topics.empty() || url.path.find('{') != std::string::npos) {
    return InvalidArgumentError(
        "a projection reads concrete topics: kafka://host:port/TOPIC[,TOPIC], not " +
        RedactUrl(o.from_url));
  }
  return std::unique_ptr<ProjectionSource>(
      new KafkaProjectionSource(o, std::move(url), std::move(topics)));
}

}  // namespace courier
