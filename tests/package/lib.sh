# Shared by install_test.sh and deb_test.sh: vigil as a user gets it, built
# and run from a clean directory outside the source tree, against an
# installed prefix only.

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# expect_file PREFIX RELPATH...: each path exists under PREFIX.
expect_files() {
  local prefix=$1; shift
  for f in "$@"; do
    [ -e "$prefix/$f" ] || fail "$prefix/$f is missing from the installed tree"
  done
}

# config_dir PREFIX: where vigilConfig.cmake is under PREFIX (lib/cmake/vigil,
# or lib/x86_64-linux-gnu/cmake/vigil when vigil was configured for /usr).
config_dir() {
  local c
  c=$(find "$1" -name vigilConfig.cmake -path '*/cmake/vigil/*' | head -1)
  [ -n "$c" ] || fail "no vigilConfig.cmake under $1"
  dirname "$c"
}

# no_build_paths DIR SRC BUILD: no text file under DIR names vigil's source
# or build tree (an installed package that points back into the tree it was
# built in works only on the machine that built it).
no_build_paths() {
  local dir=$1 src=$2 build=$3 hits
  hits=$(grep -rIl -e "$src" -e "$build" "$dir" || true)
  [ -z "$hits" ] || fail "these installed files name the build machine's tree ($src or $build): $hits"
}

# build_consumer PREFIX WORK SRC BUILD: copies the installed my_agents
# project to WORK/my_agents, configures it against PREFIX alone (no package
# registry, no other prefix), builds it, and checks that its build never
# reaches into vigil's source or build tree.
build_consumer() {
  local prefix=$1 work=$2 src=$3 build=$4
  local proj=$work/my_agents
  step "a project of one's own: $prefix/share/doc/vigil/examples/my_agents, copied to $proj"
  cp -r "$prefix/share/doc/vigil/examples/my_agents" "$proj"
  cmake -S "$proj" -B "$proj/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
        -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >"$work/consumer-configure.log" 2>&1 \
    || { cat "$work/consumer-configure.log"; fail "configuring my_agents against $prefix"; }
  local found want
  want=$(config_dir "$prefix")
  found=$(sed -n 's/^vigil_DIR:PATH=//p' "$proj/build/CMakeCache.txt")
  [ "$found" = "$want" ] || fail "find_package(vigil) found '$found', not $want"
  cmake --build "$proj/build" -j2 >"$work/consumer-build.log" 2>&1 \
    || { cat "$work/consumer-build.log"; fail "building my_agents against $prefix"; }
  if grep -q -e "$src" -e "$build" "$proj/build/compile_commands.json" \
       "$proj/build/build.ninja"; then
    fail "my_agents' build names vigil's source or build tree"
  fi
  echo "built $proj/build/my_agents against $found"
}

