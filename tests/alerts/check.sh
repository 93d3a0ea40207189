#!/usr/bin/env bash
# The alert rules, offline: `promtool check rules` (syntax, PromQL, templates)
# and `promtool test rules` (the unit tests beside them: each alert fires on
# made-up series at the expected time with its labels and annotations, and
# stays quiet on a near miss). promtool is the pinned build of
# hack/promtool-build.sh (cached). That the rules name only metrics the
# operator exports is tests/observability_live.rs's job.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
rules="$repo/deploy/prometheus/aiops-operator-rules.yaml"
tests="$repo/deploy/prometheus/aiops-operator-rules.test.yaml"

promtool=$(bash "$repo/hack/promtool-build.sh")
"$promtool" check rules "$rules"
"$promtool" test rules "$tests"
