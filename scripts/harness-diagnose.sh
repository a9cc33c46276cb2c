#!/usr/bin/env bash
# Prints what the test harness's daemons are doing, for a failed or hung
# test run: each zfs-fuse, dockerd and containerd process with its state and
# where its threads wait in the kernel, the zfs/zpool commands still running
# (a client of a hung daemon waits here), the harness's status, and the tail
# of its logs. Reads only; changes nothing. Every command is bounded.
set -uo pipefail
cd "$(dirname "$0")/.."
state=${MEDFORGE_HARNESS_DIR:-target/harness}

echo "== harness diagnostics ($(date -u +%FT%TZ))"
echo "-- daemons and ZFS clients (pid, age in s, state, kernel wait, command)"
ps -eo pid,etimes,stat,wchan:28,args --sort=etimes \
  | awk 'NR == 1 || $5 ~ /(zfs-fuse|dockerd|containerd|zpool|zfs)$/ || $5 ~ /\/(zfs|zpool)$/'
for pid in $(ps -C zfs-fuse -o pid=); do
  echo "-- zfs-fuse $pid: threads by kernel wait channel"
  for t in /proc/"$pid"/task/*; do cat "$t/wchan" 2>/dev/null; echo; done | sort | uniq -c | sort -rn
done
echo "-- mf-harness status"
timeout 60 target/debug/mf-harness status || echo "(status failed or took over 60 s: $?)"
for log in "$state/zfs-fuse.log" "$state/dockerd.log"; do
  echo "-- last lines of $log"
  tail -n 40 "$log" 2>/dev/null || echo "(none)"
done
