#!/usr/bin/env bash
# What a packager and a user of the package do, checked end to end (./dev.sh package):
#   1. a Release build without warnings-as-errors, as distributions build;
#   2. cmake --install into a prefix, then a separate project built against it with
#      find_package(courier CONFIG REQUIRED) and run;
#   3. cpack -G DEB, the .deb installed with apt-get, `courier --version` run from it, removed.
set -euo pipefail
cd "$(dirname "$0")/../.."
JOBS=${JOBS:-$(nproc)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DCOURIER_TESTS=OFF >/dev/null
cmake --build build-release -j "$JOBS"

cmake --install build-release --prefix "$work/prefix" >/dev/null
cmake -S tests/packaging/consumer -B "$work/consumer" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/consumer" >/dev/null
"$work/consumer/consumer" "$work/app.db" | grep -q '^appended '
"$work/prefix/bin/courier" --version | grep -q '^courier '
echo "package: installed into a prefix; a project built with find_package(courier) ran"

(cd build-release && cpack -G DEB >/dev/null)
deb=$(ls build-release/courier_*.deb)
dpkg-deb -f "$deb" Depends | grep -q 'librdkafka' ||
  { echo "package: $deb lacks its library dependencies: $(dpkg-deb -f "$deb" Depends)"; exit 1; }
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "./$deb" >/dev/null
version=$(/usr/bin/courier --version)
test -f /lib/systemd/system/courier.service
DEBIAN_FRONTEND=noninteractive $sudo apt-get remove -y -q courier >/dev/null
echo "package: $deb installs with apt-get and runs: $version"
