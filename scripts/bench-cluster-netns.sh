#!/usr/bin/env bash
# Checks the cost model of docs/SCALING.md on throttled links, on one machine: every MPI rank of
# `rqat bench cluster` runs in its own network namespace, the namespaces hang on a bridge through
# veth pairs, and the students' links are shaped with tc (tbf) to each rate in turn. No traffic
# leaves the machine; everything is removed on exit.
#
#   bash scripts/bench-cluster-netns.sh [--rates "unlimited 10gbit 1gbit"] [--scenarios "allreduce signal"]
#                                       [--repeats N] [--rqat PATH] [--out FILE] [--extra-mpirun-args "..."]
#
# Needs root (ip netns, tc), Open MPI (mpirun, orted), python3 (link probe and summary) and a
# release build (swift build -c release). Output: one JSON line per measurement in --out (default
# runs/bench-cluster-netns/results.jsonl), each with "scenario" and "link" added, then a table of
# measured vs predicted step times.
#
# How ranks get into namespaces: mpirun runs in the hub namespace (the one with the bridge, address
# .1) and starts its daemons (orted) through `--mca plm_rsh_agent`, a script that, given a "host"
# 10.213.0.(10+i), runs the daemon's command with `ip netns exec rqc-r<i>` instead of ssh. The daemon
# starts its rank in the same namespace, so each rank sees only its veth; `--mca btl self,tcp` keeps
# ranks off shared memory and `btl_tcp_if_include`/`oob_tcp_if_include` put all traffic on the veths.
# Ranks 0..T-1 are the teachers, their links stay unshaped; the students' veths are shaped on both
# ends (tbf shapes egress only: the namespace end shapes uploads, the hub end downloads).
set -euo pipefail

RATES="unlimited 10gbit 1gbit"
SCENARIOS="allreduce signal"
REPEATS=1
RQAT=""
OUT=""
EXTRA_MPI=""
while [ $# -gt 0 ]; do
    case "$1" in
        --rates) RATES="$2"; shift 2 ;;
        --scenarios) SCENARIOS="$2"; shift 2 ;;
        --repeats) REPEATS="$2"; shift 2 ;;
        --rqat) RQAT="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --extra-mpirun-args) EXTRA_MPI="$2"; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

# Paths given on the command line are relative to where the script was started.
[ -n "$RQAT" ] && RQAT=$(readlink -f "$RQAT")
[ -n "$OUT" ] && OUT=$(readlink -m "$OUT")
cd "$(dirname "$0")/.."
SCRIPTS=$PWD/scripts   # the Python helpers; absolute, as the link probe runs under ip netns exec
OUT=${OUT:-runs/bench-cluster-netns/results.jsonl}
[ "$(id -u)" = 0 ] || { echo "needs root (ip netns, tc); run: sudo bash $0" >&2; exit 1; }
for tool in ip tc mpirun orted python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool (iproute2, openmpi-bin, python3)" >&2; exit 1; }
done
if [ -z "$RQAT" ]; then
    RQAT=$(swift build -c release --show-bin-path 2>/dev/null)/rqat
fi
[ -x "$RQAT" ] || { echo "no rqat at $RQAT: swift build -c release (or pass --rqat)" >&2; exit 1; }
RQAT=$(readlink -f "$RQAT")

P=rqc                 # prefix of every namespace and link this script creates
NET=10.213.0          # private /24 for the veths
RANKS=3               # namespaces for ranks (the largest scenario: 1 teacher + 2 students)
TMP=$(mktemp -d /tmp/rqc-netns.XXXXXX)

