#!/usr/bin/env bash
# Installs vigil's build dependencies from Debian 12 packages, if missing
# (clang-14 and its runtime libraries build the sanitizer preset and the
# libFuzzer targets; lld links the test executables faster; dpkg-dev's
# dpkg-shlibdeps and `file` give the .deb its Depends on shared libraries).
# `--bench` adds what the benchmarks' baselines need (Erlang/OTP, python3,
# and valgrind, whose callgrind counts the metrics' instructions).
# prometheus-cpp-dev builds the metrics endpoint; prometheus (the server and
# promtool) is for the tests.
set -euo pipefail
pkgs=(cmake ninja-build g++ ccache libcaf-dev libprotobuf-dev
      protobuf-compiler libgtest-dev liblmdb-dev libspdlog-dev
      libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libssl-dev
      pkgconf libcpp-httplib-dev zlib1g-dev libbrotli-dev
      clang-14 libclang-rt-14-dev lld dpkg-dev file
      prometheus-cpp-dev prometheus)
if [ "${1:-}" = "--bench" ]; then
  pkgs+=(erlang-base python3 valgrind)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "vigil: installing ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "vigil: run as root (or install the packages above with sudo)" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
