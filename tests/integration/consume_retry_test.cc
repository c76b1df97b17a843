// `courier consume` failures, as the relay classes a sink's: transient handler failures are
// retried until they pass, permanent ones park the event at once, an inbox database outage
// parks nothing; `consume parked list|retry|drop` manages what was parked.
#include <signal.h>

#include "brokers/sink.h"
#include "core/uuid.h"
#include "support/fixtures.h"

namespace courier::test {
namespace {

size_t Occurrences(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = 0; (p = text.find(what, p)) != std::string::npos; p += what.size()) ++n;
  return n;
}

// Successful POSTs the webhook server logged for `event_id`.
size_t Posts(const WebhookServer& server, const std::string& event_id) {
  size_t n = 0;
  for (const KafkaRecord& r : ReadWebhook(server)) n += r.event.event_id == event_id;
  return n;
}

class ConsumeRetry : public BrokerWithTopic {
 protected:
  void SetUp() override {
    BrokerWithTopic::SetUp();
    auto webhook = WebhookServer::Start();
    ASSERT_OK(webhook);
    webhook_ = std::move(webhook).value();
    db_.emplace(TestDb::Make(false));
  }

  Result<Subprocess> Consume(const std::vector<std::string>& handler,
                             const std::vector<std::string>& more = {}) {
    std::vector<std::string> args = {"consume", "--from",        topic_url_, "--db",
                                     db_->url,  "--consumer",    "mailer",   "--backoff-initial",
                                     "10ms",    "--backoff-max", "50ms",     "--log-level",
                                     "debug"};
    args.insert(args.end(), handler.begin(), handler.end());
    args.insert(args.end(), more.begin(), more.end());
    return SpawnCourier(args, log());
  }

  CommandResult Parked(const std::vector<std::string>& action) {
    std::vector<std::string> args = {"consume", "parked"};
    args.insert(args.end(), action.begin(), action.end());
    args.insert(args.end(), {"--db", db_->url, "--consumer", "mailer"});
    return RunCourier(args);
  }

  std::string log() const { return db_->dir.File("consume.log"); }

  std::unique_ptr<WebhookServer> webhook_;
  std::optional<TestDb> db_;
};

// The old consumer parked an event after 5 attempts, ~1.6 s of 503s. Now 503s are retried
// until the handler answers 200: 9 calls for each event, nothing parked.
TEST_F(ConsumeRetry, HandlerAnswering503ForAWhileGetsEveryEventWithoutParking) {
  const std::vector<Event> events = MakeEvents(3);
  PublishEvents(topic_url_, events);
  auto consumer = Consume({"--to", webhook_->Url("hooks/flaky/8")});
  ASSERT_OK(consumer);
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_inbox") == 3; }, Duration(60000)))
      << ReadFile(log());
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0);
  EXPECT_EQ(db_->Count("courier_inbox_parked"), 0) << ReadFile(log());
  for (const Event& e : events) EXPECT_EQ(Posts(*webhook_, e.event_id), 1u);
  EXPECT_EQ(Occurrences(ReadFile(log()), "handler failed; retrying"), 24u) << ReadFile(log());
  EXPECT_NE(ReadFile(log()).find("attempt=8 error=\"webhook " + webhook_->Url("hooks/flaky/8") +
                                 " answered HTTP 503\""),
            std::string::npos)
      << ReadFile(log());
}

// A 400 is a permanent refusal: parked after one call, the next event goes on.
TEST_F(ConsumeRetry, Http400ParksAtOnce) {
  const std::vector<Event> events = MakeEvents(2);
  PublishEvents(topic_url_, events);
  auto consumer = Consume({"--to", webhook_->Url("hooks/status/400")});
  ASSERT_OK(consumer);
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_inbox_parked") == 2; }, Duration(30000)))
      << ReadFile(log());
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0);
  EXPECT_EQ(db_->Count("courier_inbox_parked WHERE attempts = 1 AND error = 'webhook " +
                       webhook_->Url("hooks/status/400") + " answered HTTP 400'"),
            2);
  EXPECT_EQ(Occurrences(ReadFile(log()), "handler failed; retrying"), 0u) << ReadFile(log());
  EXPECT_EQ(db_->Count("courier_inbox"), 0);
}

