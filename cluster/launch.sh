#!/usr/bin/env bash
# Starts an rqat run under Open MPI's mpirun: teachers on ranks 0..T-1, students on the rest.
#
#   cluster/launch.sh [--hostfile FILE|none] --teachers T --students S
#                     [--teacher-threads A] [--student-threads B] [--iface IFACE|CIDR]
#                     [--bind none|cores] [--oversubscribe] [--dry-run] -- COMMAND [ARGS...]
#
#   cluster/launch.sh --teachers 1 --students 2 -- .build/release/rqat train ...
#
# It builds one MPMD mpirun line, so the two roles get their own OpenBLAS thread counts:
#   mpirun [options] -np T -x OPENBLAS_NUM_THREADS=A -x RQAT_NUM_THREADS=A COMMAND ARGS --teachers T
#                  : -np S -x OPENBLAS_NUM_THREADS=B -x RQAT_NUM_THREADS=B COMMAND ARGS --teachers T
# (`--teachers T` is appended to the command: rqat splits the world by it.)
#
#   --hostfile FILE    Open MPI hostfile (default hostfiles/localhost; inside a SLURM allocation
#                      the default is none: mpirun then places ranks on the allocation)
#   --teacher-threads  OpenBLAS/rqat threads per teacher rank (default 1)
#   --student-threads  the same per student rank (default 1)
#   --iface IFACE      the network for MPI traffic and mpirun's own (btl_tcp_if_include and
#                      oob_tcp_if_include); an interface name or a subnet such as 10.0.0.0/24
#   --bind none        (default) ranks are not pinned: OpenBLAS threads may use any core
#   --bind cores       each rank pinned to max(A,B) cores (--bind-to core --map-by slot:PE=N)
#   --oversubscribe    allow more ranks than slots (added by itself when every host is this machine)
#   --dry-run          run the pre-flight checks, print the mpirun command, exit 0
#
# Before mpirun starts, cluster/preflight.sh checks the rank counts, the hostfile, the remote
# hosts and the command (exit 2 on any problem). When mpirun fails, the rank that died is named
# with its role and host on one last line. The exit status is mpirun's. (Open MPI 4.1 sometimes
# names no rank when one dies while the job is still starting; the last line then says so.)
set -euo pipefail

prog="launch.sh"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

die() { echo "$prog: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

hostfile="default"
teachers=""
students=""
teacher_threads=1
student_threads=1
iface=""
bind="none"
oversubscribe=0
dry_run=0

need_value() { if (($# < 2)) || [[ -z $2 ]]; then die "$1 needs a value (see $prog --help)"; fi; }
while (($# > 0)); do
    case "$1" in
        --hostfile) need_value "$@"; hostfile="$2"; shift 2 ;;
        --teachers) need_value "$@"; teachers="$2"; shift 2 ;;
        --students) need_value "$@"; students="$2"; shift 2 ;;
        --teacher-threads) need_value "$@"; teacher_threads="$2"; shift 2 ;;
        --student-threads) need_value "$@"; student_threads="$2"; shift 2 ;;
        --iface) need_value "$@"; iface="$2"; shift 2 ;;
        --bind) need_value "$@"; bind="$2"; shift 2 ;;
        --oversubscribe) oversubscribe=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) die "unknown argument '$1'; the command to run goes after -- (see $prog --help)" ;;
    esac
