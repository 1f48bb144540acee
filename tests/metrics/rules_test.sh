#!/usr/bin/env bash
# vigil's default Prometheus alert rules (issue 24), checked by Prometheus's
# own promtool: examples/monitoring/alerts.yml must load (check rules), and
# pass its unit tests, alerts_test.yml (test rules). Then the tests must be
# able to fail: copies of alerts.yml with one threshold or window changed
# each, made in a temporary directory, must fail them, on the alert changed.
#   rules_test.sh SOURCE_DIR
set -euo pipefail
src=$(cd "$1" && pwd)
dir=$src/examples/monitoring

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

command -v promtool >/dev/null \
  || fail "promtool not found: install Debian's prometheus package: bash scripts/deps.sh"
promtool --version 2>&1 | head -1

step "promtool check rules alerts.yml"
(cd "$dir" && promtool check rules alerts.yml)

step "promtool test rules alerts_test.yml"
(cd "$dir" && promtool test rules alerts_test.yml)
# promtool prints SUCCESS only; say what it ran.
echo "$(grep -c 'eval_time:' "$dir/alerts_test.yml") cases in" \
     "$(grep -c '^  - interval:' "$dir/alerts_test.yml") test groups passed"

work=$(mktemp -d /tmp/vigil-rules-test.XXXXXX)
trap 'rm -rf "$work"' EXIT

# mutant ALERT FROM TO: alerts.yml with the text FROM (on exactly one line)
# replaced by TO must fail alerts_test.yml, with a case of ALERT failing.
mutants=0
mutant() {
  local alert=$1 from=$2 to=$3 d rules out
  mutants=$((mutants + 1))
  d=$work/$mutants
  mkdir "$d"
  cp "$dir/alerts_test.yml" "$d/"
  [ "$(grep -cF -- "$from" "$dir/alerts.yml")" = 1 ] \
    || fail "mutant $mutants: '$from' is not on exactly one line of alerts.yml"
  rules=$(<"$dir/alerts.yml")
  printf '%s\n' "${rules/"$from"/"$to"}" >"$d/alerts.yml"
  (cd "$d" && promtool check rules alerts.yml >/dev/null) \
    || fail "mutant $mutants ($alert: '$to') does not load"
  if out=$(cd "$d" && promtool test rules alerts_test.yml 2>&1); then
    fail "alerts_test.yml passes with $alert's '$from' changed to '$to':" \
         "its cases do not check it"
  fi
  grep -q "alertname: $alert," <<<"$out" \
    || { echo "$out"; fail "mutant $mutants ($alert: '$to') failed, but not on $alert"; }
  printf "%s: '%s' -> '%s' fails, as it should\n" "$alert" "$from" "$to"
}

step "mutants: each must fail alerts_test.yml"
# Each threshold moved past the case that fires, then past the case that
# must not (at or just below the threshold).
mutant VigilAgentErrorRate '> 0.05' '> 0.5'
mutant VigilAgentErrorRate '> 0.05' '> 0.035'
mutant VigilAgentErrorRate 'outcome=~"failed|rejected"' 'outcome=~"failed|rejected|refused"'
mutant VigilHandlingLatencyHigh '> 2 *' '> 3 *'
mutant VigilHandlingLatencyHigh '> 2 *' '> 1.4 *'
# A baseline of the last hour absorbs a 3-hour slow spell.
mutant VigilHandlingLatencyHigh '[1d:5m]' '[1h:5m]'
mutant VigilCircuitsOpen '[2m])) > 1' '[2m])) > 2'
mutant VigilCircuitsOpen '[2m])) > 1' '[2m])) > 0'
# The state now, not over 2 minutes: a breaker half-open for a probe drops out.
mutant VigilCircuitsOpen \
  'sum(max_over_time(vigil_tool_breaker_state{state="open"}[2m])) > 1' \
  'sum(vigil_tool_breaker_state{state="open"}) > 1'
mutant VigilDeadLettersHigh 'sum(vigil_dead_letters) > 100' 'sum(vigil_dead_letters) > 150'
mutant VigilDeadLettersHigh 'sum(vigil_dead_letters) > 100' 'sum(vigil_dead_letters) >= 100'
mutant VigilRetriesHigh '/ 5 > 50' '/ 5 > 70'
mutant VigilRetriesHigh '/ 5 > 50' '/ 5 >= 50'
echo "$mutants mutants failed the tests"

step "OK"
