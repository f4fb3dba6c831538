#!/usr/bin/env bash
# Pre-flight checks for an rqat run under Open MPI, before mpirun is started.
#
#   cluster/preflight.sh --teachers T --students S [--hostfile FILE]
#                        [--oversubscribe | --oversubscribe-local] [--command PATH] [--iface IFACE]
#
# Checks, each failure one line on stderr naming the hostfile and line (or host) and the fix:
#   - T >= 1 and S >= 1 (a run needs both roles);
#   - the hostfile parses as Open MPI reads it: `host [slots=N] [max_slots=N]`, `#` comments,
#     blank lines; slots are whole numbers >= 1; a host given a slot count is listed once;
#   - every host that is not this machine resolves (getent hosts) and answers ssh without a
#     password (BatchMode, 5 s connect timeout), has Open MPI's orted on its non-interactive
#     PATH, and (with --command) has the command at the same path, (with --iface) the interface;
#   - the slots add up to at least T+S ranks, unless --oversubscribe (always allowed) or
#     --oversubscribe-local (allowed when every host is this machine).
# Without --hostfile (inside a SLURM allocation) only the rank counts (against SLURM_NTASKS when
# set), the local command and interface are checked.
#
# On success it prints one summary line on stdout ending in `oversubscribe=yes|no` (yes when the
# ranks outnumber the slots and mpirun needs --oversubscribe) and exits 0; otherwise exit 2.
set -euo pipefail

prog="preflight.sh"
hostfile=""
teachers=""
students=""
oversubscribe="no"          # no | yes | local
command_path=""
iface=""
ssh_timeout="${PREFLIGHT_SSH_TIMEOUT:-5}"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

failures=()
fail() { failures+=("$prog: $*"); }

finish_if_failed() {
    if ((${#failures[@]} > 0)); then
        printf '%s\n' "${failures[@]}" >&2
        exit 2
    fi
}

while (($# > 0)); do
    case "$1" in
        --hostfile) hostfile="${2-}"; shift 2 || { fail "--hostfile needs a file"; finish_if_failed; } ;;
        --teachers) teachers="${2-}"; shift 2 || { fail "--teachers needs a number"; finish_if_failed; } ;;
        --students) students="${2-}"; shift 2 || { fail "--students needs a number"; finish_if_failed; } ;;
        --command) command_path="${2-}"; shift 2 || { fail "--command needs a path"; finish_if_failed; } ;;
        --iface) iface="${2-}"; shift 2 || { fail "--iface needs an interface name"; finish_if_failed; } ;;
        --oversubscribe) oversubscribe="yes"; shift ;;
        --oversubscribe-local) [[ $oversubscribe == yes ]] || oversubscribe="local"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) fail "unknown argument '$1' (see $prog --help)"; finish_if_failed ;;
    esac
done

# ---------------------------------------------------------------- rank counts
count_ok=1
for pair in "teachers:$teachers" "students:$students"; do
    name="${pair%%:*}" value="${pair#*:}"
    if [[ -z $value ]]; then
        fail "--$name is required (ranks 0..T-1 are teachers, the rest students)"; count_ok=0
    elif ! [[ $value =~ ^[0-9]+$ ]]; then
        fail "--$name must be a whole number; got '$value'"; count_ok=0
    fi
