// `courier config check FILE`: what the relay would check in a config file, without
// connecting (CheckConfig, cli/relay_config.cc).
#include <CLI/CLI.hpp>
#include <string>

#include "cli/commands.h"

namespace courier::cli {

CLI::App* AddConfigCommand(CLI::App& app, ConfigFlags* f) {
  CLI::App* cmd = app.add_subcommand(
      "config",
      "check FILE: validate a relay config file without connecting: TOML syntax, unknown keys,\n"
      "unset ${VARS}, values (durations, URLs, policies), required keys; errors name the line.\n"
      "Secrets in URLs are shown as ***.");
  cmd->add_option("action", f->action, "check")
      ->type_name("ACTION")
      ->required()
      ->check(CLI::IsMember({"check"}));
  cmd->add_option("file", f->file, "Config file (TOML)")->type_name("FILE")->required();
  return cmd;
}

}  // namespace courier::cli