cleanup() {
    for i in $(seq 0 $((RANKS - 1))); do ip netns del "$P-r$i" 2>/dev/null || true; done
    ip netns del "$P-hub" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for ns in $(ip netns list | awk '{print $1}' | grep "^$P-" || true); do
    echo "removing namespace $ns left by an earlier run" >&2
    ip netns del "$ns"
done

# --- Topology: hub namespace with a bridge; one namespace per rank, joined by a veth pair. ---
ip netns add "$P-hub"
ip -n "$P-hub" link set lo up
ip -n "$P-hub" link add "${P}br" type bridge
ip -n "$P-hub" addr add "$NET.1/24" dev "${P}br"
ip -n "$P-hub" link set "${P}br" up
ip netns exec "$P-hub" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
for i in $(seq 0 $((RANKS - 1))); do
    ns="$P-r$i"
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    ip link add "${P}${i}a" netns "$ns" type veth peer name "${P}${i}b" netns "$P-hub"
    ip -n "$ns" addr add "$NET.$((10 + i))/24" dev "${P}${i}a"
    ip -n "$ns" link set lo up
    ip -n "$ns" link set "${P}${i}a" up
    ip -n "$P-hub" link set "${P}${i}b" master "${P}br"
    ip -n "$P-hub" link set "${P}${i}b" up
    echo "$NET.$((10 + i)) slots=1" >> "$TMP/hosts"
done

cat > "$TMP/agent.sh" <<EOF
#!/bin/sh
# plm_rsh_agent: "agent [ssh options] HOST COMMAND..." -> COMMAND in HOST's namespace.
while [ \$# -gt 0 ]; do case "\$1" in -*) shift ;; *) break ;; esac; done
host="\$1"; shift
exec ip netns exec "$P-r\$(( \${host##*.} - 10 ))" /bin/sh -c "\$*"
EOF
chmod +x "$TMP/agent.sh"

MPI_ARGS="--hostfile $TMP/hosts --mca plm_rsh_agent $TMP/agent.sh --mca btl self,tcp --mca btl_tcp_if_include $NET.0/24 --mca oob_tcp_if_include $NET.0/24 --mca btl_tcp_disable_family 6 --mca oob_tcp_disable_ipv6_family 1 $EXTRA_MPI"

# Shape (or unshape) the links of ranks $2.. to rate $1. tbf needs a bucket of at least rate/HZ
# and of a GSO packet (64 KB); the queue holds 50 ms.
shape() {
    local rate=$1; shift
    for i in "$@"; do
        for side in "$P-r$i ${P}${i}a" "$P-hub ${P}${i}b"; do
            set -- $side
            if [ "$rate" = unlimited ]; then
                ip netns exec "$1" tc qdisc del dev "$2" root 2>/dev/null || true
            else
                local burst=256kb
                case "$rate" in *gbit) [ "${rate%gbit}" -ge 4 ] 2>/dev/null && burst=2mb ;; esac
                ip netns exec "$1" tc qdisc replace dev "$2" root tbf rate "$rate" burst "$burst" latency 50ms
            fi
        done
    done
}

# Goodput of one TCP stream from the teacher's namespace to student $1's (what the link gives).
probe() {   # $1 = student rank, $2 = bytes
    ip netns exec "$P-r0" python3 "$SCRIPTS/bench-cluster-probe.py" client "$NET.$((10 + $1))" "$2" &
    local client=$!
    ip netns exec "$P-r$1" python3 "$SCRIPTS/bench-cluster-probe.py" server "$NET.$((10 + $1))" "$2"
    wait "$client"
}

SMOL=assets/SmolLM2-135M-Instruct.Q4_1.gguf
scenario_args() {
    case "$1" in
        # A realistic QAT student: SmolLM2-135M fake-quantized at W3G128, 2 data-parallel students,
        # 538 MB of fp32 gradients per step to allreduce; top-64 signal (small).
        allreduce) echo "--teacher $SMOL --student $SMOL --qat w3g128 --students 2 --signal top-64 --seq-len 256 --batch-tokens 512 --steps 4 --lookahead 2" ;;
        # The signal dominates: small random teacher and student with SmolLM2's vocabulary of
        # 49152, full fp32 logits on the wire (~165 KB per trained token), one student.
        signal) echo "--teacher small --student small --small-hidden 32 --qat none --students 1 --signal full --seq-len 256 --batch-tokens 1024 --steps 8 --lookahead 2" ;;
        *) echo "unknown scenario $1" >&2; exit 2 ;;
    esac
}
students_of() { case "$1" in allreduce) echo "1 2" ;; signal) echo "1" ;; esac; }

mkdir -p "$(dirname "$OUT")"
: > "$OUT"
echo "rqat $RQAT; results in $OUT"
for rep in $(seq 1 "$REPEATS"); do
    for scenario in $SCENARIOS; do
        for rate in $RATES; do
            # shellcheck disable=SC2046
            shape "$rate" $(students_of "$scenario")
            case "$rate" in *mbit) bytes=50000000 ;; unlimited) bytes=1000000000 ;; *) bytes=300000000 ;; esac
            goodput=$(probe 1 "$bytes")
            echo "== $scenario, student links $rate (probe: $goodput Gbit/s), repeat $rep"
            args=$(scenario_args "$scenario")
            # shellcheck disable=SC2086
            if ! ip netns exec "$P-hub" "$RQAT" bench cluster --json --teacher-counts 1 $args \
                    --extra-mpirun-args "$MPI_ARGS" > "$TMP/run.jsonl" 2> "$TMP/run.err"; then
                echo "run failed:" >&2; tail -30 "$TMP/run.err" >&2; exit 1
            fi
            sed "s/^{/{\"scenario\":\"$scenario\",\"link\":\"$rate\",\"probe_gbit_per_s\":$goodput,\"repeat\":$rep,/" "$TMP/run.jsonl" >> "$OUT"
            grep '"name":"cluster"' "$TMP/run.jsonl" | python3 "$SCRIPTS/bench-cluster-step.py"
        done
    done
done
shape unlimited 1 2

# --- Measured vs predicted (docs/SCALING.md, "Checking the model"). ---
ALLREDUCE_ALGORITHM=$(echo "$EXTRA_MPI" | sed -n 's/.*coll_libnbc_iallreduce_algorithm[ =]*\([0-9]\).*/\1/p')
# rqat sets OMPI_MCA_coll_libnbc_iallreduce_algorithm=3 (Rabenseifner) unless told otherwise.
python3 "$SCRIPTS/bench-cluster-table.py" "$OUT" "${ALLREDUCE_ALGORITHM:-${OMPI_MCA_coll_libnbc_iallreduce_algorithm:-3}}"