// --exec: an exit code named permanent parks at once; any other is retried until it passes.
TEST_F(ConsumeRetry, ExecExitCodesNamedPermanentParkOthersAreRetried) {
  std::vector<Event> events = MakeEvents(2);
  events[0].payload = R"({"poison":true})";
  PublishEvents(topic_url_, events);
  const std::string calls = db_->dir.File("calls");
  const std::string handled = db_->dir.File("handled");
  // Exits 3 for the poison event; 75 for the first 6 calls of the other, then succeeds.
  const std::string handler = "read line; echo x >> " + calls +
                              "; case \"$line\" in *poison*) exit 3;; esac; "
                              "[ $(wc -l < " +
                              calls + ") -le 7 ] && exit 75; echo \"$line\" >> " + handled;
  auto consumer = Consume({"--exec", handler}, {"--permanent-exit-codes", "3,64"});
  ASSERT_OK(consumer);
  ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_inbox") == 1; }, Duration(30000)))
      << ReadFile(log());
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0);
  EXPECT_EQ(db_->Count("courier_inbox_parked WHERE attempts = 1 AND error = 'handler exited with "
                       "3 (a permanent failure)' AND event_id = '" +
                       events[0].event_id + "'"),
            1);
  EXPECT_EQ(db_->Count("courier_inbox WHERE event_id = '" + events[1].event_id + "'"), 1);
  EXPECT_EQ(Occurrences(ReadFile(log()), "error=\"handler exited with 75\""), 6u)
      << ReadFile(log());
  EXPECT_EQ(Occurrences(ReadFile(handled), events[1].event_id), 1u);
}

