#include "cli/config.h"

#include <cstdlib>
#include <sstream>

#include <toml++/toml.h>

namespace courier {

Result<std::string> InterpolateEnv(const std::string& text, const std::string& file_name) {
  std::string out;
  int line = 1;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\n') ++line;
    if (text.compare(i, 3, "$${") == 0) {
      out += "${";
      i += 2;
      continue;
    }
    if (text.compare(i, 2, "${") == 0) {
      const size_t end = text.find('}', i + 2);
      if (end == std::string::npos || text.find('\n', i) < end) {
        return InvalidArgumentError(file_name + ":" + std::to_string(line) +
                                    ": unterminated ${ (write ${NAME}, or $${ for a literal)");
      }
      const std::string name = text.substr(i + 2, end - i - 2);
      const char* value = std::getenv(name.c_str());
      if (value == nullptr) {
        return InvalidArgumentError(file_name + ":" + std::to_string(line) +
                                    ": environment variable " + name + " is not set");
      }
      out += value;
      i = end;
      continue;
    }
    out.push_back(text[i]);
  }
  return out;
}

namespace {

Result<std::string> ScalarText(const toml::node& node, const std::string& where) {
  if (auto s = node.value<std::string>()) return *s;
  if (node.is_integer()) return std::to_string(*node.value<int64_t>());
  if (node.is_floating_point()) {
    std::ostringstream os;
    os << *node.value<double>();
    return os.str();
  }
  if (node.is_boolean()) return std::string(*node.value<bool>() ? "true" : "false");
  return InvalidArgumentError(where + ": expected a string, number or boolean");
}

}  // namespace

Result<std::vector<std::string>> ConfigToArgs(
    const std::string& text, const std::string& file_name,
    const std::function<bool(const std::string&)>& is_known, std::map<std::string, int>* lines) {
  toml::table table;
  try {
    table = toml::parse(text, file_name);
  } catch (const toml::parse_error& e) {
    return InvalidArgumentError(file_name + ":" + std::to_string(e.source().begin.line) + ": " +
                                std::string(e.description()));
  }
  std::vector<std::string> args;
  for (const auto& [key, node] : table) {
    const std::string k(key.str());
    const std::string where = file_name + ":" + std::to_string(node.source().begin.line);
    if (lines != nullptr) (*lines)[k] = static_cast<int>(node.source().begin.line);
    if (!is_known(k)) {
      return InvalidArgumentError(where + ": unknown key '" + k +
                                  "' (keys are the command's long flags, see --help)");
    }
    if (const toml::array* array = node.as_array()) {
      for (const toml::node& item : *array) {
        ASSIGN_OR_RETURN(std::string v, ScalarText(item, where));
        args.push_back("--" + k + "=" + v);
      }
      continue;
    }
    if (node.is_boolean()) {
      // Flags without a value: present when true.
      if (*node.value<bool>()) args.push_back("--" + k);
      continue;
    }
    ASSIGN_OR_RETURN(std::string v, ScalarText(node, where));
    args.push_back("--" + k + "=" + v);
  }
  return args;
}

Result<std::chrono::milliseconds> ParseDuration(const std::string& text) {
  size_t pos = 0;
  double value = 0;
  try {
    value = std::stod(text, &pos);
  } catch (...) {
    pos = 0;
  }
  if (pos == 0 || value < 0) {
    return InvalidArgumentError("'" + text + "' is not a duration; write e.g. 250ms, 5s, 2m, 7d");
  }
  const std::string unit = text.substr(pos);
  double ms;
  if (unit.empty() || unit == "ms") {
    ms = value;
  } else if (unit == "s") {
    ms = value * 1e3;
  } else if (unit == "m") {
    ms = value * 60e3;
  } else if (unit == "h") {
    ms = value * 3600e3;
  } else if (unit == "d") {
    ms = value * 86400e3;
  } else {
    return InvalidArgumentError("'" + text + "' has an unknown unit; use ms, s, m, h or d");
  }
  return std::chrono::milliseconds(static_cast<int64_t>(ms));
}

}  // namespace courier
