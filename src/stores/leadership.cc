#include "stores/leadership.h"

#include "core/url.h"
#include "sources/source.h"
#include "stores/postgres_lease.h"

namespace courier {

Result<std::unique_ptr<Leadership>> MakeLeadership(const LeadershipOptions& options) {
  COURIER_ASSIGN_OR_RETURN(SourceLocation loc, ParseSourceUrl(options.source_url));
  if (loc.kind == SourceLocation::Kind::kSqlite) {
    return MakeFileLock(loc.target, RedactUrl(options.source_url), options.clock);
  }
  std::string name = "courier relay " + options.outbox;
  if (options.shard_count > 1) {
    name +=
        " shard " + std::to_string(options.shard_index) + "/" + std::to_string(options.shard_count);
  }
  TableNames tables;
  tables.outbox = options.outbox;
  return std::unique_ptr<Leadership>(std::make_unique<PostgresLease>(
      LeaseOptions{loc.target, RedactUrl(options.source_url), tables.Leases(), name, options.lease,
                   options.clock}));
}

}  // namespace courier
