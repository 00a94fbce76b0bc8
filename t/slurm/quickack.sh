#!/usr/bin/env bash
# quickack.sh run CMD [ARG...]: runs CMD with TCP quick ACKs on the loopback
# routes (the local table's 127.0.0.0/8 and 127.0.0.1 entries: a host whose
# name resolves to 127.0.0.1 uses the second), then puts those routes back
# exactly as they were, whatever CMD did. Needs root and iproute2. Exits with
# CMD's status; 2 when a route could not be set or restored.
set -euo pipefail
if [ "${1:-}" != run ] || [ $# -lt 2 ]; then
    echo "usage: quickack.sh run CMD [ARG...]" >&2
    exit 2
fi
shift
[ "$(id -u)" = 0 ] || { echo "quickack.sh: needs root" >&2; exit 2; }

saved=$(ip route show table local | grep -E '^local 127\.0\.0\.(0/8|1) ' || true)
[ -n "$saved" ] || { echo "quickack.sh: no loopback route in the local table" >&2; exit 2; }

# shellcheck disable=SC2317 # run by the EXIT trap
restore() {
    local line now ok=0
    while IFS= read -r line; do
        # shellcheck disable=SC2086 # the saved route, word by word
        ip route change $line table local || ok=2
    done <<< "$saved"
    now=$(ip route show table local | grep -E '^local 127\.0\.0\.(0/8|1) ' || true)
    if [ "$now" != "$saved" ]; then
        echo "quickack.sh: routes NOT restored; were:" >&2
        echo "$saved" >&2
        ok=2
    fi
    return "$ok"
}
trap 'restore || exit 2' EXIT
trap 'exit 130' INT TERM

while IFS= read -r line; do
    line=${line% quickack 1}
    # shellcheck disable=SC2086
    ip route change $line table local quickack 1
done <<< "$saved"
rc=0
"$@" || rc=$?
exit "$rc"