done
if ((count_ok)); then
    teachers=$((10#$teachers)) students=$((10#$students))
    if ((teachers < 1 || students < 1)); then
        if ((teachers < 1 && students < 1)); then
            missing="no teacher and no student rank" fix="--teachers and --students"
        elif ((teachers < 1)); then
            missing="no teacher rank" fix="--teachers"
        else
            missing="no student rank" fix="--students"
        fi
        fail "need at least 1 teacher and 1 student rank; got --teachers $teachers --students $students ($missing): raise $fix to 1 or more"
    fi
    ranks=$((teachers + students))
else
    ranks=0
fi

# ---------------------------------------------------------------- the command on this machine
abs_command=""
if [[ -n $command_path ]]; then
    if [[ $command_path == */* ]]; then
        abs_command="$command_path"
        [[ $abs_command == /* ]] || abs_command="$PWD/$command_path"
        if [[ ! -x $abs_command || -d $abs_command ]]; then
            fail "command $command_path is not an executable file here: build it first (swift build -c release) or fix the path"
        fi
    elif ! command -v "$command_path" >/dev/null 2>&1; then
        fail "command $command_path is not on PATH here: give its path (e.g. .build/release/rqat)"
    fi
fi
if [[ -n $iface && $iface != */* && ! -e /sys/class/net/$iface ]]; then
    have=""
    for dev in /sys/class/net/*; do [[ -e $dev ]] && have+="${dev##*/} "; done
    fail "no network interface '$iface' on this machine (have: ${have% }): pass one of those, or a subnet like 192.168.1.0/24, to --iface"
fi

if [[ -z $hostfile ]]; then
    if [[ -n ${SLURM_NTASKS:-} && $SLURM_NTASKS =~ ^[0-9]+$ ]] && ((ranks > SLURM_NTASKS)) && [[ $oversubscribe != yes ]]; then
        fail "the SLURM allocation has $SLURM_NTASKS tasks (SLURM_NTASKS) for $ranks ranks (--teachers $teachers --students $students): raise #SBATCH --ntasks to $ranks or start fewer ranks"
    fi
    finish_if_failed
    echo "$prog: ok: no hostfile (the SLURM allocation or mpirun's default places the ranks), $ranks ranks ($teachers teacher(s) + $students student(s)); oversubscribe=no"
    exit 0
fi

if [[ ! -f $hostfile ]]; then
    fail "hostfile $hostfile not found: give an existing file to --hostfile (see hostfiles/localhost, hostfiles/lab.example)"
    finish_if_failed
fi

# ---------------------------------------------------------------- what counts as this machine
local_names=" localhost localhost.localdomain ip6-localhost ip6-loopback "
for n in "$(hostname 2>/dev/null || true)" "$(hostname -s 2>/dev/null || true)" "$(hostname -f 2>/dev/null || true)"; do
    [[ -n $n ]] && local_names+="${n,,} "
done
local_ips=" ::1 "
if command -v ip >/dev/null 2>&1; then
    while read -r addr; do local_ips+="${addr%/*} "; done < <(ip -o addr show 2>/dev/null | awk '{print $4}')
fi
for a in $(hostname -I 2>/dev/null || true); do local_ips+="$a "; done

# is_local NAME: this machine by name or address (resolving the name when needed).
is_local() {
    local h="${1,,}" addr
    [[ $local_names == *" $h "* || $local_ips == *" $h "* || $h =~ ^127\. ]] && return 0
    addr=$(getent hosts "$h" 2>/dev/null | awk 'NR==1{print $1}') || true
    [[ -n $addr && ( $addr =~ ^127\. || $local_ips == *" $addr "* ) ]]
}

# ---------------------------------------------------------------- parse the hostfile
# Per node (this machine counts as one node, however it is named), in order of appearance.
node_keys=()                 # "local" or the lower-cased host name
declare -A node_host=()      # as written (user@ stripped)
declare -A node_login=()     # what ssh is given (user@host)
declare -A node_user=()      # from username=
declare -A node_line=()      # first line
declare -A node_lines=()     # number of lines naming it
declare -A node_slots=()     # slots= value, empty when not given

lineno=0
while IFS= read -r raw || [[ -n $raw ]]; do
    lineno=$((lineno + 1))
    where="$hostfile:$lineno"
    line="${raw%%#*}"
    line="${line//$'\r'/}"
    read -r -a tokens <<<"$line" || true
    ((${#tokens[@]} > 0)) || continue
    host="${tokens[0]}"
    if [[ $host == *=* ]]; then
        fail "$where: malformed line '$line': a line starts with a host name (host [slots=N] [max_slots=N])"
        continue
    fi
    name="${host##*@}"
    if ! [[ $name =~ ^[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?$ ]]; then
        fail "$where: malformed host name '$host': use a host name or address (host [slots=N] [max_slots=N])"
        continue
    fi
    slots="" max_slots="" user="" bad=0
    for tok in "${tokens[@]:1}"; do
        key="${tok%%=*}" value="${tok#*=}"
        [[ $tok == *=* ]] || { key="$tok" value=""; }
        case "${key,,}" in
            slots|slot|count|cpu|cpus)
                if ! [[ $value =~ ^[0-9]+$ ]] || ((10#$value < 1)); then
                    fail "$where: bad slots value '$tok' for host $name: slots must be a whole number >= 1 (ranks to start there; usually its core count)"
                    bad=1
                else
                    slots=$((10#$value))
                fi ;;
            max_slots|max-slots|max_slot|max-slot)
                if ! [[ $value =~ ^[0-9]+$ ]] || ((10#$value < 1)); then
                    fail "$where: bad max_slots value '$tok' for host $name: must be a whole number >= 1"
                    bad=1
                else
                    max_slots=$((10#$value))
                fi ;;
            user|username)
                if [[ -z $value || $tok != *=* ]]; then
                    fail "$where: malformed '$tok' for host $name: write username=NAME"; bad=1
                else
                    user="$value"
                fi ;;
            *)
                fail "$where: malformed line '$line': cannot read '$tok' (expected: host [slots=N] [max_slots=N])"
                bad=1 ;;
        esac
    done
    ((bad)) && continue
    if [[ -n $slots && -n $max_slots ]] && ((max_slots < slots)); then
        fail "$where: bad slots value: max_slots=$max_slots is below slots=$slots for host $name: raise max_slots or drop it"
        continue
    fi
    if is_local "$name"; then key="local"; else key="${name,,}"; fi
    if [[ -z ${node_line[$key]+x} ]]; then
        node_keys+=("$key")
        node_host[$key]="$name"
        node_login[$key]="$host"
        node_user[$key]="$user"
        node_line[$key]="$lineno"
        node_lines[$key]=1
        node_slots[$key]="$slots"
    else
        node_lines[$key]=$((${node_lines[$key]} + 1))
        if [[ -n $slots || -n ${node_slots[$key]} ]]; then
            what="host $name"; [[ $key == local ]] && what="host $name (this machine)"
            fail "$where: $what is already listed on line ${node_line[$key]} and one of the lines gives slots=: Open MPI rejects that; keep one line with slots=N"
        fi
    fi
done <"$hostfile"

if ((${#node_keys[@]} == 0)) && ((${#failures[@]} == 0)); then
    fail "$hostfile: no hosts in the hostfile: add lines like 'localhost slots=2' (host [slots=N] [max_slots=N])"
fi
# A malformed file is reported before any network check is tried.
finish_if_failed

# ---------------------------------------------------------------- remote hosts
# ompi_info, not mpirun: nothing of mpirun runs before the checks pass.
local_mpi_version=$(ompi_info --version 2>/dev/null | head -n 1 || true)
warnings=()
declare -A node_cores=()
for key in "${node_keys[@]}"; do
    [[ $key == local ]] && continue
    name="${node_host[$key]}" login="${node_login[$key]}" where="$hostfile:${node_line[$key]}"
    is_address=0
    [[ $name =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ || $name == *:* ]] && is_address=1
    if ((!is_address)) && ! getent hosts "$name" >/dev/null 2>&1; then
        fail "$where: host $name does not resolve (getent hosts $name found nothing): fix the name, or add it to /etc/hosts or DNS"
        continue
    fi
    ssh_opts=(-n -o BatchMode=yes -o ConnectTimeout="$ssh_timeout" -o ServerAliveInterval="$ssh_timeout" -o ServerAliveCountMax=2)
    [[ -n ${node_user[$key]} ]] && ssh_opts+=(-l "${node_user[$key]}")
    if ! ssh_err=$(ssh "${ssh_opts[@]}" "$login" true 2>&1 >/dev/null); then
        ssh_err=$(printf '%s' "$ssh_err" | tr -s '\r\n' '  ' | sed 's/ *$//')
        case "$ssh_err" in
            *"timed out"*|*"No route"*|*"refused"*|*"unreachable"*|*"Could not resolve"*)
                fix="check that $name is up, runs sshd and is reachable from here (firewall, --iface network)" ;;
            *"Host key verification failed"*)
                fix="accept its host key once (ssh $login true), then retry" ;;
            *)
                fix="set up a key (ssh-keygen; ssh-copy-id $login) and accept its host key once (ssh $login true)" ;;
        esac
        fail "$where: cannot ssh to $login without a password (ssh -o BatchMode=yes -o ConnectTimeout=$ssh_timeout $login true: ${ssh_err:-failed}): $fix"
        continue
    fi
    # One more connection for the rest: cores, orted, the command, the interface, the MPI version.
    probe='nproc 2>/dev/null || echo 0; if command -v orted >/dev/null 2>&1; then echo orted=yes; else echo orted=no; fi'
    if [[ -n $abs_command ]]; then
        probe+="; if [ -x $(printf '%q' "$abs_command") ]; then echo command=yes; else echo command=no; fi"
    elif [[ -n $command_path ]]; then
        probe+="; if command -v $(printf '%q' "$command_path") >/dev/null 2>&1; then echo command=yes; else echo command=no; fi"
    fi
    if [[ -n $iface && $iface != */* ]]; then
        probe+="; if [ -e /sys/class/net/$(printf '%q' "$iface") ]; then echo iface=yes; else echo iface=no; fi"
    fi
    # shellcheck disable=SC2016 # expands on the remote host
    probe+='; echo "version=$(ompi_info --version 2>/dev/null | head -n 1)"'
    # shellcheck disable=SC2029 # the probe is built here on purpose, its paths quoted with %q
    answer=$(ssh "${ssh_opts[@]}" "$login" "$probe" 2>/dev/null) || true
    node_cores[$key]=$(printf '%s\n' "$answer" | head -n 1 | tr -cd '0-9')
    if [[ $answer == *orted=no* ]]; then
        fail "$where: Open MPI is not installed on $name (no orted on its non-interactive PATH): install it there (apt-get install openmpi-bin; here: ${local_mpi_version:-Open MPI, version unknown})"
    fi
    if [[ $answer == *command=no* ]]; then
        fail "$where: ${abs_command:-$command_path} is not on $name at the same path: copy the build and assets there (rsync -a $PWD/ $login:$PWD/) or use a shared home"
    fi
    if [[ $answer == *iface=no* ]]; then
        fail "$where: $name has no network interface '$iface': give --iface a subnet (e.g. 192.168.1.0/24) when the machines name their interfaces differently"
    fi
    remote_version=$(printf '%s\n' "$answer" | sed -n 's/^version=//p')
    if [[ -n $local_mpi_version && -n $remote_version && $remote_version != "$local_mpi_version" ]]; then
        warnings+=("$prog: warning: $where: $name has '$remote_version', this machine '$local_mpi_version': use the same Open MPI everywhere if the launch fails")
    fi
done

# ---------------------------------------------------------------- slots
total=0
unknown=""
all_local=1
summary=()
for key in "${node_keys[@]}"; do
    name="${node_host[$key]}"
    [[ $key == local ]] || all_local=0
    if [[ -n ${node_slots[$key]} ]]; then
        n="${node_slots[$key]}" how="slots=$n"
    elif ((${node_lines[$key]} > 1)); then
        n="${node_lines[$key]}" how="listed $n times"          # once per slot
    elif [[ $key == local ]]; then
        n=$(nproc 2>/dev/null || echo 1) how="no slots=, $n cores"   # Open MPI: the host's cores
    else
        n="${node_cores[$key]:-}" how="no slots=, $n cores"
        [[ -n $n && $n != 0 ]] || { n="" how="no slots=, cores unknown"; unknown+=" $name"; }
    fi
    [[ -n $n ]] && total=$((total + n))
    summary+=("$name ($how, line ${node_line[$key]})")
done

needs_oversubscribe="no"
if [[ -z $unknown ]] && ((total < ranks)); then
    if [[ $oversubscribe == yes || ( $oversubscribe == local && $all_local == 1 ) ]]; then
        needs_oversubscribe="yes"
    else
        joined=""
        for part in "${summary[@]}"; do joined+="${joined:+; }$part"; done
        hint="raise slots= on its line or pass --oversubscribe (ranks then share cores)"
        ((all_local)) || hint="raise slots= on a host line, add a host, or pass --oversubscribe (ranks then share cores)"
        fail "$hostfile: $total slot(s) for $ranks ranks (--teachers $teachers --students $students) on $joined: $hint"
    fi
fi

if ((${#warnings[@]} > 0)); then printf '%s\n' "${warnings[@]}" >&2; fi
finish_if_failed

where_hosts="${#node_keys[@]} host(s)"
((all_local)) && where_hosts="this machine only"
echo "$prog: ok: $hostfile: $where_hosts, ${total} slot(s)${unknown:+ (+ unknown on$unknown)} for $ranks ranks ($teachers teacher(s) + $students student(s)); oversubscribe=$needs_oversubscribe"
