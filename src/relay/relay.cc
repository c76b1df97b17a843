// The relay pipeline: fetch → publish → (sink ack) → checkpoint.
#include "courier/relay.h"

#include "relay/relay_internal.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <unordered_map>
#include <unordered_set>

#include "brokers/sink.h"
#include "core/backoff.h"
#include "core/fault_points.h"
#include "core/log.h"
#include "core/url.h"
#include "sources/source.h"
#include "stores/dead_letters.h"
#include "stores/leadership.h"

namespace courier {
namespace {

int64_t Micros(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

// Retrying cannot help: the table, the role or the configuration must be fixed first.
bool IsPermanent(StatusCode code) {
  return code == StatusCode::kInvalidArgument || code == StatusCode::kNotFound ||
         code == StatusCode::kFailedPrecondition;
}

// One aggregate: events with the same type and id keep their order.
std::string AggregateOf(const std::string& type, const std::string& id) {
  std::string key = type;
  key.push_back('\0');
  return key + id;
}
std::string AggregateOf(const Event& e) { return AggregateOf(e.aggregate_type, e.aggregate_id); }

// Why a dead letter that still cannot be an event is parked again: the row's problem now, and
// the reason it was parked first when that was another one (a logical message that was not
// JSON has empty columns now, which alone would hide what was wrong with it).
std::string StillUnpublishable(const DeadLetter& d) {
  constexpr std::string_view kFirst = " (first parked for: ";
  std::string first = d.error;
  if (const size_t at = first.find(kFirst); at != std::string::npos && first.back() == ')') {
    first = first.substr(at + kFirst.size(), first.size() - at - kFirst.size() - 1);
  }
  if (first.empty() || first == d.decode_error) return d.decode_error;
  return d.decode_error + std::string(kFirst) + first + ")";
}

class RelayImpl final : public Relay {
 public:
  RelayImpl(RelayOptions options, RelayParts parts)
      : options_(std::move(options)),
        source_(std::move(parts.source)),
        sink_(std::move(parts.sink)),
        clock_(options_.clock != nullptr ? options_.clock : &Clock::Real()),
        stop_(clock_),
        publish_stop_(clock_),
        leadership_(std::move(parts.leadership)),
        open_dead_letters_(std::move(parts.dead_letters)),
        backoff_(options_.backoff_initial, options_.backoff_max, clock_) {}

  Status Run() override {
    log::Info("relay starting",
              {{"source", source_->Describe()},
               {"sink", sink_->Describe()},
               {"mode", options_.mode == RelayOptions::Mode::kCdc ? "cdc" : "poll"},
               {"checkpoint", options_.outbox_format == RelayOptions::OutboxFormat::kEventStore
                                  ? "stamp published_at (event store)"
                                  : (options_.retain ? "retain" : "delete")},
               {"once", options_.once}});
    COURIER_RETURN_IF_ERROR(sink_->Open());
    Status st = Loop();
    // Stopped (SIGTERM) while a batch waited for its acks or its checkpoint: what was not
    // checkpointed goes out with the next relay. That is how a stop ends, --once too.
    if (st.code() == StatusCode::kCancelled && stop_.requested()) st = Status::Ok();
    source_->Close();
    leadership_->Release();
    SetState(RelayStats::State::kStopped, st.ok() ? "" : st.ToString());
    const RelayStats s = stats();
    log::Info("relay stopped", {{"published", s.published},
                                {"dead_lettered", s.dead_lettered},
                                {"result", st.ok() ? "ok" : st.ToString()}});
    return st;
  }

  void RequestStop() override {
    stop_.Request();
    publish_stop_.Request();
  }

  RelayStats stats() const override {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    return stats_;
  }

 private:
  // A retriable failure: log it, close the source if asked, and sleep with backoff. In once
  // mode the failure ends the run instead.
  Status Retry(const Status& st, bool reconnect) {
    // Cut short by the stop: nothing to retry (Run ends with it).
    if (st.code() == StatusCode::kCancelled && stop_.requested()) return st;
    if (reconnect) {
      source_->Close();
      dead_letters_.reset();
      connected_ = false;
    }
    {
      std::lock_guard<std::mutex> lock(stats_mutex_);
      ++stats_.retries;
      stats_.state = RelayStats::State::kRetrying;
      stats_.last_error = st.ToString();
    }
    if (options_.once) return st;
    const Duration delay = backoff_.Next();
    log::Warn("retrying", {{"error", st.ToString()}, {"in_ms", delay.count()}});
    clock_->SleepFor(delay, stop_);
    return Status::Ok();
  }

  Status Connect() {
    Status st = source_->Open();
    if (st.ok() && !leadership_->held()) {
      SetState(RelayStats::State::kStandby, "");
      if (!stop_.requested()) publish_stop_.Reset();  // a new term (the renewer is stopped)
      st = leadership_->Acquire(stop_, /*wait=*/!options_.once, &publish_stop_);
    }
    if (st.ok()) st = source_->Activate(stop_);
    if (st.code() == StatusCode::kCancelled) return Status::Ok();
    if (!st.ok()) {
      if (st.code() != StatusCode::kRetriable) return st;  // fix the input: retrying won't help
      return Retry(st, /*reconnect=*/true);
    }
    auto store = open_dead_letters_();
    if (store.ok()) {
      dead_letters_ = std::move(store).value();
      st = RefreshBlocked();
    } else {
      st = store.status();
    }
    if (!st.ok()) {
      if (st.code() != StatusCode::kRetriable) return st;
      return Retry(st, /*reconnect=*/true);
    }
    next_release_ = clock_->Now();
    connected_ = true;
    SetState(RelayStats::State::kActive, "");
    log::Info("connected to source", {{"source", source_->Describe()}});
    return Status::Ok();
  }

  void SetState(RelayStats::State state, const std::string& error) {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats_.state = state;
    stats_.last_error = error;
  }

  // Hands the lease the count of events published so far (its renewals store it with the rate
  // for `courier status`). Called at every checkpoint, whatever else went wrong in the batch:
  // one event the sink keeps refusing must not freeze the throughput of all the others.
  void ReportPublished() { leadership_->ReportPublished(stats().published + stats().republished); }

  bool park() const { return options_.dead_letter_policy == RelayOptions::DeadLetterPolicy::kPark; }
  const char* failed_status() const { return park() ? kParked : kSkipped; }

  // Park policy: the aggregates whose new events must wait behind their dead letters.
  Status RefreshBlocked() {
    blocked_.clear();
    if (!park()) return Status::Ok();
    COURIER_ASSIGN_OR_RETURN(std::vector<AggregateKey> keys, dead_letters_->Blocking());
    for (const AggregateKey& k : keys) blocked_.insert(AggregateOf(k.first, k.second));
    return Status::Ok();
  }

  // Every second: publishes the dead letters queued for retry and those held behind a parked
  // event that was resolved, in order, before any newer event of their aggregates (those are
  // held meanwhile). Then re-reads which aggregates are still blocked.
  Status ReleaseDeadLetters() {
    const TimePoint now = clock_->Now();
    if (now < next_release_) return Status::Ok();
    next_release_ = now + kReleaseEvery;
    // Parked events still in a queued checkpoint are not in the table yet, and their
    // aggregates would not read as blocked below.
    if (parked_unsynced_) {
      COURIER_RETURN_IF_ERROR(source_->Sync().WithContext("checkpoint"));
      parked_unsynced_ = false;
    }
    COURIER_ASSIGN_OR_RETURN(std::vector<DeadLetter> ready,
                             dead_letters_->Ready(options_.batch_size, park()));
    if (!ready.empty()) {
      // A row that cannot be an event (a NULL column, bad headers) stops its aggregate before
      // anything of it is sent.
      std::vector<Event> events;
      std::unordered_set<std::string> unsendable;
      for (const DeadLetter& d : ready) {
        const std::string key = AggregateOf(d.event);
        if (!d.decode_error.empty()) unsendable.insert(key);
        if (unsendable.count(key) == 0) events.push_back(d.event);
      }
      const std::vector<Status> results = PublishTracked(events);
      std::vector<int64_t> published;
      std::vector<Rejected> failed;
      std::unordered_set<std::string> stuck;  // an earlier one of the aggregate did not go
      Status first_failure;
      size_t next = 0;
      for (const DeadLetter& d : ready) {
        const std::string key = AggregateOf(d.event);
        if (stuck.count(key) > 0) {
          if (d.decode_error.empty() && unsendable.count(key) == 0) ++next;
          continue;
        }
        const Status r =
            d.decode_error.empty() ? results[next++] : RejectedError(StillUnpublishable(d));
        if (r.ok()) {
          published.push_back(d.event.id);
          continue;
        }
        stuck.insert(key);
        if (r.code() == StatusCode::kRejected) {
          log::Error("dead letter refused again; parked",
                     {{"event_id", d.event.event_id}, {"error", r.message()}});
          failed.push_back({d.event.id, r.message(), failed_status()});
        } else if (first_failure.ok()) {
          first_failure = r;
        }
      }
      COURIER_RETURN_IF_ERROR(
          dead_letters_->Resolve(published, failed).WithContext("dead letters"));
      if (!published.empty()) {
        log::Info("published dead letters again", {{"events", published.size()}});
      }
      {
        std::lock_guard<std::mutex> lock(stats_mutex_);
        stats_.republished += static_cast<int64_t>(published.size());
        stats_.dead_lettered += static_cast<int64_t>(failed.size());
      }
      ReportPublished();
      if (first_failure.code() == StatusCode::kFenced) {
        COURIER_RETURN_IF_ERROR(RefreshBlocked());
        return first_failure;
      }
      if (!first_failure.ok()) {
        // They stay queued; the next round (a second later) sends them again.
        log::Warn("dead letters not acked; will retry",
                  {{"sink", sink_->Describe()}, {"error", first_failure.message()}});
      } else if (ready.size() == options_.batch_size) {
        next_release_ = now;  // more are waiting
      }
    }
    return RefreshBlocked();
  }

  // Hands `events` to the sink, showing in stats() how many wait for their acks and since
  // when, so that readiness can tell a sink that stopped acking from one that is busy.
  std::vector<Status> PublishTracked(std::span<const Event> events) {
    if (events.empty()) return {};
    {
      std::lock_guard<std::mutex> lock(stats_mutex_);
      stats_.awaiting_ack = static_cast<int64_t>(events.size());
      stats_.awaiting_since = clock_->Now();
    }
    std::vector<Status> results = sink_->Publish(events, publish_stop_);
    std::lock_guard<std::mutex> lock(stats_mutex_);
    stats_.awaiting_ack = 0;
    return results;
  }

  // Every 30 s, when something moved: how much was published and how fast.
  void MaybeLogProgress() {
    const TimePoint now = clock_->Now();
    if (now < next_progress_) return;
    const RelayStats s = stats();
    if (s.published != progress_published_ || s.dead_lettered != progress_dead_) {
      const double secs = std::chrono::duration<double>(now - progress_since_).count();
      const double rate = std::round(static_cast<double>(s.published - progress_published_) / secs);
      log::Info("progress", {{"published", s.published},
                             {"per_second", rate},
                             {"dead_lettered", s.dead_lettered},
                             {"retries", s.retries}});
    }
    progress_published_ = s.published;
    progress_dead_ = s.dead_lettered;
    progress_since_ = now;
    next_progress_ = now + kProgressEvery;
  }

  Status Loop() {
    TimePoint next_cleanup = clock_->Now();
    progress_since_ = clock_->Now();
    next_progress_ = progress_since_ + kProgressEvery;
    while (!stop_.requested()) {
      MaybeLogProgress();
      if (!connected_) {
        COURIER_RETURN_IF_ERROR(Connect());
        continue;
      }
      if (!leadership_->held()) {
        // Fenced: the lease could not be renewed in time, so a standby may take over soon.
        // Publishing stopped when it lapsed; stand by again.
        StandDown();
        continue;
      }
      if (options_.retain && clock_->Now() >= next_cleanup) {
        auto removed = source_->DeletePublishedBefore(options_.retention);
        if (!removed.ok()) {
          // Not fatal: the rows are published; the cleaner tries again next interval.
          log::Warn("cleaning published rows failed; will retry",
                    {{"error", removed.status().ToString()}});
        } else if (*removed > 0) {
          log::Info("deleted published rows past retention", {{"rows", *removed}});
        }
        next_cleanup = clock_->Now() + options_.cleanup_interval;
      }
      if (Status st = ReleaseDeadLetters(); !st.ok()) {
        if (st.code() == StatusCode::kFenced) {
          StandDown();
          continue;
        }
        if (st.code() != StatusCode::kRetriable && st.code() != StatusCode::kFenced) return st;
        COURIER_RETURN_IF_ERROR(Retry(st, /*reconnect=*/true));
        continue;
      }
      auto batch = source_->Fetch(options_.batch_size);
      if (!batch.ok()) {
        if (batch.status().code() != StatusCode::kRetriable) return batch.status();
        COURIER_RETURN_IF_ERROR(Retry(batch.status(), /*reconnect=*/true));
        continue;
      }
      if (batch->empty()) {
        SetState(RelayStats::State::kActive, "");
        if (options_.once) return Status::Ok();
        source_->Wait(stop_);
        continue;
      }
      Status st = PublishAndCheckpoint(*batch);
      if (st.code() == StatusCode::kFenced) {
        log::Warn("not published: this relay is fenced; standing down",
                  {{"events", batch->size()}, {"error", st.message()}});
        StandDown();
        continue;
      }
      if (!st.ok()) {
        // A checkpoint that fails for good (a missing privilege or column, a wrong type) would
        // fail again after every retry, each time after publishing the batch once more: stop
        // instead, having published it once.
        if (IsPermanent(st.code())) return st;
        COURIER_RETURN_IF_ERROR(Retry(st, /*reconnect=*/false));
        continue;
      }
      backoff_.Reset();
      SetState(RelayStats::State::kActive, "");
      if (batch->size() < options_.batch_size) source_->Wait(stop_);
    }
    return Status::Ok();
  }

  // Another relay holds (or may soon hold) the lease: release it and compete again later.
  void StandDown() {
    source_->Close();
    dead_letters_.reset();
    leadership_->Release();
    connected_ = false;
    // Give the standbys the first chance: a relay that just lost its session is the likelier
    // one to lose it again.
    clock_->SleepFor(options_.lease, stop_);
  }

  // Publishes one batch and checkpoints what the sink acked. Returns a retriable error when
  // some events were not acked (they stay pending and go out again).
  Status PublishAndCheckpoint(const FetchedBatch& fetched) {
    std::vector<Rejected> rejected = fetched.malformed;
    std::unordered_map<std::string, int64_t> malformed_at;  // park: aggregate -> first bad id
    for (Rejected& r : rejected) {
      r.status = failed_status();
      log::Error("malformed event; parked in the dead-letter table",
                 {{"id", r.id}, {"event_id", r.event_id}, {"error", r.error}});
      if (park() && !r.aggregate_id.empty()) {
        malformed_at.emplace(AggregateOf(r.aggregate_type, r.aggregate_id), r.id);
      }
    }
    // Park policy: events of aggregates with unresolved dead letters are not published; they
    // join them in the dead-letter table, in order.
    std::vector<Event> kept;
    const std::vector<Event>* to_send = &fetched.events;
    if (!blocked_.empty() || !malformed_at.empty()) {
      for (const Event& e : fetched.events) {
        const std::string key = AggregateOf(e);
        const auto bad = malformed_at.find(key);
        if (blocked_.count(key) > 0 || (bad != malformed_at.end() && e.id > bad->second)) {
          rejected.push_back({e.id, "held behind an earlier dead letter of its aggregate", kHeld});
        } else {
          kept.push_back(e);
        }
      }
      to_send = &kept;
      for (const auto& [key, id] : malformed_at) blocked_.insert(key);
    }
    const std::vector<Event>& batch = *to_send;
    const TimePoint publish_start = clock_->Now();
    const std::vector<Status> results = PublishTracked(batch);
    const TimePoint publish_end = clock_->Now();
    ReachFaultPoint(options_.fault_points, "relay-after-publish");
    std::vector<int64_t> acked;
    acked.reserve(batch.size());
    // Once an event of an aggregate is not acked, its later events in this batch are not
    // checkpointed either, even if acked: they go out again after it, so the last copy a
    // consumer sees of that aggregate is in order. Once one is parked, its later events are
    // held behind it.
    std::unordered_set<std::string> unacked;
    std::unordered_map<std::string, std::string> parked_now;  // aggregate -> parked event_id
    Status first_failure;
    for (size_t i = 0; i < batch.size(); ++i) {
      const Event& e = batch[i];
      const Status& r = results[i];
      if (r.ok() && parked_now.empty() && unacked.empty()) {
        acked.push_back(e.id);  // the usual case, without building the aggregate's key
        continue;
      }
      const std::string key = AggregateOf(e);
      if (const auto parked = parked_now.find(key); parked != parked_now.end()) {
        rejected.push_back({e.id, "held behind dead letter " + parked->second, kHeld});
        continue;
      }
      if (unacked.count(key) > 0) continue;
      if (r.ok()) {
        acked.push_back(e.id);
      } else if (r.code() == StatusCode::kRejected) {
        log::Error(
            "sink rejected event for good; parked in the dead-letter table",
            {{"event_id", e.event_id}, {"aggregate_id", e.aggregate_id}, {"error", r.message()}});
        rejected.push_back({e.id, r.message(), failed_status()});
        if (park()) {
          parked_now.emplace(key, e.event_id);
          blocked_.insert(key);
        }
      } else {
        unacked.insert(key);
        if (first_failure.ok()) first_failure = r;
      }
    }
    // Dead letters keep the source's order (their ids decide what is released first).
    std::sort(rejected.begin(), rejected.end(),
              [](const Rejected& a, const Rejected& b) { return a.id < b.id; });
    // Acknowledge only what is durable: the sink has acked every id in `acked` above, and
    // only now are those rows deleted (or stamped). A crash before this line republishes
    // them (duplicates); it never loses them.
    Status st = source_->Checkpoint(acked, rejected, sink_->Describe());
    if (!rejected.empty()) parked_unsynced_ = true;
    if (!st.ok()) {
      // The source connection is suspect; the events go out again after reconnecting.
      source_->Close();
      connected_ = false;
      return st.WithContext("checkpoint");
    }
    ReachFaultPoint(options_.fault_points, "relay-after-checkpoint");
    log::Debug("batch", {{"events", batch.size()},
                         {"publish_us", Micros(publish_end - publish_start)},
                         {"checkpoint_us", Micros(clock_->Now() - publish_end)}});
    const int64_t now_us = std::chrono::duration_cast<std::chrono::microseconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
    {
      std::lock_guard<std::mutex> lock(stats_mutex_);
      size_t next_acked = 0;
      for (const Event& e : batch) {
        if (next_acked == acked.size()) break;
        if (e.id != acked[next_acked]) continue;
        ++next_acked;
        const double latency = std::max<int64_t>(0, now_us - e.created_at_us) / 1e6;
        for (size_t b = 0; b < RelayStats::kLatencyBuckets.size(); ++b) {
          if (latency <= RelayStats::kLatencyBuckets[b]) ++stats_.latency_buckets[b];
        }
        ++stats_.latency_count;
        stats_.latency_sum_s += latency;
        if (e.table_change) {
          // Names with '.' are refused for capture, so this is the table's schema.table.
          RelayStats::CapturedTable& t =
              stats_.captured[e.aggregate_type.find('.') == std::string::npos
                                  ? "public." + e.aggregate_type
                                  : e.aggregate_type];
          ++t.published;
          t.last_lag_s = latency;
        }
      }
      stats_.published += static_cast<int64_t>(acked.size());
      for (const Rejected& r : rejected) ++(r.status == kHeld ? stats_.held : stats_.dead_lettered);
    }
    ReportPublished();
    if (!first_failure.ok()) {
      const size_t failed = fetched.size() - acked.size() - rejected.size();
      const StatusCode code = first_failure.code() == StatusCode::kCancelled ||
                                      first_failure.code() == StatusCode::kFenced
                                  ? first_failure.code()
                                  : StatusCode::kRetriable;
      return Status(code, std::to_string(failed) + " of " + std::to_string(fetched.size()) +
                              " events not acked by " + sink_->Describe() + ": " +
                              first_failure.message());
    }
    return Status::Ok();
  }

  RelayOptions options_;
  std::unique_ptr<Source> source_;
  std::unique_ptr<Sink> sink_;
  Clock* clock_;  // options_.clock, or the real one
  StopSignal stop_;
  // What Publish() watches: requested on stop, abandoned when the lease is lost.
  StopSignal publish_stop_;
  std::unique_ptr<Leadership> leadership_;
  DeadLetterOpener open_dead_letters_;
  Backoff backoff_;
  bool connected_ = false;
  std::unique_ptr<DeadLetterStore> dead_letters_;
  std::unordered_set<std::string> blocked_;  // aggregates with unresolved dead letters (park)
  // Dead letters were handed to a checkpoint that may not have committed yet (Source::Sync).
  bool parked_unsynced_ = false;
  static constexpr Duration kReleaseEvery{1000};
  TimePoint next_release_{};
  static constexpr Duration kProgressEvery{30000};
  TimePoint next_progress_{};
  TimePoint progress_since_{};
  int64_t progress_published_ = 0;
  int64_t progress_dead_ = 0;
  mutable std::mutex stats_mutex_;
  RelayStats stats_;  // guarded by stats_mutex_
};

}  // namespace

std::string OutboxTransactionalId(const RelayOptions& options, size_t sink_index) {
  auto loc = ParseSourceUrl(options.source_url);
  auto url = ParseUrl(options.source_url);
  if (!loc.ok() || loc->kind != SourceLocation::Kind::kPostgres || !url.ok()) return "";
  // libpq also takes the host and port as query parameters (a Unix socket directory).
  std::string host = url->hosts, port;
  for (const auto& [key, value] : url->query) {
    if (key == "host" && host.empty()) host = value;
    if (key == "port") port = value;
  }
  if (host.empty()) host = "localhost";
  if (!port.empty() && host.find(':') == std::string::npos) host += ":" + port;
  std::string id = "courier " + host + "/" + url->path + " " + options.outbox_table;
  if (options.shard_count > 1) {
    id +=
        " shard " + std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count);
  }
  if (sink_index > 0) id += " sink " + std::to_string(sink_index);
  return id;
}

Result<std::unique_ptr<Relay>> Relay::Create(const RelayOptions& options) {
  if (options.batch_size == 0) return InvalidArgumentError("batch size must be at least 1");
  if (options.lease < Duration(1000)) {
    return InvalidArgumentError("--lease must be at least 1s (it is renewed every quarter)");
  }
  if (options.shard_count < 1 || options.shard_index < 0 ||
      options.shard_index >= options.shard_count) {
    return InvalidArgumentError("--shard must be K/N with 0 <= K < N");
  }
  SourceOptions source_options;
  source_options.url = options.source_url;
  source_options.tables = {options.outbox_table, options.dead_letter_table};
  if (options.outbox_format == RelayOptions::OutboxFormat::kDebezium) {
    // Polling walks the outbox in the order of a serial id and deletes what it published;
    // Debezium's outbox has neither (its id is a uuid, its rows are the application's).
    if (options.mode != RelayOptions::Mode::kCdc) {
      return InvalidArgumentError(
          "--outbox-format debezium needs --mode cdc: polling orders the outbox by a serial id "
          "column, which Debezium's outbox table has not (its id is a uuid)");
    }
    source_options.tables.outbox_format = TableNames::OutboxFormat::kDebezium;
  }
  if (options.outbox_format == RelayOptions::OutboxFormat::kEventStore) {
    if (!options.capture.empty()) {
      return InvalidArgumentError(
          "--capture does not apply to --event-store: its stream carries the store's events only");
    }
    // One reader walks the global order; a shard of streams would still keep each stream's
    // order, but not that one.
    if (options.shard_count > 1) {
      return InvalidArgumentError(
          "--shard does not apply to --event-store: one relay publishes in position order");
    }
    source_options.tables.outbox_format = TableNames::OutboxFormat::kEventStore;
  }
  source_options.mode = options.retain ? CheckpointMode::kRetain : CheckpointMode::kDelete;
  source_options.poll_interval = options.poll_interval;
  source_options.clock = options.clock;
  source_options.checkpoints_in_flight = options.checkpoints_in_flight;
  source_options.shutdown_timeout = options.shutdown_timeout;
  source_options.fault_points = options.fault_points;
  source_options.cdc.enabled = options.mode == RelayOptions::Mode::kCdc;
  source_options.cdc.slot = options.slot;
  source_options.cdc.publication = options.publication;
  source_options.cdc.capture = options.capture;
  source_options.cdc.change_format = options.change_format == RelayOptions::ChangeFormat::kDebezium
                                         ? cdc::ChangeFormat::kDebezium
                                         : cdc::ChangeFormat::kCourier;
  if (!options.capture.empty() && options.mode != RelayOptions::Mode::kCdc) {
    return InvalidArgumentError(
        "--capture needs --mode cdc: table changes are read from the write-ahead log");
  }
  if (options.shard_count > 1) {
    COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(options.source_url));
    if (loc.kind != SourceLocation::Kind::kPostgres || options.mode != RelayOptions::Mode::kPoll) {
      return InvalidArgumentError(
          "--shard needs a polled PostgreSQL outbox (CDC reads one slot in commit order; "
          "SQLite has one writer)");
    }
    source_options.shard_index = options.shard_index;
    source_options.shard_count = options.shard_count;
  }
  COURIER_ASSIGN_OR_RETURN(std::unique_ptr<Source> source, MakeSource(source_options));
  std::vector<std::unique_ptr<Sink>> sinks;
  std::vector<std::string> urls = {options.sink_url};
  urls.insert(urls.end(), options.extra_sink_urls.begin(), options.extra_sink_urls.end());
  for (size_t i = 0; i < urls.size(); ++i) {
    const std::string& url = urls[i];
    SinkOptions sink_options;
    sink_options.url = url;
    sink_options.transactional_id = OutboxTransactionalId(options, i);
    sink_options.delivery_timeout = options.delivery_timeout;
    sink_options.shutdown_timeout = options.shutdown_timeout;
    COURIER_ASSIGN_OR_RETURN(std::unique_ptr<Sink> sink, MakeSink(sink_options));
    sinks.push_back(std::move(sink));
  }
  std::unique_ptr<Sink> sink =
      sinks.size() == 1 ? std::move(sinks[0]) : MakeFanOutSink(std::move(sinks));
  return MakeRelay(options, std::move(source), std::move(sink));
}

std::unique_ptr<Relay> MakeRelay(const RelayOptions& options, RelayParts parts) {
  return std::make_unique<RelayImpl>(options, std::move(parts));
}

Result<std::unique_ptr<Relay>> MakeRelay(const RelayOptions& options,
                                         std::unique_ptr<Source> source,
                                         std::unique_ptr<Sink> sink) {
  RelayParts parts{std::move(source), std::move(sink), nullptr, nullptr};
  COURIER_ASSIGN_OR_RETURN(
      parts.leadership,
      MakeLeadership({options.source_url, options.outbox_table, options.shard_index,
                      options.shard_count, options.lease, options.clock}));
  const TableNames tables{options.outbox_table, options.dead_letter_table};
  const std::string ready_filter =
      options.shard_count > 1 ? ShardCondition("d", options.shard_index, options.shard_count) : "";
  parts.dead_letters = [url = options.source_url, tables, ready_filter] {
    return DeadLetterStore::Open(url, tables, ready_filter);
  };
  return MakeRelay(options, std::move(parts));
}

}  // namespace courier