# run_consumer WORK VERSION: runs my_agents twice on one data dir; the second run
# continues the first's tally (the agent's state came back from LMDB). The
# tool's first call in each run fails (a 503), so the first document of each
# is answered only because the policy file's retry took it again.
run_consumer() {
  local work=$1 proj=$1/my_agents out version=$2
  step "run my_agents twice on one data dir (stdout is the program's alone)"
  # The README's command, and its output.
  out=$("$proj/build/my_agents" "$proj/agents.yaml" "$work/data" \
          "a first document" "and a second" 2>"$work/stderr1") \
    || { echo "$out"; cat "$work/stderr1"; fail "my_agents exited $?"; }
  echo "$out"
  [ "$out" = "$(printf 'vigil %s\ndocument 1: 3 words\ndocument 2: 3 words' "$version")" ] \
    || fail "first run printed other lines on stdout than the README says"
  out=$("$proj/build/my_agents" "$proj/agents.yaml" "$work/data" "third" \
          2>"$work/stderr2") \
    || { echo "$out"; cat "$work/stderr2"; fail "my_agents (second run) exited $?"; }
  echo "$out"
  [ "$out" = "$(printf 'vigil %s\ndocument 3: 1 word' "$version")" ] \
    || fail "second run: not 'document 3: 1 word' alone (state not restored from the data dir, or log lines on stdout?)"
  # vigil's log lines go to stderr.
  grep -q "\[vigil\] \[info\] vigil: data dir $work/data: verified" "$work/stderr2" \
    || { cat "$work/stderr2"; fail "vigil's log line (verified) is not on stderr"; }
  # vigil's own message types can be named in a policy file, though the
  # program's C++ names none of them (static libraries link only what is
  # named): a degrade default of type vigil.builtin.Number.
  sed 's/^      durability: journal$/      durability: journal\n      on_failure: degrade\n      degrade:\n        default: {type: vigil.builtin.Number, value: {n: -1}}/' \
    "$proj/agents.yaml" >"$work/builtin.yaml"
  grep -q 'vigil.builtin.Number' "$work/builtin.yaml" || fail "sed did not add the degrade default"
  out=$("$proj/build/my_agents" "$work/builtin.yaml" "$work/data3" "one two" 2>&1) \
    || { echo "$out"; fail "a policy naming vigil.builtin.Number was refused"; }
  grep -qx "document 1: 2 words" <<<"$out" || { echo "$out"; fail "builtin.yaml run"; }
  echo "a policy naming vigil.builtin.Number: accepted and run"
  # A policy file with a mistake is refused with FILE:LINE:COL.
  sed 's/class: read_only/class: read_mostly/' "$proj/agents.yaml" >"$work/bad.yaml"
  if out=$("$proj/build/my_agents" "$work/bad.yaml" "$work/data2" "x" 2>&1); then
    fail "a bad policy file was accepted: $out"
  fi
  grep -q "^$work/bad.yaml:[0-9]*:[0-9]*: " <<<"$out" \
    || fail "a bad policy file's error does not name FILE:LINE:COL: $out"
  echo "$out"
}

# installed_command VIGIL WORK SRC: the installed `vigil` prints its
# release, checks the installed policies, and upgrades a data dir written by
# an earlier release (format 1, tests/fixtures/format1) when it runs on it.
installed_command() {
  local vigil=$1 work=$2 src=$3 version=$4 policies=$5 out
  step "the installed command: $vigil"
  out=$("$vigil" --version) || fail "vigil --version exited $?"
  echo "$out"
  [ "$out" = "vigil $version (data dir format 2)" ] \
    || fail "vigil --version printed '$out', not 'vigil $version (data dir format 2)'"
  local n=0
  for p in "$policies"/*.yaml; do
    "$vigil" check "$p" >/dev/null || fail "vigil check $p"
    n=$((n + 1))
  done
  [ "$n" -eq 5 ] || fail "$n installed policies, not 5"
  echo "vigil check: $n installed policies valid"
  step "upgrade: a format 1 data dir (an earlier release's) opens with the installed command"
  mkdir -m 700 "$work/old"
  cp "$src/tests/fixtures/format1/data.mdb" "$work/old/data.mdb"
  chmod 600 "$work/old/data.mdb"
  out=$("$vigil" run "$policies/chaos.yaml" --data-dir "$work/old" --for 300ms \
          --progress 0 2>&1) || { echo "$out"; fail "vigil run on a format 1 data dir exited $?"; }
  grep "upgraded the data dir from format 1 to 2" <<<"$out" \
    || { echo "$out"; fail "vigil run did not upgrade the format 1 data dir"; }
  "$vigil" verify --data-dir "$work/old" || fail "the upgraded data dir does not verify"
  out=$("$vigil" inspect --data-dir "$work/old" agents 2>&1) \
    || { echo "$out"; fail "vigil inspect on the upgraded data dir exited $?"; }
  echo "$out"
  # fx/source and its 5 outbox entries were written by the earlier release.
  grep -q "^fx/source  source  journal .* outbox=5 " <<<"$out" \
    || fail "the earlier release's agent fx/source (5 outbox entries) is not in the upgraded data dir"
}
