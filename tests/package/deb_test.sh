#!/usr/bin/env bash
# vigil's Debian package (issue 23): built with CPack from the build tree,
# its control fields checked, its Depends resolved by apt (simulated: this
# machine's / must stay the build's), then unpacked with dpkg-deb -x into a
# temporary root, where a project of one's own is built against it alone and
# run, and the packaged command runs.
#   deb_test.sh BUILD_DIR SOURCE_DIR VERSION
set -euo pipefail
build=$(cd "$1" && pwd) src=$(cd "$2" && pwd) version=$3
. "$src/tests/package/lib.sh"
work=$(mktemp -d /tmp/vigil-deb-test.XXXXXX)
trap 'rm -rf "$work"' EXIT
deb=$work/pkg/vigil_${version}_amd64.deb

step "cpack -G DEB (from $build)"
cpack -G DEB --config "$build/CPackConfig.cmake" -B "$work/pkg" \
  >"$work/cpack.log" 2>&1 || { cat "$work/cpack.log"; fail "cpack"; }
[ -f "$deb" ] || { ls -la "$work/pkg"; fail "no $deb"; }
ls -la "$deb"

step "control fields"
dpkg-deb -f "$deb" Package Version Architecture Section Depends Recommends
[ "$(dpkg-deb -f "$deb" Package)" = vigil ] || fail "Package is not vigil"
[ "$(dpkg-deb -f "$deb" Version)" = "$version" ] || fail "Version is not $version"
[ "$(dpkg-deb -f "$deb" Architecture)" = amd64 ] || fail "Architecture is not amd64"
depends=$(dpkg-deb -f "$deb" Depends)
names=$(tr ',' '\n' <<<"$depends" | sed 's/^ *//; s/ .*//')
# What a project building against vigil needs, and what bin/vigil loads
# (dpkg-shlibdeps).
for p in libcaf-dev libprotobuf-dev protobuf-compiler liblmdb-dev libspdlog-dev \
         libyaml-cpp-dev libcpp-httplib-dev libssl-dev pkgconf \
         libcaf-core0.17 libprotobuf32 libstdc++6; do
  grep -qxF "$p" <<<"$names" || fail "Depends lacks $p: $depends"
done
# Every package named is a real Debian 12 package, installed here at a
# version that satisfies it: apt resolves the whole Depends line
# (--reinstall: on a machine where vigil is installed already, too).
out=$(apt-get install -s --reinstall --no-install-recommends "$deb" 2>&1) \
  || { echo "$out"; fail "apt-get install -s $deb: Depends do not resolve"; }
grep -qE "^Inst vigil (\[[^]]*\] )?\($version " <<<"$out" \
  || { echo "$out"; fail "apt-get -s would not install vigil"; }
echo "apt-get install -s: resolves (Inst vigil $version)"

step "contents"
dpkg-deb -c "$deb" >"$work/contents"
# LIB: lib, or lib/x86_64-linux-gnu for a build configured with the prefix
# /usr (the package preset).
for f in ./usr/bin/vigil ./usr/include/vigil/vigil.hpp ./usr/LIB/libvigil_actors.a \
         ./usr/LIB/cmake/vigil/vigilConfig.cmake ./usr/LIB/pkgconfig/vigil.pc \
         ./usr/share/doc/vigil/examples/my_agents/main.cpp \
         ./usr/share/doc/vigil/examples/policies/chaos.yaml; do
  re=$(sed 's/\./\\./g; s|LIB|lib(/x86_64-linux-gnu)?|' <<<"$f")
  grep -qE " $re\$" "$work/contents" || fail "$f is not in the package"
done
echo "$(grep -c '^-' "$work/contents") files"

step "dpkg-deb -x into $work/root"
dpkg-deb -x "$deb" "$work/root"
prefix=$work/root/usr
# The libraries are stripped of debug info (they carry ~300 MB of it in a
# RelWithDebInfo build).
libs=$(find "$prefix" -name 'libvigil_*.a')
[ "$(wc -l <<<"$libs")" -eq 9 ] || fail "not 9 libvigil_*.a in the package: $libs"
for lib in $libs; do
  if objdump -h "$lib" | grep -q '\.debug_info'; then
    fail "$lib has debug info in the package"
  fi
done
no_build_paths "$work/root" "$src" "$build"

build_consumer "$prefix" "$work" "$src" "$build"
run_consumer "$work" "$version"
installed_command "$prefix/bin/vigil" "$work" "$src" "$version" \
  "$prefix/share/doc/vigil/examples/policies"
step "deb_test: passed"
