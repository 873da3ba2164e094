#!/usr/bin/env bash
# Test command: set up (first run only), then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/bootstrap.sh"
set +u; source "$ROOT/env.sh"; set -u
cd "$ROOT"
exec python -m pytest test "$@"
