// `courier dev-broker`: the built-in Kafka-protocol broker for development.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "brokers/dev/dev_broker.h"
#include "cli/commands.h"
#include "core/log.h"

namespace courier::cli {

CLI::App* AddDevBrokerCommand(CLI::App& app, DevBrokerFlags* f, CommonFlags* common) {
  CLI::App* cmd = app.add_subcommand(
      "dev-broker",
      "Run the built-in Kafka-protocol broker (librdkafka's mock cluster) for development.\n"
      "Prints its bootstrap address; any Kafka client can connect. Data lives in memory.\n"
      "Each partition keeps only its newest 5 MiB of record batches (at most 100000 batches):\n"
      "for more, create topics with more --partitions. After a group member leaves, the group\n"
      "waits that member's session.timeout.ms less 1 s before assigning partitions again\n"
      "(courier consume asks for 6 s; librdkafka's default is 45 s). See docs/sinks.md.");
  cmd->add_option("--brokers", f->brokers, "Number of brokers")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 32));
  cmd->add_option("--port", f->port,
                  "Listen on 127.0.0.1:PORT (broker N on PORT+N-1), so a restarted broker is\n"
                  "where running relays and consumers look for it (0: any free ports)")
      ->type_name("PORT")
      ->capture_default_str()
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--bootstrap-file", f->bootstrap_file, "Also write the bootstrap address here")
      ->type_name("FILE");
  cmd->add_option("--topic", f->topics, "Create this topic up front (repeatable)")
      ->type_name("TOPIC");
  cmd->add_option("--partitions", f->partitions, "Partitions of --topic topics")
      ->type_name("N")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  AddCommonFlags(cmd, common);
  return cmd;
}

int RunDevBroker(const DevBrokerFlags& f) {
  auto broker = DevBroker::Start(f.brokers, f.port);
  if (!broker.ok()) return Fail(broker.status());
  for (const std::string& t : f.topics) {
    Status st = (*broker)->CreateTopic(t, f.partitions);
    if (!st.ok()) return Fail(st);
  }
  const std::string& bootstrap = (*broker)->bootstrap();
  const std::string& bootstrap_file = f.bootstrap_file;
  if (!bootstrap_file.empty()) {
    // Written whole, then renamed: a reader never sees half an address.
    const std::string tmp = bootstrap_file + ".tmp";
    std::ofstream(tmp) << bootstrap << "\n";
    if (std::rename(tmp.c_str(), bootstrap_file.c_str()) != 0) {
      return Fail(InvalidArgumentError("cannot write " + bootstrap_file));
    }
  }
  std::printf("%s\n", bootstrap.c_str());
  std::fflush(stdout);
  log::Info("dev broker running; stop it with Ctrl-C or SIGTERM (its data lives in memory)",
            {{"bootstrap", bootstrap}, {"brokers", f.brokers}});
  while (!StopRequest().requested()) Clock::Real().SleepFor(Duration(1000), StopRequest());
  return 0;
}

}  // namespace courier::cli
