#!/usr/bin/env bash
# Renders a generated HTML report in headless Chromium: the screenshot must
# be non-blank and the console free of errors.
# Usage: .ci/browser.sh path/to/throtl
set -euo pipefail
THROTL="${1:?usage: $0 path/to/throtl}"
CHROMIUM=/usr/bin/chromium
if [ ! -x "$CHROMIUM" ]; then
    echo "installing Debian chromium (apt-get)"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

WORK="$(mktemp -d)"
MOCK_PID=""
cleanup() { [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

"$THROTL" mock --port 0 --ttft 30ms --itl 3ms >"$WORK/url" 2>/dev/null &
MOCK_PID=$!
for _ in $(seq 50); do [ -s "$WORK/url" ] && break; sleep 0.1; done
URL="$(head -1 "$WORK/url")"
[ -n "$URL" ] || { echo "FAIL: the simulator did not start"; exit 1; }

# Two runs (so the overlay and comparison are drawn), a few seconds each for the time series.
"$THROTL" bench --url "$URL" -m throtl-sim -c 4 -d 3s --output-tokens 32 -q --no-store \
    --json "$WORK/a.json" --markdown "$WORK/a.md" >/dev/null
"$THROTL" bench --url "$URL" -m throtl-sim -c 8 -d 3s --output-tokens 32 -q --db "$WORK/h.db" \
    --html "$WORK/single.html" --gpu-cost-per-hour 2.5 >/dev/null
ID="$("$THROTL" runs list --db "$WORK/h.db" | awk 'NR==2 {print $1}')"
"$THROTL" bench --url "$URL" -m throtl-sim -c 2 -d 3s --output-tokens 32 -q --db "$WORK/h.db" >/dev/null
ID2="$("$THROTL" runs list --db "$WORK/h.db" | awk 'NR==2 {print $1}')"
"$THROTL" report "$ID" "$ID2" --db "$WORK/h.db" --html "$WORK/report.html"
# A sweep: its own HTML, and the same curves read back from the history by group id.
"$THROTL" sweep --url "$URL" -m throtl-sim --concurrency 1,4,16 -n 24 --output-tokens 16 -q \
    --db "$WORK/s.db" --slo ttft=100ms --html "$WORK/sweep.html" >/dev/null
GROUP="$("$THROTL" runs list --db "$WORK/s.db" | awk 'NR==2 {print $7}')"
"$THROTL" report "$GROUP" --db "$WORK/s.db" --html "$WORK/sweep-report.html"
for f in sweep.html sweep-report.html; do
    grep -q "Sweep curves" "$WORK/$f" && grep -q "knee" "$WORK/$f" || {
        echo "FAIL: $f has no sweep curves"; exit 1; }
done

for f in report.html sweep.html; do
    if grep -qiE '<script|src=|href=|https?://[a-z]' <(sed 's/http:\/\/127\.0\.0\.1[^<" ]*//g' "$WORK/$f"); then
        echo "FAIL: $f references external resources or scripts"; exit 1
    fi
done

check() {
    local html="$1" png="$WORK/$(basename "$1" .html).png" log="$WORK/$(basename "$1" .html).log"
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-background-networking \
        --disable-component-update --disable-sync --no-first-run \
        --user-data-dir="$WORK/profile-$(basename "$1")" --enable-logging=stderr --v=0 \
        --window-size=1280,2400 --screenshot="$png" "file://$html" 2>"$log" || {
        echo "FAIL: chromium exited non-zero"; cat "$log"; exit 1; }
    if grep -E 'Uncaught|ERROR:CONSOLE|CONSOLE\([0-9]+\)' "$log"; then
        echo "FAIL: console errors in $html"; exit 1
    fi
    python3 - "$png" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, w, h = 8, b"", 0, 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h = struct.unpack(">II", body[:8])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw = zlib.decompress(idat)
distinct = len(set(raw))
inked = sum(1 for b in raw if b not in (0, 255)) / len(raw)
print(f"screenshot {sys.argv[1].rsplit('/', 1)[-1]}: {w}x{h}, {len(data)} bytes, {distinct} distinct byte values, {inked:.1%} non-blank bytes")
if w < 100 or h < 100 or distinct < 16 or inked < 0.001:
    sys.exit("FAIL: the screenshot is blank")
PY
}
check "$WORK/single.html"
check "$WORK/report.html"
check "$WORK/sweep.html"
check "$WORK/sweep-report.html"
[ -n "${KEEP_SCREENSHOT:-}" ] && cp "$WORK/report.png" "$KEEP_SCREENSHOT"
echo "browser check passed"
