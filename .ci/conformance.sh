#!/usr/bin/env bash
# Conformance: drive `throtl mock --engine X` with the official Python client
# libraries (openai, anthropic, ollama, huggingface_hub; google-genai and
# cohere when they install), streaming, and assert text and token counts.
#
# Usage: .ci/conformance.sh path/to/throtl
# The virtual environment lives outside the repository:
#   ${THROTL_CI_CACHE:-$HOME/.cache/throtl-ci}/venv
set -euo pipefail

bin="${1:?usage: $0 path/to/throtl}"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
here="$(cd "$(dirname "$0")" && pwd)"
cache="${THROTL_CI_CACHE:-$HOME/.cache/throtl-ci}"
venv="$cache/venv"

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$cache"
    python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install --quiet --disable-pip-version-check --upgrade openai anthropic ollama huggingface_hub
optional=()
for pkg in google-genai cohere; do
    if "$py" -m pip install --quiet --disable-pip-version-check --upgrade "$pkg"; then
        optional+=("$pkg")
    else
        echo "conformance: optional client '$pkg' did not install; its engine is skipped" >&2
    fi
done

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

tmp="$(mktemp -d)"
args=()
for engine in vllm tgi ollama llamacpp sglang openai anthropic gemini cohere; do
    "$bin" mock --engine "$engine" --port 0 --ttft 5ms --itl 1ms --model conformance-model \
        >"$tmp/$engine.url" 2>"$tmp/$engine.log" &
    pids+=("$!")
    for _ in $(seq 100); do
        [ -s "$tmp/$engine.url" ] && break
        sleep 0.05
    done
    if [ ! -s "$tmp/$engine.url" ]; then
        echo "conformance: throtl mock --engine $engine did not start:" >&2
        cat "$tmp/$engine.log" >&2
        exit 1
    fi
    args+=("$engine=$(head -n1 "$tmp/$engine.url")")
done

"$py" "$here/conformance.py" "${args[@]}"
