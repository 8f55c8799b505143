#!/usr/bin/env bash
# End-to-end test of the web UI (#5) in headless Chromium against the real
# `colloquy serve` (tests/e2e/ui.test.mjs). Installs what it needs, each step
# only when missing: Debian's chromium + chromium-driver (the browser build of
# Playwright cannot be downloaded here), the npm packages of tests/e2e
# (playwright-core, from package-lock.json). Screenshots: target/e2e/*.png.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    echo "e2e: installing Debian's chromium and chromium-driver"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# up to date after `cargo test --release` (then this is a no-op)
cargo build --release --quiet

want=$(node -p "require('./tests/e2e/package-lock.json').packages['node_modules/playwright-core'].version")
have=$(node -p "require('./tests/e2e/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [ "$want" != "$have" ]; then
    (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error)
fi

mkdir -p target/e2e
set +e
node --test --test-reporter=tap tests/e2e/ui.test.mjs 2>&1 | tee target/e2e/tap.txt
rc=${PIPESTATUS[0]}
set -e
passed=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' target/e2e/tap.txt | tail -1)
failed=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' target/e2e/tap.txt | tail -1)
skipped=$(sed -n 's/^# skipped \([0-9]*\)$/\1/p' target/e2e/tap.txt | tail -1)
if [ "${skipped:-0}" != "0" ]; then echo "e2e: ${skipped} skipped (see the reason above)"; fi
echo "e2e (web UI, headless Chromium): ${passed:-0} passed, ${failed:-?} failed"
exit "$rc"
