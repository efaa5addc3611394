#!/bin/sh
# Debian's Chromium for the studio's browser test (tests/test_studio_browser.py drives it with Playwright; no
# browser is downloaded at run time). Idempotent: does nothing when /usr/bin/chromium is there. Runs only as
# root with apt-get; otherwise prints how to do it (the browser test then skips, saying why).
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium (the studio's browser test)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "warning: could not install chromium (the studio's browser test will skip)"
else
  echo "note: for the studio's browser test, run: sudo apt-get install chromium"
fi
exit 0
