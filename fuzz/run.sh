#!/usr/bin/env bash
# Fuzzes isoheap: builds every cargo-fuzz target once per mode, replays the saved regressions,
# then runs each target for SECONDS per mode (one process at a time) and prints its final
# libFuzzer stats line. Exits non-zero if any target crashes, times out or runs out of memory;
# the reproducer is left in fuzz/artifacts/<target>/ and the log in fuzz/target/fuzz-*.log.
#
#   bash fuzz/run.sh 60           # from anywhere; CI runs `bash fuzz/run.sh 15`
#
# Two modes, because isoheap's checked mode is on by default exactly when debug assertions are,
# and `SyncHeap`, `GlobalHeap` and buffer heaps cannot turn it off at run time:
#   checked    cargo fuzz's default build: optimised, debug assertions and overflow checks on,
#              so every heap built by default is in checked mode (tags, poison, marks).
#   unchecked  `cargo fuzz build -O`: no debug assertions, the production configuration; the
#              only one in which `SyncHeap` frees blocks through its lock-free remote lists.
# Both use AddressSanitizer. Compare tracing is off: it made the targets ~4x slower for no
# coverage gain. The two modes share each target's corpus (fuzz/corpus/<target>).
#
# Works from a clean clone: installs cargo-fuzz if it is missing (nightly toolchain, pinned by
# rust-toolchain.toml). Environment: FUZZ_JOBS (build jobs, default 1), FUZZ_TARGETS (default:
# all), FUZZ_MODES (default: "checked unchecked").
set -euo pipefail

secs=${1:?usage: bash fuzz/run.sh SECONDS}
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    # A debug build of the tool: its speed does not matter, and it compiles in a third of the time.
    CARGO_BUILD_JOBS=${FUZZ_JOBS:-1} cargo install cargo-fuzz --locked --quiet --debug
fi

host=$(rustc -vV | sed -n 's/^host: //p')
targets=$(echo ${FUZZ_TARGETS:-$(cargo fuzz list)})
modes=$(echo ${FUZZ_MODES:-checked unchecked})

# mode -> cargo fuzz build flags and target directory
flags() {
    case $1 in
    checked) echo "--no-trace-compares" ;;
    unchecked) echo "--no-trace-compares -O --target-dir target/unchecked" ;;
    *) echo "unknown mode $1" >&2; exit 1 ;;
    esac
}
bin_dir() {
    case $1 in
    checked) echo "target/$host/release" ;;
    unchecked) echo "target/unchecked/$host/release" ;;
    esac
}

mkdir -p target
for mode in $modes; do
    start=$SECONDS
    log=target/fuzz-build-$mode.log
    # shellcheck disable=SC2046 # the flags are words
    if ! CARGO_BUILD_JOBS=${FUZZ_JOBS:-1} cargo fuzz build $(flags "$mode") >"$log" 2>&1; then
        cat "$log" >&2
        echo "building the fuzz targets ($mode) failed" >&2
        exit 1
    fi
    grep -E '^(warning|error)' -A6 "$log" || true
    for t in $targets; do
        [[ -x $(bin_dir "$mode")/$t ]] || { echo "fuzz target $t ($mode) was not built" >&2; exit 1; }
    done
    echo "built fuzz targets ($targets; $mode) in $((SECONDS - start)) s"
done

failed=()
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    for mode in $modes; do
        bin=$(bin_dir "$mode")/$t
        log=target/fuzz-$t-$mode.log
        # Saved reproducers first: each must run clean.
        if compgen -G "regressions/$t/*" >/dev/null; then
            if ! "$bin" -runs=1 regressions/"$t"/* >"$log.regressions" 2>&1; then
                echo "$t [$mode]: a saved regression fails (log: fuzz/$log.regressions)" >&2
                grep -E 'Running|panicked at|^op #|ERROR' -A1 "$log.regressions" | head -20 >&2
                failed+=("$t[$mode](regression)")
            fi
        fi
        if "$bin" -max_total_time="$secs" -max_len=1024 -len_control=0 -timeout=20 \
            -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/$mode-" \
            "corpus/$t" >"$log" 2>&1; then
            stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
            echo "$t [$mode]: ${stats:-$(tail -1 "$log")}"
        else
            echo "$t [$mode]: FAILED (log: fuzz/$log)" >&2
            grep -E 'panicked at|^op #|ERROR|SUMMARY|Test unit written' -A1 "$log" | head -30 >&2
            failed+=("$t[$mode]")
        fi
    done
done

if ((${#failed[@]})); then
    echo "fuzzing failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzzing: $(wc -w <<<"$targets") targets x $(wc -w <<<"$modes") modes ran ${secs} s each without a crash"
