#include "brokers/sink.h"

namespace courier {

std::string ExpandTemplate(std::string_view tmpl, const Event& event) {
  std::string out;
  out.reserve(tmpl.size() + 16);
  for (size_t i = 0; i < tmpl.size();) {
    if (tmpl.compare(i, 16, "{aggregate_type}") == 0) {
      out += event.aggregate_type;
      i += 16;
    } else if (tmpl.compare(i, 12, "{event_type}") == 0) {
      out += event.event_type;
      i += 12;
    } else {
      out.push_back(tmpl[i++]);
    }
  }
  return out;
}

}  // namespace courier
