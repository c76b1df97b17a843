// The pgoutput decoder on arbitrary replication traffic. The input is a sequence of frames
// (a 2-byte big-endian length, then that many bytes; the last frame takes what is left), each
// one CopyData message ('w' XLogData, 'k' keepalive) or a bare pgoutput message. Relations are
// remembered as the CDC source does, so inserts, updates and deletes can refer to them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string_view>

#include "sources/pgoutput.h"

namespace {

using namespace courier::pgoutput;

volatile unsigned g_bytes_read = 0;

// Every view the decoder returns must lie inside the input (the CDC source keeps them only as
// long as the buffer), and is read whole so that AddressSanitizer checks each byte.
void CheckView(std::string_view view, std::string_view buffer) {
  if (view.empty()) return;
  if (view.data() < buffer.data() || view.data() + view.size() > buffer.data() + buffer.size()) {
    std::abort();
  }
  for (char c : view) g_bytes_read = g_bytes_read + static_cast<unsigned char>(c);
}

void Decode(std::string_view payload, std::map<uint32_t, Relation>* relations) {
  auto m = ParseMessage(payload);
  if (!m.ok()) return;
  switch (m->kind) {
    case Message::Kind::kRelation:
      (*relations)[m->relation.id] = m->relation;
      break;
    case Message::Kind::kInsert: {
      for (const Value& v : m->values) CheckView(v.text, payload);
      auto rel = relations->find(m->relation_id);
      if (rel == relations->end()) break;
      // What the CDC source reads of an outbox row: its created_at column as a timestamp.
      for (size_t i = 0; i < m->values.size() && i < rel->second.columns.size(); ++i) {
        if (rel->second.columns[i].name == "created_at" &&
            m->values[i].kind == Value::Kind::kText) {
          (void)ParseTimestamp(m->values[i].text);
        }
      }
      break;
    }
    case Message::Kind::kUpdate:
    case Message::Kind::kDelete: {
      for (const Value& v : m->values) CheckView(v.text, payload);
      for (const Value& v : m->old_values) CheckView(v.text, payload);
      // What table capture reads: an unchanged TOASTed value is taken from the old row.
      auto rel = relations->find(m->relation_id);
      if (rel == relations->end()) break;
      for (size_t i = 0; i < m->values.size() && i < m->old_values.size(); ++i) {
        if (m->values[i].kind == Value::Kind::kUnchangedToast)
          CheckView(m->old_values[i].text, payload);
      }
      break;
    }
    case Message::Kind::kTruncate:
      for (uint32_t id : m->relation_ids) (void)relations->count(id);
      break;
    case Message::Kind::kLogicalMessage:
      CheckView(m->content, payload);
      break;
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::map<uint32_t, Relation> relations;
  while (!in.empty()) {
    std::string_view frame = in;
    if (in.size() >= 2) {
      const size_t len = (static_cast<uint8_t>(in[0]) << 8) | static_cast<uint8_t>(in[1]);
      frame = in.substr(2, len);
      in.remove_prefix(2 + frame.size());
    } else {
      in = {};
    }
    auto copy = ParseCopyMessage(frame);
    if (copy.ok() && copy->kind == CopyMessage::Kind::kXLogData) {
      CheckView(copy->data.payload, frame);
      Decode(copy->data.payload, &relations);
    } else {
      Decode(frame, &relations);
    }
  }
  (void)ParseLsn(std::string(reinterpret_cast<const char*>(data), size));
  return 0;
}
