#!/usr/bin/env bash
# Runs each fuzz target for SECONDS (default 20) from its seed corpus.
#
#   fuzz/smoke.sh [SECONDS]
#
# Without a nightly toolchain or cargo-fuzz it prints "fuzz smoke: skipped: <reason>" and exits
# 0. Otherwise it exits non-zero when a target fails to build or crashes (libFuzzer leaves the
# input under fuzz/artifacts/<target>/).
#
# New inputs libFuzzer finds go to a scratch directory, not to fuzz/corpus/ (only the seeds are
# committed); set FUZZ_GROW_CORPUS=1 to let them grow the seed directories instead.
set -u

secs="${1:-20}"
case "$secs" in
    '' | *[!0-9]*)
        echo "fuzz smoke: usage: $0 [SECONDS]" >&2
        exit 2
        ;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.." || exit 1

if ! command -v cargo >/dev/null 2>&1; then
    echo "fuzz smoke: skipped: no cargo on PATH"
    exit 0
fi
if ! command -v rustup >/dev/null 2>&1 || ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz smoke: skipped: no nightly toolchain (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz smoke: skipped: cargo-fuzz is not installed (cargo install cargo-fuzz)"
    exit 0
fi

targets=(sip_message digest_header prov_filename csv_import)

echo "fuzz smoke: building ${targets[*]}"
if ! cargo +nightly fuzz build; then
    echo "fuzz smoke: FAILED: cargo fuzz build" >&2
    exit 1
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for t in "${targets[@]}"; do
    seeds="fuzz/corpus/$t"
    if [ "${FUZZ_GROW_CORPUS:-0}" = 1 ]; then
        dirs=("$seeds")
    else
        mkdir -p "$scratch/$t"
        # The first directory receives new inputs; the seeds are only read.
        dirs=("$scratch/$t" "$seeds")
    fi
    echo "fuzz smoke: $t for ${secs}s"
    log="$scratch/$t.log"
    cargo +nightly fuzz run "$t" "${dirs[@]}" -- -max_total_time="$secs" -print_final_stats=1 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    done_line="$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
    execs="$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -n 1)"
    if [ "$rc" -ne 0 ]; then
        echo "fuzz smoke: $t FAILED (exit $rc); see fuzz/artifacts/$t/" >&2
        failed+=("$t")
    else
        echo "fuzz smoke: $t ok: ${execs:-?} executions ${done_line:+($done_line)}"
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz smoke: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz smoke: passed (${#targets[@]} targets, ${secs}s each)"
