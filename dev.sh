#!/usr/bin/env bash
# courier's one entry point for building, running and testing on Debian 12.
#
#   ./dev.sh demo       install build dependencies, build, run `courier demo`
#   ./dev.sh test       install build + test dependencies, build, run every test
#   ./dev.sh sanitize   the test suite under AddressSanitizer + UndefinedBehaviorSanitizer
#   ./dev.sh lint       clang-format check
#   ./dev.sh fuzz [SECONDS]  build the libFuzzer targets (clang) and run each SECONDS (60)
#   ./dev.sh bench [poll|cdc|capture|sinks|eventstore]  the benchmarks, all by default (docs/benchmarks.md)
#   ./dev.sh bench compare [--events N]  courier against pg_recvlogical and the Node and Python
#                       relays users would pick instead, one run (installs the peers: npm ci, apt)
#   ./dev.sh build      just build (build/courier)
#   ./dev.sh package    Release build, install into a prefix, build a project against it, .deb
set -euo pipefail
cd "$(dirname "$0")"

BUILD_DEPS=(cmake g++ make pkg-config libpq-dev libsqlite3-dev librdkafka-dev libhiredis-dev
            libcurl4-openssl-dev libnats-dev librabbitmq-dev libmicrohttpd-dev
            nlohmann-json3-dev libtomlplusplus-dev libcli11-dev)
TEST_DEPS=(googletest libgtest-dev postgresql-15 redis-server nats-server rabbitmq-server groonga-bin python3 sqlite3 clang-format openssl ca-certificates chromium)
FUZZ_DEPS=(clang-14 libclang-rt-14-dev)
COMPARE_DEPS=(googletest libgtest-dev postgresql-15 nodejs python3-psycopg2 python3-confluent-kafka)
JOBS=${JOBS:-$(nproc)}

install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {  # build DIR [cmake args...]; BUILD_TARGETS="a b" builds only those
  # Line tables only (-g1): backtraces and sanitizer reports still name file and line, and the
  # build takes a third less time than with full debug information.
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
    -DCOURIER_WERROR=ON "$@" >/dev/null
  # shellcheck disable=SC2086  # one target per word
  cmake --build "$dir" -j "$JOBS" ${BUILD_TARGETS:+--target $BUILD_TARGETS}
}

run_tests() {  # run_tests DIR [CHAOS_FILTER]
  # Three test processes at a time (binaries, or gtest shards of the big ones: each starts its
  # own servers on free ports, and they spend most of their time waiting on them); the chaos
  # tests run alone, as they want the machine's two cores. The chaos run is verbose so that its counters (lost, ghosts, duplicates, kills)
  # are in the log. CHAOS_FILTER (a gtest filter) picks which chaos tests.
  (cd "$1" && ctest --output-on-failure -j 3 -L 'unit|integration' -E "${CTEST_EXCLUDE:-^$}" &&
     GTEST_FILTER=${2:-*} ctest --output-on-failure -V -L chaos)
}

