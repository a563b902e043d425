#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for CI's sweep check and for trying `xbench sweep
# --executor slurm` without a cluster (docs/sweeps.md, "Trying Slurm on one machine").
#
#   sudo bash tools/slurm_single_node.sh install   # Debian packages (once)
#   sudo bash tools/slurm_single_node.sh start     # munge, MariaDB, slurmdbd, slurmctld, slurmd; waits for an idle node
#   sudo bash tools/slurm_single_node.sh stop      # stops exactly the daemons started here (pid files)
#
# Accounting is required: submitit reads job states from sacct, and without slurmdbd every state stays
# UNKNOWN. The settings below are those measured to work on Debian 12 without systemd or cgroups.
set -euo pipefail
STATE=/tmp/xbench-slurm
mkdir -p "$STATE"

install() {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    munge slurmctld slurmd slurm-client slurmdbd mariadb-server >/dev/null
}

start() {
  local host cpus mem
  if [ "$(sinfo -h -o %t 2>/dev/null | head -1)" = "idle" ]; then
    echo "slurm: a cluster is already up here; using it (stop leaves it running)"; return 0
  fi
  host=$(hostname -s)
  cpus=$(nproc)
  mem=$(( $(free -m | awk '/^Mem:/ {print $2}') * 8 / 10 ))   # above what slurmd detects, the node is drained
  # munge: the key, its run folder owned by munge, the daemon as munge
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
  echo /run/munge/munged.pid >> "$STATE/pids"
  # MariaDB on 127.0.0.1 only, with the accounting user
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
    --socket=/run/mysqld/mysqld.sock >"$STATE/mariadb.log" 2>&1 &
  echo /run/mysqld/mysqld.pid >> "$STATE/pids"
  for _ in $(seq 60); do mariadb -e "select 1" >/dev/null 2>&1 && break; sleep 0.5; done
  mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  mkdir -p /etc/slurm /var/log/slurm /var/spool/slurmctld /var/spool/slurmd /run/slurm
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
EOF
  chmod 600 /etc/slurm/slurmdbd.conf   # slurmdbd exits on a readable one
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=xbench
SlurmctldHost=${host}(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  /usr/sbin/slurmdbd
  echo /run/slurm/slurmdbd.pid >> "$STATE/pids"
  for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
  sacctmgr -i add cluster xbench >/dev/null 2>&1 || true
  /usr/sbin/slurmctld
  echo /run/slurm/slurmctld.pid >> "$STATE/pids"
  /usr/sbin/slurmd
  echo /run/slurm/slurmd.pid >> "$STATE/pids"
  for _ in $(seq 120); do
    [ "$(sinfo -h -o %t 2>/dev/null | head -1)" = "idle" ] && { echo "slurm: node ${host} idle"; return 0; }
    sleep 0.5
  done
  echo "slurm: the node did not become idle; sinfo says: $(sinfo -h 2>&1)"; tail -5 /var/log/slurm/*.log; return 1
}

stop() {
  [ -f "$STATE/pids" ] || return 0
  tac "$STATE/pids" | while read -r pidfile; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  rm -f "$STATE/pids"
}

"${1:?usage: slurm_single_node.sh install|start|stop}"
