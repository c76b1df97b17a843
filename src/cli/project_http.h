// What `courier project --metrics-port` serves beside the projection: GET /wait (read-your-
// writes over HTTP: the answer comes once the projection has applied the caller's write),
// /metrics (Prometheus text) and /healthz.
//
// Thread-safety: ServeProjection is called from several threads at once (a thread per
// request); it reads the projection through its atomic counters and the database.
#pragma once

#include <string>

#include "core/clock.h"
#include "core/http_endpoint.h"
#include "courier/projection.h"

namespace courier::cli {

struct ProjectionServer {
  const ProjectionOptions* options = nullptr;  // of the running projection
  bool event_store = false;                    // else Kafka-sourced
  const Projection* projection = nullptr;
  // Requested when the process stops: /wait answers at once then (503), so the server's
  // threads end.
  const StopSignal* stop = nullptr;
};

// /wait?position=N[&timeout=5s] (event store), /wait?[topic=T&]partition=P&offset=O
// [&timeout=5s] (Kafka): 200 with a JSON object naming what is applied, 504 after the timeout,
// 400 with one line for bad parameters, 503 when stopping or the database cannot be read.
HttpResponse ServeProjection(const HttpRequest& request, const ProjectionServer& server);

}  // namespace courier::cli
