#!/usr/bin/env bash
# A one-node SLURM on this machine for the `slurm` tests (tests/test_slurm*.py): Debian's slurmctld,
# slurmd, slurm-client and munge, installed when missing; munged runs as the munge user with a generated
# key, slurmctld and slurmd as root. Idempotent: run again, it only starts what is not running, and returns
# once `sinfo` shows the node idle. Needs root (or sudo) and Debian's package registry.
#
#   sudo ci/slurm_up.sh            # then: sinfo; sbatch; squeue; scontrol
#
# The node is this machine with its real CPUs and memory, without GPUs; processes are tracked without
# cgroups (ProctrackType=proctrack/linuxproc, TaskPlugin=task/none), so it runs in a container without
# systemd too. No accounting storage (sacct answers nothing), as on many small clusters.
set -euo pipefail

die() { echo "ci/slurm_up.sh: $*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && exec sudo -n "$0" "$@" \
        || die "starting SLURM needs root (slurmctld and slurmd run as root): run it as root or with sudo"
fi

packages=(slurmctld slurmd slurm-client munge)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install ${missing[*]} with this system's package manager"
    echo "ci/slurm_up.sh: installing ${missing[*]}"
    apt-get update -qq || die "apt-get update failed: is Debian's package registry reachable?"
    # No init system starts services here: the daemons are started below, so keep the packages' scripts off them.
    RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
        || die "apt-get install ${missing[*]} failed (Debian bookworm and later package them)"
fi

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)

# munge: the key every daemon and client signs with
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
    munge -n | unmunge >/dev/null || die "munged did not start (see /var/log/munge/munged.log)"
fi

install -d -m 0755 /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
conf=$(cat <<EOF
# Written by ci/slurm_up.sh: one node, this machine.
ClusterName=hexa
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it starts again (default 120): preemption tests need less.
AuthInfo=cred_expire=10
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
JobRequeue=1
SchedulerParameters=sched_interval=2
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)
cgroup="CgroupPlugin=autodetect
IgnoreSystemd=yes"
changed=0
[ "$(cat /etc/slurm/slurm.conf 2>/dev/null)" = "$conf" ] || { printf '%s\n' "$conf" > /etc/slurm/slurm.conf; changed=1; }
[ "$(cat /etc/slurm/cgroup.conf 2>/dev/null)" = "$cgroup" ] || printf '%s\n' "$cgroup" > /etc/slurm/cgroup.conf

# A daemon this script started earlier, by the pid it wrote (a changed config needs a restart).
running() { [ -s "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null; }
for daemon in slurmctld slurmd; do
    if running "$daemon" && [ "$changed" -eq 1 ]; then
        kill "$(cat "/run/$daemon.pid")"
        for _ in $(seq 50); do running "$daemon" || break; sleep 0.2; done
    fi
done
running slurmctld || /usr/sbin/slurmctld || die "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
running slurmd || /usr/sbin/slurmd || die "slurmd did not start (see /var/log/slurm/slurmd.log)"

state=""
for i in $(seq 120); do
    state=$(sinfo -h -n "$host" -o %T 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mixed|allocated) echo "ci/slurm_up.sh: node $host is $state ($cpus CPUs, $mem_mb MB)"; exit 0 ;;
        down*|drain*|drained*|fail*)
            [ "$i" -gt 5 ] && scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
die "the node did not come up (sinfo says: ${state:-nothing}); see /var/log/slurm/slurmctld.log and slurmd.log"