TEST_F(ConsumeRetry, ParkedListRetryDropEndToEnd) {
  const std::vector<Event> events = MakeEvents(3);
  PublishEvents(topic_url_, events);
  {
    auto consumer = Consume({"--to", webhook_->Url("hooks/status/400")});
    ASSERT_OK(consumer);
    ASSERT_TRUE(WaitUntil([&] { return db_->Count("courier_inbox_parked") == 3; }, Duration(30000)))
        << ReadFile(log());
    consumer->Signal(SIGTERM);
    ASSERT_EQ(consumer->Wait(Duration(30000)), 0);
  }
  CommandResult list = Parked({"list"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  for (const Event& e : events) EXPECT_NE(list.out.find(e.event_id), std::string::npos);
  EXPECT_NE(list.out.find("parked events of consumer mailer (table courier_inbox_parked)"),
            std::string::npos)
      << list.out;
  EXPECT_NE(list.out.find("answered HTTP 400"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("3 shown"), std::string::npos) << list.out;

  // The parked rows' ids, oldest first: 1, 2, 3 in a fresh SQLite table.
  ASSERT_EQ(db_->Count("courier_inbox_parked WHERE id IN (1, 2, 3)"), 3);

  // Still refused: the row stays, one more attempt counted; exit 1.
  CommandResult again = Parked({"retry", "1", "--to", webhook_->Url("hooks/status/400")});
  EXPECT_EQ(again.exit_code, 1) << again.err;
  EXPECT_NE(
      again.out.find("parked event 1 (" + events[0].event_id + "): the handler failed again, kept"),
      std::string::npos)
      << again.out;
  EXPECT_EQ(db_->Count("courier_inbox_parked WHERE id = 1 AND attempts = 2"), 1);

  // Fixed: delivered once, the row gone, the inbox holding the event.
  CommandResult retry = Parked({"retry", "1", "--to", webhook_->Url("hooks/fixed")});
  EXPECT_EQ(retry.exit_code, 0) << retry.err;
  EXPECT_NE(retry.out.find("parked event 1 (" + events[0].event_id + "): handled, removed"),
            std::string::npos)
      << retry.out;
  EXPECT_EQ(Posts(*webhook_, events[0].event_id), 1u);
  EXPECT_EQ(db_->Count("courier_inbox_parked WHERE id = 1"), 0);
  EXPECT_EQ(db_->Count("courier_inbox WHERE event_id = '" + events[0].event_id + "'"), 1);

  // Retrying an id that is gone is an error naming it, and calls nothing.
  CommandResult gone = Parked({"retry", "1", "--to", webhook_->Url("hooks/fixed")});
  EXPECT_EQ(gone.exit_code, 2);
  EXPECT_EQ(gone.err,
            "courier: error: no parked event 1 of consumer mailer in courier_inbox_parked (see "
            "consume parked list)\n");
  EXPECT_EQ(Posts(*webhook_, events[0].event_id), 1u);

  CommandResult drop = Parked({"drop", "2"});
  EXPECT_EQ(drop.exit_code, 0) << drop.err;
  EXPECT_NE(drop.out.find("dropped 1 parked event(s) of consumer mailer"), std::string::npos);
  EXPECT_EQ(Posts(*webhook_, events[1].event_id), 0u);

  CommandResult all = Parked({"retry", "--all", "--to", webhook_->Url("hooks/fixed")});
  EXPECT_EQ(all.exit_code, 0) << all.err;
  EXPECT_EQ(Posts(*webhook_, events[2].event_id), 1u);
  EXPECT_EQ(db_->Count("courier_inbox_parked"), 0);

  CommandResult empty = Parked({"list"});
  EXPECT_EQ(empty.exit_code, 0);
  EXPECT_EQ(empty.out, "no parked events of consumer mailer in courier_inbox_parked\n");

  CommandResult no_handler = Parked({"retry", "--all"});
  EXPECT_EQ(no_handler.exit_code, 2);
  EXPECT_NE(no_handler.err.find("--to http(s)://... or --exec COMMAND"), std::string::npos)
      << no_handler.err;
}

// The inbox's PostgreSQL restarted under a running consumer: the claims fail while it is
// away, which is no failure of the handler. Nothing is parked; every event is handled once.
using ConsumeDbOutage = BrokerWithTopic;
TEST_F(ConsumeDbOutage, RestartedPostgresParksNothing) {
  auto pg = PostgresServer::Start();
  ASSERT_OK(pg);
  auto db_url = (*pg)->NewDatabase("inbox");
  ASSERT_OK(db_url);
  ASSERT_OK(Migrate(*db_url, TableNames{}));
  const std::string& topic = topic_url_;
  auto webhook = WebhookServer::Start();
  ASSERT_OK(webhook);
  TempDir dir;
  const std::string log = dir.File("consume.log");
  const std::vector<Event> before = MakeEvents(5);
  PublishEvents(topic, before);
  auto consumer = SpawnCourier(
      {"consume", "--from", topic, "--db", *db_url, "--consumer", "mailer", "--to",
       (*webhook)->Url("hooks/ok"), "--backoff-initial", "10ms", "--backoff-max", "200ms"},
      log);
  ASSERT_OK(consumer);
  auto count = [&](const std::string& table) {
    auto rows = PgQuery(*db_url, "SELECT count(*) FROM " + table);
    return rows.ok() && !rows->empty() ? std::stoll((*rows)[0]) : -1;
  };
  ASSERT_TRUE(WaitUntil([&] { return count("courier_inbox") == 5; })) << ReadFile(log);

  ASSERT_OK((*pg)->Stop(/*immediate=*/false));
  const std::vector<Event> during = MakeEvents(5, "o-2");
  PublishEvents(topic, during);
  ASSERT_TRUE(WaitUntil([&] {
    return Occurrences(ReadFile(log), "inbox database unavailable; retrying") >= 10;
  })) << ReadFile(log);
  ASSERT_OK((*pg)->StartAgain());

  ASSERT_TRUE(WaitUntil([&] { return count("courier_inbox") == 10; }, Duration(60000)))
      << ReadFile(log);
  consumer->Signal(SIGTERM);
  EXPECT_EQ(consumer->Wait(Duration(30000)), 0) << ReadFile(log);
  EXPECT_EQ(count("courier_inbox_parked"), 0) << ReadFile(log);
  EXPECT_EQ(Occurrences(ReadFile(log), "event parked"), 0u) << ReadFile(log);
  for (const Event& e : during) EXPECT_EQ(Posts(**webhook, e.event_id), 1u);
}

}  // namespace
}  // namespace courier::test
