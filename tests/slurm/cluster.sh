#!/usr/bin/env bash
# A throwaway single-node SLURM cluster on this machine, for `make test-slurm`. Run as root.
#
#   tests/slurm/cluster.sh install   apt-get install what it needs (Debian: slurm-wlm slurmdbd munge mariadb-server)
#   tests/slurm/cluster.sh start     start munged, mariadbd, slurmdbd, slurmctld and slurmd; one partition, one account
#   tests/slurm/cluster.sh stop      cancel the cluster's jobs, stop exactly the daemons `start` started, remove its files
#   tests/slurm/cluster.sh status    sinfo, and the daemons' pids
#
# Accounting (slurmdbd on a private MariaDB) is part of it because the SLURM executor plugin checks the
# account with sacctmgr and most sites have it; AccountingStorageEnforce makes a wrong account fail
# at submission as it does on a real cluster. Everything lives under $KDGRID_SLURM_DIR (default
# /tmp/kdgrid-slurm) except the two files SLURM reads from fixed places, /etc/slurm/slurm.conf and
# /etc/slurm/slurmdbd.conf (a job's nested `srun` does not see SLURM_CONF): `start` refuses to run where
# they exist already or where SLURM or munge daemons are running, so a real installation is never touched.
set -euo pipefail

DIR=${KDGRID_SLURM_DIR:-/tmp/kdgrid-slurm}
PARTITION=${KDGRID_SLURM_PARTITION:-kdgrid-ci}
ACCOUNT=${KDGRID_SLURM_ACCOUNT:-kdgrid-ci}
CLUSTER=kdgrid-ci
DB_PORT=${KDGRID_SLURM_DB_PORT:-3307}
MARKER="# kdgrid throwaway test cluster (tests/slurm/cluster.sh)"
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
PACKAGES="slurm-wlm slurmdbd munge mariadb-server"
NODE=$(hostname -s)

say() { echo "cluster.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
    local seconds=$1 what=$2; shift 2
    for _ in $(seq $((seconds * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "$what did not come up within ${seconds}s; see the logs in $DIR"
}

install() {
    [ "$(id -u)" = 0 ] || die "run as root (apt-get install $PACKAGES)"
    local missing=""
    for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
    if [ -n "$missing" ]; then
        say "installing$missing"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
}

write_configs() {
    local cpus mem
    # twice the cores: the CI grid's jobs spend most of their time starting Python and Snakemake, so four
    # at a time on two cores finish sooner than two (SlurmdParameters=config_overrides accepts the count)
    cpus=$(( $(nproc) * 2 ))
    mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) * 3 / 4 ))
    cat > "$CONF" <<EOF
$MARKER
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=${KDGRID_SLURMCTLD_PORT:-6817}
SlurmdPort=${KDGRID_SLURMD_PORT:-6818}
# cgroups are not writable in a container; linuxproc tracks (and signals) every descendant of a job step
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=300
KillWait=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$NODE
AccountingStorageEnforce=associations,limits
NodeName=$NODE CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=120 State=UP
EOF
    cat > "$DBD_CONF" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=$NODE
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=kdgrid-test
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DBD_CONF"
}

start() {
    [ "$(id -u)" = 0 ] || die "run as root"
    for p in $PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || die "package $p is missing: run '$0 install' first"; done
    for f in "$CONF" "$DBD_CONF"; do
        [ -e "$f" ] && die "$f exists: this machine has a SLURM configuration; the test cluster will not replace it"
    done
    for d in munged slurmctld slurmd slurmdbd; do
        pgrep -x "$d" >/dev/null && die "a $d is running already; the test cluster needs a machine without one"
    done
    rm -rf "$DIR"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/munge" "$DIR/mysql" /run/munge
    chown munge:munge "$DIR/munge" /run/munge
    chmod 755 "$DIR"

    say "munged"
    [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key is missing (reinstall munge)"
    runuser -u munge -- /usr/sbin/munged --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    wait_for 20 munged munge -n

    say "mariadbd (port $DB_PORT)"
    chown mysql:mysql "$DIR/mysql"
    mariadb-install-db --user=mysql --datadir="$DIR/mysql/data" --auth-root-authentication-method=socket \
        > "$DIR/mariadb-install.log" 2>&1
    runuser -u mysql -- /usr/sbin/mariadbd --datadir="$DIR/mysql/data" --socket="$DIR/mysql/mysqld.sock" \
        --pid-file="$DIR/mysql/mariadbd.pid" --port="$DB_PORT" --bind-address=127.0.0.1 \
        --log-error="$DIR/mysql/mariadbd.log" --innodb-buffer-pool-size=64M > /dev/null 2>&1 &
    wait_for 60 mariadbd mariadb --socket="$DIR/mysql/mysqld.sock" -uroot -e "select 1"
    mariadb --socket="$DIR/mysql/mysqld.sock" -uroot -e "
        CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'kdgrid-test';
        CREATE USER 'slurm'@'localhost' IDENTIFIED BY 'kdgrid-test';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"

    write_configs
    say "slurmdbd"
    /usr/sbin/slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
    sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description="kdgrid test" >/dev/null
    sacctmgr -i add user root Account="$ACCOUNT" DefaultAccount="$ACCOUNT" Cluster="$CLUSTER" >/dev/null

    say "slurmctld, slurmd"
    /usr/sbin/slurmctld
    wait_for 30 slurmctld scontrol ping
    /usr/sbin/slurmd
    wait_for 60 "the node $NODE" bash -c "sinfo -h -n '$NODE' -o %T | grep -qE '^(idle|mixed|allocated)'"
    say "up: partition $PARTITION, account $ACCOUNT, node $NODE ($(( $(nproc) * 2 )) CPUs on $(nproc) cores); logs in $DIR"
}

stop_daemon() {  # stop_daemon NAME PIDFILE
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 80); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        if kill -0 "$pid" 2>/dev/null; then say "$name ($pid) ignored SIGTERM; SIGKILL"; kill -9 "$pid"; fi
    fi
    rm -f "$pidfile"
}

stop() {
    if [ -s "$DIR/slurmctld.pid" ] && grep -qF "$MARKER" "$CONF" 2>/dev/null; then
        scancel --full --quiet --user root 2>/dev/null || true
        for _ in $(seq 120); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.5; done
    fi
    stop_daemon slurmd "$DIR/slurmd.pid"
    stop_daemon slurmctld "$DIR/slurmctld.pid"
    stop_daemon slurmdbd "$DIR/slurmdbd.pid"
    stop_daemon mariadbd "$DIR/mysql/mariadbd.pid"
    stop_daemon munged "$DIR/munge/munged.pid"
    for f in "$CONF" "$DBD_CONF"; do
        if [ -e "$f" ] && grep -qF "$MARKER" "$f"; then rm -f "$f"; fi
    done
    rm -rf "$DIR"
    say "stopped"
}

status() {
    sinfo || true
    for f in "$DIR/munge/munged.pid" "$DIR/mysql/mariadbd.pid" "$DIR/slurmdbd.pid" "$DIR/slurmctld.pid" "$DIR/slurmd.pid"; do
        [ -s "$f" ] && echo "$(basename "$f" .pid): $(cat "$f")"
    done
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
