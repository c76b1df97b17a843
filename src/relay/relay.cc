// The relay pipeline: fetch → publish → (sink ack) → checkpoint.
#include "courier/relay.h"

#include "relay/relay_internal.h"

#include <cstdio>
#include <mutex>
#include <unordered_set>

#include "core/backoff.h"
#include "core/log.h"
#include "sinks/sink.h"
#include "sources/source.h"

namespace courier {
namespace {

int64_t Micros(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
}

class RelayImpl final : public Relay {
 public:
  RelayImpl(RelayOptions options, std::unique_ptr<Source> source, std::unique_ptr<Sink> sink)
      : options_(std::move(options)),
        source_(std::move(source)),
        sink_(std::move(sink)),
        backoff_(options_.backoff_initial, options_.backoff_max) {}

  Status Run() override {
    log::Info("relay starting",
              {{"source", source_->Describe()},
               {"sink", sink_->Describe()},
               {"mode", options_.mode == RelayOptions::Mode::kCdc ? "cdc" : "poll"},
               {"checkpoint", options_.retain ? "retain" : "delete"},
               {"once", options_.once ? "true" : "false"}});
    RETURN_IF_ERROR(sink_->Open());
    Status st = Loop();
    source_->Close();
    const RelayStats s = stats();
    log::Info("relay stopped", {{"published", std::to_string(s.published)},
                                {"dead_lettered", std::to_string(s.dead_lettered)},
                                {"result", st.ok() ? "ok" : st.ToString()}});
    return st;
  }

  void RequestStop() override { stop_.Request(); }

  RelayStats stats() const override {
    std::lock_guard<std::mutex> lock(stats_mutex_);
    return stats_;
  }

 private:
  // A retriable failure: log it, close the source if asked, and sleep with backoff. In once
  // mode the failure ends the run instead.
  Status Retry(const Status& st, bool reconnect) {
    if (reconnect) {
      source_->Close();
      connected_ = false;
    }
    {
      std::lock_guard<std::mutex> lock(stats_mutex_);
      ++stats_.retries;
    }
    if (options_.once) return st;
    const Duration delay = backoff_.Next();
    log::Warn("retrying", {{"error", st.ToString()}, {"in_ms", std::to_string(delay.count())}});
    Clock::Real().SleepFor(delay, stop_);
    return Status::Ok();
  }

  Status Connect() {
    Status st = source_->Open();
    if (st.ok()) st = source_->AcquireLeadership(stop_, /*wait=*/!options_.once);
    if (st.code() == StatusCode::kCancelled) return Status::Ok();
    if (!st.ok()) {
      if (st.code() != StatusCode::kRetriable) return st;  // fix the input: retrying won't help
      return Retry(st, /*reconnect=*/true);
    }
    connected_ = true;
    log::Info("connected to source", {{"source", source_->Describe()}});
    return Status::Ok();
  }

  // Every 30 s, when something moved: how much was published and how fast.
  void MaybeLogProgress() {
    const TimePoint now = Clock::Real().Now();
    if (now < next_progress_) return;
    const RelayStats s = stats();
    if (s.published != progress_published_ || s.dead_lettered != progress_dead_) {
      const double secs = std::chrono::duration<double>(now - progress_since_).count();
      char rate[32];
      std::snprintf(rate, sizeof rate, "%.0f",
                    static_cast<double>(s.published - progress_published_) / secs);
      log::Info("progress", {{"published", std::to_string(s.published)},
                             {"per_second", rate},
                             {"dead_lettered", std::to_string(s.dead_lettered)},
                             {"retries", std::to_string(s.retries)}});
    }
    progress_published_ = s.published;
    progress_dead_ = s.dead_lettered;
    progress_since_ = now;
    next_progress_ = now + kProgressEvery;
  }

  Status Loop() {
    TimePoint next_cleanup = Clock::Real().Now();
    progress_since_ = Clock::Real().Now();
    next_progress_ = progress_since_ + kProgressEvery;
    while (!stop_.requested()) {
      MaybeLogProgress();
      if (!connected_) {
        RETURN_IF_ERROR(Connect());
        continue;
      }
      if (options_.retain && Clock::Real().Now() >= next_cleanup) {
        auto removed = source_->DeletePublishedBefore(options_.retention);
        if (!removed.ok()) {
          // Not fatal: the rows are published; the cleaner tries again next interval.
          log::Warn("cleaning published rows failed; will retry",
                    {{"error", removed.status().ToString()}});
        } else if (*removed > 0) {
          log::Info("deleted published rows past retention", {{"rows", std::to_string(*removed)}});
        }
        next_cleanup = Clock::Real().Now() + options_.cleanup_interval;
      }
      auto batch = source_->Fetch(options_.batch_size);
      if (!batch.ok()) {
        if (batch.status().code() != StatusCode::kRetriable) return batch.status();
        RETURN_IF_ERROR(Retry(batch.status(), /*reconnect=*/true));
        continue;
      }
      if (batch->empty()) {
        if (options_.once) return Status::Ok();
        source_->Wait(stop_);
        continue;
      }
      Status st = PublishAndCheckpoint(*batch);
      if (!st.ok()) {
        RETURN_IF_ERROR(Retry(st, /*reconnect=*/false));
        continue;
      }
      backoff_.Reset();
      if (batch->size() < options_.batch_size) source_->Wait(stop_);
    }
    return Status::Ok();
  }

