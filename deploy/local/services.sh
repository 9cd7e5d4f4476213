#!/usr/bin/env bash
# Makes sure Redis (127.0.0.1:6379) and MariaDB/MySQL (127.0.0.1:3306, root
# without password) answer: installs them with apt-get if missing and starts
# what is not running. A server that already runs is used as it is. Also
# installs promtool (Debian package prometheus), which the tests run on the
# alert rules, without leaving a Prometheus server running.
set -euo pipefail

log() { printf '\033[1m[services]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_missing() {
  local pkgs=()
  command -v redis-server >/dev/null || pkgs+=(redis-server)
  command -v redis-cli >/dev/null || pkgs+=(redis-tools)
  { command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ]; } || pkgs+=(mariadb-server)
  command -v mariadb >/dev/null || command -v mysql >/dev/null || pkgs+=(mariadb-client)
  if [ ${#pkgs[@]} -gt 0 ]; then
    log "installing ${pkgs[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
  fi
}

# The package's Prometheus server is not wanted, only its promtool: service
# starts are refused while it installs (policy-rc.d, unless the machine has
# one already), and one started all the same is stopped and disabled.
install_promtool() {
  command -v promtool >/dev/null && return
  log "installing prometheus (for promtool; its server is not started)"
  local policy=/usr/sbin/policy-rc.d placed=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    placed=1
  fi
  local status=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || status=$?
  [ "$status" = 0 ] && { as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null || status=$?; }
  [ -n "$placed" ] && as_root rm -f "$policy"
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  fi
  if [ "$status" != 0 ] || ! command -v promtool >/dev/null; then
    log "promtool is missing and installing prometheus failed"; exit 1
  fi
}

mysql_cli() { if command -v mariadb >/dev/null; then mariadb "$@"; else mysql "$@"; fi; }

start_redis() {
  if redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then return; fi
  log "starting redis-server on 127.0.0.1:6379 (AOF everysec, noeviction)"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --dir /var/lib/redis \
    --appendonly yes --appendfsync everysec --maxmemory-policy noeviction \
    --logfile /var/log/redis/coupon-rush.log
  for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && return; sleep 0.1; done
  log "redis did not start"; exit 1
}

start_mariadb() {
  if mysql_cli -h 127.0.0.1 -P 3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; then return; fi
  if ! mysql_cli -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    log "starting mariadbd"
    mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
    for _ in $(seq 100); do mysql_cli -uroot -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.2; done
  fi
  if ! mysql_cli -h 127.0.0.1 -P 3306 -uroot -e 'SELECT 1' >/dev/null 2>&1; then
    # A fresh Debian install lets root in over the socket only.
    log "allowing root without password over TCP on 127.0.0.1"
    mysql_cli -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('')" \
      || mysql_cli -uroot -e "ALTER USER 'root'@'localhost' IDENTIFIED WITH mysql_native_password BY ''"
  fi
  mysql_cli -h 127.0.0.1 -P 3306 -uroot -e 'SELECT 1' >/dev/null || { log "MariaDB does not answer on 127.0.0.1:3306"; exit 1; }
}

install_missing
install_promtool
start_redis
start_mariadb
log "Redis and MariaDB are up, promtool installed"