done
(($# > 0)) || die "no command: give it after --, e.g. $prog --teachers 1 --students 2 -- .build/release/rqat train ..."
command_args=("$@")
for arg in "${command_args[@]}"; do
    [[ $arg == --teachers || $arg == --teachers=* ]] &&
        die "remove --teachers from the command: $prog appends --teachers ${teachers:-T} itself"
done
for pair in "teacher-threads:$teacher_threads" "student-threads:$student_threads"; do
    [[ ${pair#*:} =~ ^[1-9][0-9]*$ ]] || die "--${pair%%:*} must be a whole number >= 1; got '${pair#*:}'"
done
case "$bind" in none|cores) ;; *) die "--bind must be none or cores; got '$bind'" ;; esac

if [[ $hostfile == default ]]; then
    if [[ -n ${SLURM_JOB_ID:-} ]]; then hostfile="none"; else hostfile="$root/hostfiles/localhost"; fi
fi
[[ $hostfile == none ]] && hostfile=""

# ---------------------------------------------------------------- pre-flight (exit 2 on failure)
preflight_args=(--teachers "$teachers" --students "$students" --command "${command_args[0]}")
[[ -n $hostfile ]] && preflight_args+=(--hostfile "$hostfile")
[[ -n $iface ]] && preflight_args+=(--iface "$iface")
if ((oversubscribe)); then preflight_args+=(--oversubscribe); else preflight_args+=(--oversubscribe-local); fi
if ! summary=$("$here/preflight.sh" "${preflight_args[@]}"); then
    exit 2
fi
echo "$summary" >&2
[[ $summary == *"oversubscribe=yes"* ]] && oversubscribe=1
teachers=$((10#$teachers)) students=$((10#$students))

# ---------------------------------------------------------------- the mpirun line
mpirun_cmd=(mpirun)
[[ $(id -u) == 0 ]] && mpirun_cmd+=(--allow-run-as-root)
[[ -n $hostfile ]] && mpirun_cmd+=(--hostfile "$hostfile")
((oversubscribe)) && mpirun_cmd+=(--oversubscribe)
if [[ $bind == none ]]; then
    mpirun_cmd+=(--bind-to none)
else
    pe=$((teacher_threads > student_threads ? teacher_threads : student_threads))
    if ((teacher_threads != student_threads)); then
        echo "$prog: note: --bind cores pins every rank to $pe cores (Open MPI's --map-by is one setting for all ranks)" >&2
    fi
    mpirun_cmd+=(--bind-to core --map-by "slot:PE=$pe")
fi
[[ -n $iface ]] && mpirun_cmd+=(--mca btl_tcp_if_include "$iface" --mca oob_tcp_if_include "$iface")
mpirun_cmd+=(-np "$teachers" -x "OPENBLAS_NUM_THREADS=$teacher_threads" -x "RQAT_NUM_THREADS=$teacher_threads"
             "${command_args[@]}" --teachers "$teachers"
             : -np "$students" -x "OPENBLAS_NUM_THREADS=$student_threads" -x "RQAT_NUM_THREADS=$student_threads"
             "${command_args[@]}" --teachers "$teachers")

# Shell-quotes words only where needed, so the line can be pasted back into a shell.
quote_words() {
    local word out=()
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
            out+=("$word")
        else
            out+=("'${word//\'/\'\\\'\'}'")
        fi
    done
    printf '%s\n' "${out[*]}"
}

if ((dry_run)); then
    quote_words "${mpirun_cmd[@]}"
    exit 0
fi
command -v mpirun >/dev/null 2>&1 || die "mpirun not found on PATH: install Open MPI (apt-get install openmpi-bin)"

# ---------------------------------------------------------------- run, keeping mpirun's stderr tail
echo "$prog: $(quote_words "${mpirun_cmd[@]}")" >&2
work="$(mktemp -d "${TMPDIR:-/tmp}/rqat-launch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkfifo "$work/stderr"
# mpirun's stderr goes on to ours; its last lines are kept for the diagnosis. The reader ignores
# Ctrl-C so that mpirun can still report while it stops the ranks.
(
    trap '' INT TERM HUP
    tee >(tail -n 400 >"$work/tail") <"$work/stderr" >&2
    wait "$!"
) &
reader=$!
# mpirun runs in the background so that TERM can be passed on; its stdin is /dev/null, as for
# any background command (no rank reads it, and `nohup launch.sh ... &` cannot stop on SIGTTIN).
(
    trap - INT
    exec "${mpirun_cmd[@]}" 2>"$work/stderr" </dev/null
) &
mpirun_pid=$!

# Ctrl-C reaches mpirun directly (same process group): only note it. TERM/HUP are passed on.
interrupted=0
woken=0
trap 'interrupted=1; woken=1' INT
trap 'interrupted=1; woken=1; kill -TERM "$mpirun_pid" 2>/dev/null || true' TERM HUP
while :; do
    woken=0
    status=0
    wait "$mpirun_pid" || status=$?
    ((woken)) || break
done
wait "$reader" || true
trap - INT TERM HUP

((status == 0)) && exit 0

# ---------------------------------------------------------------- name the rank that died
role() {
    local r=$1
    if ((r < teachers)); then
        echo "teacher $r of $teachers"
    elif ((r < teachers + students)); then
        echo "student $((r - teachers)) of $students"
    else
        echo "no role: beyond $((teachers + students)) ranks"
    fi
}
resume="Resume from the last checkpoint in the run directory with the same command."
text=""
[[ -f $work/tail ]] && text=$(tr -s '[:space:]' ' ' <"$work/tail")

lost_re='lost communication with a remote daemon.*Remote daemon ?: [^ ]+ on node ([^ ]+)'
start_re='ORTE was unable to reliably start one or more daemons'
abort_re='MPI_ABORT was invoked on rank ([0-9]+) in communicator (.*) with errorcode (-?[0-9]+)'
signal_re='process rank ([0-9]+) with PID [0-9]+ on node ([^ ]+) exited on signal ([0-9]+)( \(([^)]*)\))?'
status_re='exited with non-zero status[^[]* Process name: \[\[[0-9]+,[0-9]+\],([0-9]+)\] Exit code: (-?[0-9]+)'
improper_re='process rank ([0-9]+) with PID [0-9]+ on node ([^ ]+) exiting improperly'

if [[ $text =~ $lost_re ]]; then
    msg="lost contact with host ${BASH_REMATCH[1]} (its Open MPI daemon died or the network dropped); the ranks there and the other ranks were stopped. Check the machine and the network (--iface), then resume from the last checkpoint in the run directory with the same command."
elif [[ $text =~ $start_re ]]; then
    msg="Open MPI could not start its daemon on a remote host (ssh, orted on PATH, firewall or --iface); no rank ran. Run cluster/preflight.sh with the same --hostfile to find which."
elif [[ $text =~ $abort_re ]]; then
    rank="${BASH_REMATCH[1]}" comm="${BASH_REMATCH[2]}" code="${BASH_REMATCH[3]}"
    if [[ $comm == MPI_COMM_WORLD ]]; then
        msg="rank $rank ($(role "$rank")) called MPI_Abort (error code $code, its own message is above); the other ranks were stopped. $resume"
    else
        msg="rank $rank of communicator '$comm' called MPI_Abort (error code $code, its own message is above); the other ranks were stopped. $resume"
    fi
elif [[ $text =~ $signal_re ]]; then
    rank="${BASH_REMATCH[1]}" host="${BASH_REMATCH[2]}" signal="${BASH_REMATCH[3]}" signame="${BASH_REMATCH[5]}"
    how="signal $signal${signame:+ $signame}"
    [[ $signal == 9 ]] && how+=", often the kernel's out-of-memory killer: see dmesg on $host"
    msg="rank $rank ($(role "$rank")) on host $host died ($how); the other ranks were stopped. $resume"
elif [[ $text =~ $status_re ]]; then
    rank="${BASH_REMATCH[1]}" code="${BASH_REMATCH[2]}"
    msg="rank $rank ($(role "$rank")) exited with status $code (its own message is above); the other ranks were stopped. $resume"
elif [[ $text =~ $improper_re ]]; then
    rank="${BASH_REMATCH[1]}" host="${BASH_REMATCH[2]}"
    msg="rank $rank ($(role "$rank")) on host $host exited without MPI_Finalize; the other ranks were stopped. $resume"
elif ((interrupted)); then
    msg="interrupted; mpirun stopped the ranks (status $status). $resume"
elif [[ $text == *"process returned a non-zero exit code"* ]]; then
    msg="a rank exited with status $status (Open MPI did not say which, as it sometimes does when a rank dies while the job starts; its own message is above); the other ranks were stopped. $resume"
else
    msg="mpirun failed with status $status and named no rank (see its messages above)."
fi
echo "$prog: $msg" >&2
exit "$status"