  // Publishes one batch and checkpoints what the sink acked. Returns a retriable error when
  // some events were not acked (they stay pending and go out again).
  Status PublishAndCheckpoint(const FetchedBatch& fetched) {
    const std::vector<Event>& batch = fetched.events;
    const TimePoint publish_start = Clock::Real().Now();
    const std::vector<Status> results = sink_->Publish(batch, stop_);
    const TimePoint publish_end = Clock::Real().Now();
    std::vector<int64_t> acked;
    std::vector<Rejected> rejected = fetched.malformed;
    for (const Rejected& r : fetched.malformed) {
      log::Error("malformed event; parked in the dead-letter table",
                 {{"id", std::to_string(r.id)}, {"error", r.error}});
    }
    acked.reserve(batch.size());
    // Once an event of an aggregate is not acked, its later events in this batch are not
    // checkpointed either, even if acked: they go out again after it, so the last copy a
    // consumer sees of that aggregate is in order.
    std::unordered_set<std::string> blocked;
    Status first_failure;
    for (size_t i = 0; i < batch.size(); ++i) {
      const Event& e = batch[i];
      const Status& r = results[i];
      if (blocked.count(e.aggregate_id) > 0) continue;
      if (r.ok()) {
        acked.push_back(e.id);
      } else if (r.code() == StatusCode::kRejected) {
        log::Error(
            "sink rejected event for good; parked in the dead-letter table",
            {{"event_id", e.event_id}, {"aggregate_id", e.aggregate_id}, {"error", r.message()}});
        rejected.push_back({e.id, r.message()});
      } else {
        blocked.insert(e.aggregate_id);
        if (first_failure.ok()) first_failure = r;
      }
    }
    // Acknowledge only what is durable: the sink has acked every id in `acked` above, and
    // only now are those rows deleted (or stamped). A crash before this line republishes
    // them (duplicates); it never loses them.
    Status st = source_->Checkpoint(acked, rejected, sink_->Describe());
    if (!st.ok()) {
      // The source connection is suspect; the events go out again after reconnecting.
      source_->Close();
      connected_ = false;
      return st.WithContext("checkpoint");
    }
    log::Debug("batch",
               {{"events", std::to_string(batch.size())},
                {"publish_us", std::to_string(Micros(publish_end - publish_start))},
                {"checkpoint_us", std::to_string(Micros(Clock::Real().Now() - publish_end))}});
    {
      std::lock_guard<std::mutex> lock(stats_mutex_);
      stats_.published += static_cast<int64_t>(acked.size());
      stats_.dead_lettered += static_cast<int64_t>(rejected.size());
    }
    if (!first_failure.ok()) {
      const size_t failed = fetched.size() - acked.size() - rejected.size();
      return Status(first_failure.code() == StatusCode::kCancelled ? StatusCode::kCancelled
                                                                   : StatusCode::kRetriable,
                    std::to_string(failed) + " of " + std::to_string(fetched.size()) +
                        " events not acked by " + sink_->Describe() + ": " +
                        first_failure.message());
    }
    return Status::Ok();
  }

  RelayOptions options_;
  std::unique_ptr<Source> source_;
  std::unique_ptr<Sink> sink_;
  StopSignal stop_;
  Backoff backoff_;
  bool connected_ = false;
  static constexpr Duration kProgressEvery{30000};
  TimePoint next_progress_{};
  TimePoint progress_since_{};
  int64_t progress_published_ = 0;
  int64_t progress_dead_ = 0;
  mutable std::mutex stats_mutex_;
  RelayStats stats_;  // guarded by stats_mutex_
};

}  // namespace

Result<std::unique_ptr<Relay>> Relay::Create(const RelayOptions& options) {
  if (options.batch_size == 0) return InvalidArgumentError("batch size must be at least 1");
  SourceOptions source_options;
  source_options.url = options.source_url;
  source_options.tables = {options.outbox_table, options.dead_letter_table};
  source_options.mode = options.retain ? CheckpointMode::kRetain : CheckpointMode::kDelete;
  source_options.poll_interval = options.poll_interval;
  source_options.cdc.enabled = options.mode == RelayOptions::Mode::kCdc;
  source_options.cdc.slot = options.slot;
  source_options.cdc.publication = options.publication;
  ASSIGN_OR_RETURN(std::unique_ptr<Source> source, MakeSource(source_options));
  std::vector<std::unique_ptr<Sink>> sinks;
  std::vector<std::string> urls = {options.sink_url};
  urls.insert(urls.end(), options.extra_sink_urls.begin(), options.extra_sink_urls.end());
  for (const std::string& url : urls) {
    SinkOptions sink_options;
    sink_options.url = url;
    sink_options.delivery_timeout = options.delivery_timeout;
    sink_options.shutdown_timeout = options.shutdown_timeout;
    ASSIGN_OR_RETURN(std::unique_ptr<Sink> sink, MakeSink(sink_options));
    sinks.push_back(std::move(sink));
  }
  std::unique_ptr<Sink> sink =
      sinks.size() == 1 ? std::move(sinks[0]) : MakeFanOutSink(std::move(sinks));
  return MakeRelay(options, std::move(source), std::move(sink));
}

std::unique_ptr<Relay> MakeRelay(const RelayOptions& options, std::unique_ptr<Source> source,
                                 std::unique_ptr<Sink> sink) {
  return std::make_unique<RelayImpl>(options, std::move(source), std::move(sink));
}

}  // namespace courier
