#!/usr/bin/env bash
# `make test-browser`: the console in headless Chromium (tests/console_browser.rs)
# alone. Installs the pinned Chromium and chromedriver (hack/browser-tools.sh),
# starts the sandbox unless it is running, runs the test, then stops the
# operator it started, and the sandbox if this script started it.
set -euo pipefail
cd "$(dirname "$0")/../.."

bash hack/browser-tools.sh
started=
if ! bash tests/sandbox/cluster.sh status >/dev/null 2>&1; then
  bash tests/sandbox/cluster.sh up
  started=1
fi
cleanup() {
  # The operator first: its fail-closed approval webhook would outlive it.
  bash tests/operator/local.sh stop-all || true
  bash tests/operator/local.sh uninstall || true
  if [[ -n $started ]]; then bash tests/sandbox/cluster.sh down; fi
}
trap cleanup EXIT
cargo test --locked --test console_browser
echo "screenshot of the console's detail page: target/console-detail.png"