run_fuzzers() {  # run_fuzzers DIR SECONDS
  # Seeds are read from tests/fuzz/corpus/NAME (kept in git); what a run adds goes to
  # DIR/corpus/NAME, and a crashing input to DIR/crashes/.
  local dir=$1 seconds=$2 failed=0
  mkdir -p "$dir/crashes"
  for bin in "$dir"/tests/fuzz/fuzz_*; do
    local name=${bin##*/fuzz_}
    mkdir -p "$dir/corpus/$name"
    echo "fuzz $name: ${seconds}s"
    if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$dir/crashes/$name-" "$dir/corpus/$name" "tests/fuzz/corpus/$name" \
        >"$dir/fuzz-$name.log" 2>&1; then
      tail -n 40 "$dir/fuzz-$name.log"
      echo "fuzz $name FAILED: the input is in $dir/crashes/; replay it with $bin FILE"
      failed=1
    else
      grep -E '^stat::number_of_executed_units|^Done' "$dir/fuzz-$name.log" | tr '\n' ' '
      echo
    fi
  done
  return $failed
}

case "${1:-}" in
  build)
    install "${BUILD_DEPS[@]}"
    build build ;;
  demo)
    install "${BUILD_DEPS[@]}"
    build build -DCOURIER_TESTS=OFF
    shift
    exec build/courier demo "$@" ;;
  test)
    install "${BUILD_DEPS[@]}" "${TEST_DEPS[@]}"
    build build
    run_tests build ;;
  sanitize)
    install "${BUILD_DEPS[@]}" "${TEST_DEPS[@]}"
    # Under the sanitizers: every test binary but the sink, CLI, lab and status-page suites
    # (courier's own parsing, decoding, relay, CDC and event-store code; each binary builds the
    # programs it runs) and one chaos run. The sink suites mostly drive the client libraries,
    # the CLI suite the command line's messages, the lab its strategies' child processes and
    # the status page a browser; they run once, in `test`: CI's time goes to what the
    # sanitizers can find.
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOURIER_WERROR=ON \
      -DCOURIER_SANITIZE=ON -DCOURIER_BENCH=OFF >/dev/null
    targets=$(cmake --build build-asan --target help | sed -n 's/^\.\.\. \(.*_tests\)$/\1/p' |
      grep -vxE 'sink_tests|integration_tests|lab_tests|status_page_tests')
    # shellcheck disable=SC2086  # one target per word
    cmake --build build-asan -j "$JOBS" --target $targets
    # The chaos budgets ran once already, in `test`: here only the production chaos run (every
    # fault at once: kills, freezes, broker and database restarts) checks the same paths under
    # the sanitizers, for a shorter time.
    COURIER_CHAOS_SECONDS=${COURIER_CHAOS_SECONDS:-20} ASAN_OPTIONS=detect_leaks=1 \
      UBSAN_OPTIONS=print_stacktrace=1 CTEST_EXCLUDE='^(sink|integration|lab|status_page)_tests' \
      run_tests build-asan 'Modes/ProductionChaos.*' ;;
  fuzz)
    install "${BUILD_DEPS[@]}" "${FUZZ_DEPS[@]}"
    CC=clang-14 CXX=clang++-14 build build-fuzz -DCOURIER_FUZZ=ON
    run_fuzzers build-fuzz "${2:-60}" ;;
  lint)
    install clang-format
    git ls-files '*.cc' '*.h' | xargs clang-format --dry-run --Werror ;;
  package)
    install "${BUILD_DEPS[@]}" dpkg-dev file
    exec tests/packaging/check.sh ;;
  bench)
    if [ "${2:-}" = compare ]; then
      # PostgreSQL, the test harness's build dependencies and the peers: Node packages at the
      # versions bench/peers/node/package-lock.json pins, the Python relay's modules from
      # Debian (run with /usr/bin/python3).
      install "${BUILD_DEPS[@]}" "${COMPARE_DEPS[@]}"
      command -v npm >/dev/null || install npm  # NodeSource's nodejs ships npm; Debian's does not
      BUILD_TARGETS="courier courier_bench_compare" build build
      (cd bench/peers/node && npm ci --no-audit --no-fund)
      shift 2
      exec build/bench/courier_bench_compare "$@"
    fi
    install "${BUILD_DEPS[@]}" "${TEST_DEPS[@]}"
    build build
    case "${2:-all}" in
      poll) exec build/bench/courier_bench ;;
      cdc) exec build/bench/courier_bench_cdc ;;
      capture) exec build/bench/courier_bench_capture ;;
      sinks) exec build/bench/courier_bench_sinks ;;
      eventstore) exec build/bench/courier_bench_eventstore ;;
      *) build/bench/courier_bench && build/bench/courier_bench_cdc &&
         build/bench/courier_bench_capture && build/bench/courier_bench_sinks &&
         build/bench/courier_bench_eventstore ;;
    esac ;;
  *)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2 ;;
esac
