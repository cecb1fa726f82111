#!/usr/bin/env bash
# `make test-slurm`: the slurm profile run against a real one-node Slurm cluster on loopback.
#
#  1. tests/slurm/cluster.sh start (installs slurm + munge if missing; fake GPUs)
#  2. a job that fails on the cluster: snakemake must exit non-zero and print its Slurm log path
#  3. the small test config through `snakemake --profile slurm` (the profile installed by
#     `make slurm-profile` into a temp XDG_CONFIG_HOME) into a temp results dir
#  4. the same config with `--cores` locally; shards and tables checked, and the two runs'
#     shards compared (timing columns aside) by tests/slurm/check_results.py
# The cluster is stopped (every daemon, by PID) on any exit. Exit status: 0 only if all passed.
#
# Environment: MAPBENCH_SLURM_CONFIG (default tests/slurm/config.yaml),
# MAPBENCH_SLURM_TIMEOUT (seconds per snakemake run, default 900), MAPBENCH_SLURM_KEEP=1 keeps
# the temp dir, MAPBENCH_SLURM_LOCAL=0 skips the local comparison run.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BIN=${BIN:-$ROOT/.venv/bin}
CONFIG=${MAPBENCH_SLURM_CONFIG:-tests/slurm/config.yaml}
TIMEOUT=${MAPBENCH_SLURM_TIMEOUT:-900}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mapbench-test-slurm.XXXXXX")
CLUSTER=tests/slurm/cluster.sh
START=$SECONDS

log() { echo "test-slurm: $*" >&2; }

exec 3>&1 4>&2   # the caller's stdout/stderr, for messages from a trap inside a redirection
cleanup() {
    local rc=$?
    exec 1>&3 2>&4
    "$CLUSTER" stop || rc=1
    if [ "$rc" -eq 0 ] && [ "${MAPBENCH_SLURM_KEEP:-0}" != 1 ]; then
        rm -rf "$WORK"
    else
        log "outputs and logs kept in $WORK"
    fi
    [ "$rc" -eq 0 ] && log "passed in $((SECONDS - START)) s" || log "FAILED (exit $rc)"
    exit "$rc"
}
trap cleanup EXIT
# On INT/TERM, stop the running snakemake (it cancels its Slurm jobs), then clean up and exit.
CHILD=
trap '[ -n "$CHILD" ] && kill -TERM "$CHILD" 2>/dev/null; wait; exit 130' INT TERM

# bounded CMD...: run CMD under `timeout -k 10 $LIMIT`, in the background so that a signal to
# this script is handled at once rather than after CMD ends.
bounded() {
    local limit=$1 rc=0
    shift
    timeout -k 10 "$limit" "$@" &
    CHILD=$!
    wait "$CHILD" || rc=$?
    CHILD=
    return "$rc"
}

# A small slice of the shipped dataset, so the Gaussian-mixture fit takes seconds, not minutes.
"$BIN/python" - "$WORK/tiny.npz" <<'EOF'
import sys
import numpy as np
d = np.load("data/fashion_mnist_32.npz")
np.savez_compressed(sys.argv[1], train=d["train"][:256], train_labels=d["train_labels"][:256],
                    test=d["test"][:8], test_labels=d["test_labels"][:8], source=d["source"])
EOF
cat >"$WORK/overrides.yaml" <<EOF
datasets:
  fashion_mnist: {path: $WORK/tiny.npz, n_images: 2}
evaluate:
  weights_dir: $WORK/weights
EOF
CONFIG_ARGS=(--configfile "$CONFIG" "$WORK/overrides.yaml" --replace-workflow-config)

"$CLUSTER" start 3>&- 4>&-   # the daemons must not hold the caller's output open
export SLURM_CONF=${MAPBENCH_SLURM_DIR:-${TMPDIR:-/tmp}/mapbench-slurm}/etc/slurm.conf

# The profile is installed as users install it (`make slurm-profile`, the README's one-time step),
# into a per-run XDG_CONFIG_HOME so the user's own ~/.config is untouched, and used by name:
# `snakemake --profile slurm`, literally.
export XDG_CONFIG_HOME="$WORK/xdg"
make -s slurm-profile >/dev/null
# What the test changes about the profile: no accounts on this cluster, a short first status
# check, and per-run log/metadata dirs. Everything else (resources, GPU requests) is the profile's.
SLURM_ARGS=(--profile slurm --slurm-no-account
            --slurm-init-seconds-before-status-checks 2 --jobs 4)

