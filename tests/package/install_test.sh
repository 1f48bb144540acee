#!/usr/bin/env bash
# vigil installed with `cmake --install` into a temporary prefix, then used
# as a user would (issue 23): the installed tree, a project of one's own
# built with find_package(vigil) from a directory outside the source tree and
# run, a program built with pkg-config alone, and the installed command
# (its release, the installed policies, a data dir of an earlier release).
#   install_test.sh BUILD_DIR SOURCE_DIR VERSION
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd) version=$3
. "$src/tests/package/lib.sh"
work=$(mktemp -d /tmp/vigil-install-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix

step "cmake --install $build --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log" \
  || { cat "$work/install.log"; fail "cmake --install"; }
expect_files "$prefix" bin/vigil include/vigil/vigil.hpp include/vigil/version.hpp \
  include/vigil/node/node.hpp include/vigil/actors/detail/handler_table.hpp \
  include/vigil/builtin.pb.h include/vigil/builtin.proto \
  lib/cmake/vigil/vigilConfig.cmake lib/cmake/vigil/vigilConfigVersion.cmake \
  lib/cmake/vigil/vigilTargets.cmake lib/cmake/vigil/vigilImports.cmake \
  lib/pkgconfig/vigil.pc share/doc/vigil/examples/my_agents/CMakeLists.txt
for c in proto resilience persistence actors tools supervision metrics node cli; do
  expect_files "$prefix" "lib/libvigil_$c.a"
done
# tools/detail needs nlohmann/json, which an installed vigil does not.
[ ! -e "$prefix/include/vigil/tools/detail" ] || fail "tools/detail/ was installed"
no_build_paths "$prefix" "$src" "$build"
echo "$(find "$prefix" -type f | wc -l) files installed; none names $src or $build"

build_consumer "$prefix" "$work" "$src" "$build"
run_consumer "$work" "$version"

step "find_package(vigil) refuses a release it is not compatible with"
mkdir "$work/too_new"
cat >"$work/too_new/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.22)
project(too_new LANGUAGES CXX)
find_package(vigil 0.3 REQUIRED)
CMAKE
if cmake -S "$work/too_new" -B "$work/too_new/build" \
     -DCMAKE_PREFIX_PATH="$prefix" >"$work/too_new.log" 2>&1; then
  fail "find_package(vigil 0.3) accepted vigil $version"
fi
grep -q "vigilConfig.cmake, version: $version" "$work/too_new.log" \
  || { cat "$work/too_new.log"; fail "find_package(vigil 0.3) failed without naming the version found"; }
echo "find_package(vigil 0.3): refused, found $version"

step "find_package(vigil) with components, QUIET, and clang++ without a C++ standard set"
mkdir -p "$work/comp" "$work/quiet" "$work/bare"
cat >"$work/comp/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.22)
project(comp LANGUAGES CXX)
find_package(vigil 0.2 REQUIRED COMPONENTS node nosuch)
CMAKE
if cmake -S "$work/comp" -B "$work/comp/build" -DCMAKE_PREFIX_PATH="$prefix" \
     >"$work/comp.log" 2>&1; then
  fail "find_package(vigil COMPONENTS nosuch) was accepted"
fi
grep -q "no such vigil component: nosuch" "$work/comp.log" \
  || { cat "$work/comp.log"; fail "an unknown component is not named"; }
echo "COMPONENTS nosuch: refused, named"
cat >"$work/quiet/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.22)
project(quiet LANGUAGES CXX)
find_package(vigil QUIET COMPONENTS nosuch)
message(STATUS "vigil_FOUND=${vigil_FOUND}")
find_package(vigil QUIET OPTIONAL_COMPONENTS nosuch)
message(STATUS "vigil_FOUND=${vigil_FOUND} with an optional unknown component")
CMAKE
cmake -S "$work/quiet" -B "$work/quiet/build" -DCMAKE_PREFIX_PATH="$prefix" \
  >"$work/quiet.log" 2>&1 || { cat "$work/quiet.log"; fail "a QUIET find_package(vigil) stopped the configure"; }
grep -q "vigil_FOUND=0$" "$work/quiet.log" && grep -q "vigil_FOUND=1 with" "$work/quiet.log" \
  || { cat "$work/quiet.log"; fail "QUIET: vigil_FOUND is not FALSE, then TRUE"; }
echo "QUIET: not found without stopping; an OPTIONAL unknown component is no failure"
# No CMAKE_CXX_STANDARD: vigil::vigil brings C++17 (clang-14 defaults to
# C++14), and only the component targets named.
cp "$src/tests/package/hello_pkgconfig.cpp" "$work/bare/"
cat >"$work/bare/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.22)
project(bare LANGUAGES CXX)
find_package(vigil 0.2 REQUIRED COMPONENTS node)
add_executable(bare hello_pkgconfig.cpp)
target_link_libraries(bare PRIVATE vigil::vigil)
CMAKE
cxx=g++
command -v clang++-14 >/dev/null && cxx=clang++-14
CXX=$cxx cmake -S "$work/bare" -B "$work/bare/build" -G Ninja \
  -DCMAKE_PREFIX_PATH="$prefix" >"$work/bare.log" 2>&1 \
  && cmake --build "$work/bare/build" -j2 >>"$work/bare.log" 2>&1 \
  || { cat "$work/bare.log"; fail "a project without a C++ standard set, with $cxx"; }
out=$("$work/bare/build/bare") || fail "bare exited $?"
[ "$out" = "vigil $version: 3 numbers, sum 60" ] || fail "bare printed '$out'"
echo "$cxx, no standard set: $out"

step "cmake --install --component development alone: the package works without the command"
cmake --install "$build" --prefix "$work/devonly" --component development \
  >"$work/devonly.log" || { cat "$work/devonly.log"; fail "install --component development"; }
[ ! -e "$work/devonly/bin/vigil" ] || fail "the development component installed bin/vigil"
mkdir "$work/devproj"
cat >"$work/devproj/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.22)
project(devproj LANGUAGES CXX)
find_package(vigil 0.2 REQUIRED)
if(TARGET vigil::command)
  message(FATAL_ERROR "vigil::command without bin/vigil")
endif()
find_package(vigil 0.2 QUIET COMPONENTS command)
message(STATUS "with command: ${vigil_FOUND}")
CMAKE
cmake -S "$work/devproj" -B "$work/devproj/build" -DCMAKE_PREFIX_PATH="$work/devonly" \
  >"$work/devproj.log" 2>&1 || { cat "$work/devproj.log"; fail "find_package(vigil) on the development component alone"; }
grep -q "with command: 0$" "$work/devproj.log" \
  || { cat "$work/devproj.log"; fail "COMPONENTS command found without bin/vigil"; }
echo "found without bin/vigil; COMPONENTS command: not found"

step "pkg-config, without CMake"
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
[ "$(pkg-config --modversion vigil)" = "$version" ] || fail "pkg-config --modversion vigil"
# shellcheck disable=SC2046
cp "$src/tests/package/hello_pkgconfig.cpp" "$work/"
g++ -std=c++17 -o "$work/hello_pkgconfig" "$work/hello_pkgconfig.cpp" \
  $(pkg-config --cflags --libs vigil) 2>"$work/pkgconfig-build.log" \
  || { cat "$work/pkgconfig-build.log"; fail "g++ \$(pkg-config --cflags --libs vigil)"; }
out=$("$work/hello_pkgconfig") || fail "hello_pkgconfig exited $?"
echo "$out"
[ "$out" = "vigil $version: 3 numbers, sum 60" ] || fail "hello_pkgconfig printed '$out'"

installed_command "$prefix/bin/vigil" "$work" "$src" "$version" \
  "$prefix/share/doc/vigil/examples/policies"
step "install_test: passed"