# -- 2. a failing cluster job must fail the run and name its log --------------------------------
mkdir -p "$WORK/fail"
cat >"$WORK/fail/Snakefile" <<'EOF'
rule all:
    input: "out.txt"

rule boom:
    output: "out.txt"
    log: "boom.log"
    resources: gpu=1
    shell: "echo 'deliberate failure' >{log}; exit 3"
EOF
log "a failing job on the cluster"
set +e
bounded 120 "$BIN/snakemake" "${SLURM_ARGS[@]}" -d "$WORK/fail" -s "$WORK/fail/Snakefile" \
    --slurm-logdir "$WORK/fail/slurm-logs" >"$WORK/fail/snakemake.out" 2>&1
rc=$?
set -e
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    tail -20 "$WORK/fail/snakemake.out" >&2
    log "a failing Slurm job gave snakemake exit $rc (want non-zero, not a timeout)"
    exit 1
fi
if ! grep -q "$WORK/fail/slurm-logs/rule_boom/.*\.log" "$WORK/fail/snakemake.out"; then
    tail -20 "$WORK/fail/snakemake.out" >&2
    log "snakemake did not print the failed job's Slurm log path"
    exit 1
fi
log "ok: exit $rc, log path printed"

# -- 3. the test config through the slurm profile ------------------------------------------------
log "$CONFIG through snakemake --profile slurm"
bounded "$TIMEOUT" "$BIN/snakemake" "${SLURM_ARGS[@]}" "${CONFIG_ARGS[@]}" \
    --config results="$WORK/slurm/results" --slurm-logdir "$WORK/slurm/slurm-logs" \
    >"$WORK/slurm.out" 2>&1 || { tail -40 "$WORK/slurm.out" >&2; log "slurm run failed"; exit 1; }
submitted=$(grep -c "has been submitted with SLURM jobid" "$WORK/slurm.out" || true)
log "slurm run: $submitted Slurm jobs, $((SECONDS - START)) s so far"
[ "$submitted" -gt 0 ] || { log "no job went through Slurm"; exit 1; }
# What Slurm itself recorded (finished jobs stay listed for MinJobAge): every job completed,
# and solve/evaluate jobs (gpu: 1 in the profile) asked for a GPU, fit_prior (gpu: 0) did not.
: >"$WORK/slurm-jobs.txt"
for id in $(sed -n 's/.*submitted with SLURM jobid \([0-9]*\).*/\1/p' "$WORK/slurm.out"); do
    scontrol show job -o "$id" >>"$WORK/slurm-jobs.txt"
done
not_done=$(grep -vc 'JobState=COMPLETED' "$WORK/slurm-jobs.txt" || true)
no_gpu=$(grep -E 'Comment=rule_(solve|evaluate)' "$WORK/slurm-jobs.txt" | grep -vc 'TresPerJob=gres:gpu:1' || true)
cpu_gpu=$(grep -E 'Comment=rule_fit_prior' "$WORK/slurm-jobs.txt" | grep -c 'gpu' || true)
gpu_jobs=$(grep -c 'TresPerJob=gres:gpu:1' "$WORK/slurm-jobs.txt" || true)
log "Slurm jobs: $(wc -l <"$WORK/slurm-jobs.txt"), with a GPU: $gpu_jobs"
if [ "$not_done" -ne 0 ] || [ "$no_gpu" -ne 0 ] || [ "$cpu_gpu" -ne 0 ] || [ "$gpu_jobs" -eq 0 ]; then
    log "Slurm's job records are wrong ($not_done not COMPLETED, $no_gpu GPU rules without a GPU," \
        "$cpu_gpu fit_prior jobs with one); see $WORK/slurm-jobs.txt"
    exit 1
fi

# -- 4. the same config locally; compare --------------------------------------------------------
if [ "${MAPBENCH_SLURM_LOCAL:-1}" = 1 ]; then
    log "$CONFIG locally (--cores 2) for comparison"
    bounded "$TIMEOUT" "$BIN/snakemake" --cores 2 "${CONFIG_ARGS[@]}" \
        --config results="$WORK/local/results" >"$WORK/local.out" 2>&1 \
        || { tail -40 "$WORK/local.out" >&2; log "local run failed"; exit 1; }
    "$BIN/python" tests/slurm/check_results.py "$WORK/slurm/results" --same-as "$WORK/local/results"
else
    "$BIN/python" tests/slurm/check_results.py "$WORK/slurm/results"
fi
