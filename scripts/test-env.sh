#!/usr/bin/env bash
# Test environment for cairn: installs the database servers when they are missing, then starts
# a private PostgreSQL (wal_level=logical) and a private MariaDB (ROW binlog, server id 1) in a
# temporary folder on free ports. Meant to be sourced:
#
#   source scripts/test-env.sh   # exports CAIRN_TEST_PG_URL, CAIRN_TEST_MYSQL_URL and the replica targets' URLs
#   cairn_test_env_stop          # stops both servers and removes their folder
#
# Servers given from outside (CAIRN_TEST_PG_URL / CAIRN_TEST_MYSQL_URL already set) are used
# as they are and nothing is started for them.

cairn_test_env_fail() {
  echo "test-env: $*" >&2
  return 1
}

cairn_test_env_install() {
  local missing=()
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    missing+=(postgresql postgresql-contrib)
  fi
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
  # mariadb-install-db looks the host name up with `hostname`, which slim images lack.
  command -v hostname >/dev/null 2>&1 || missing+=(hostname)
  # Certificates for the private PostgreSQL's TLS.
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    cairn_test_env_fail "missing ${missing[*]}: install them (apt-get install ${missing[*]}) or run as root"
    return 1
  fi
  echo "test-env: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
    || cairn_test_env_fail "apt-get install ${missing[*]} failed"
}

# Prints a TCP port on 127.0.0.1 that nothing listens on.
cairn_test_env_free_port() {
  local port
  for _ in $(seq 1 200); do
    port=$((20000 + RANDOM % 30000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  cairn_test_env_fail "no free port found"
}

# Starts a private PostgreSQL in folder NAME and exports its URL as VAR. The second one is the
# target replicas are seeded into.
cairn_test_env_start_postgres() {
  local name=$1 var=$2
  local bin dir port
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  dir="$CAIRN_TEST_ENV_DIR/$name"
  port=$(cairn_test_env_free_port) || return 1
  mkdir -p "$dir"
  echo "cairn-test-pw" >"$CAIRN_TEST_ENV_DIR/pg.pw"
  local as=()
  if [ "$(id -u)" = 0 ]; then
    # initdb and postgres refuse to run as root.
    chown -R postgres:postgres "$dir" "$CAIRN_TEST_ENV_DIR/pg.pw"
    chmod 755 "$CAIRN_TEST_ENV_DIR"
    as=(runuser -u postgres --)
  fi
  "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --pwfile="$CAIRN_TEST_ENV_DIR/pg.pw" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; cairn_test_env_fail "initdb failed"; return 1; }
  cp "$CAIRN_TEST_ENV_DIR/tls/server.pem" "$CAIRN_TEST_ENV_DIR/tls/server.key" "$dir/"
  chmod 600 "$dir/server.key"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir/server.key" "$dir/server.pem"
  # The role cairn_tls may only connect over TLS.
  sed -i '1i hostnossl all cairn_tls 127.0.0.1/32 reject' "$dir/data/pg_hba.conf"
  cat >>"$dir/data/postgresql.conf" <<CONF
ssl = on
ssl_cert_file = '$dir/server.pem'
ssl_key_file = '$dir/server.key'
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_connections = 200
# A test leaves a prepared transaction holding a lock, as a forgotten one does in production.
max_prepared_transactions = 10
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; cairn_test_env_fail "PostgreSQL did not start"; return 1; }
  CAIRN_TEST_ENV_PG_STOP="${CAIRN_TEST_ENV_PG_STOP:-}${as[*]} $bin/pg_ctl -D $dir/data -m immediate stop; "
  export "$var=postgres://postgres:cairn-test-pw@127.0.0.1:$port/postgres"
  export CAIRN_TEST_PG_BIN="$bin"
  echo "test-env: PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($var)" >&2
}

# A throwaway CA and a certificate for 127.0.0.1 that both servers use, so TLS and its
# verification are tested; exports CAIRN_TEST_CA.
cairn_test_env_certs() {
  local dir="$CAIRN_TEST_ENV_DIR/tls"
  mkdir -p "$dir"
  (
    cd "$dir" &&
      openssl req -x509 -newkey rsa:2048 -nodes -days 3 -subj "/CN=cairn test CA" -keyout ca.key -out ca.pem &&
      openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr &&
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext &&
      openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3 -extfile server.ext \
        -out server.pem
  ) >"$dir/certs.log" 2>&1 || { cat "$dir/certs.log" >&2; cairn_test_env_fail "making test certificates failed"; return 1; }
  chmod 755 "$dir"
  chmod 644 "$dir/ca.pem" "$dir/server.pem"
  export CAIRN_TEST_CA="$dir/ca.pem"
}

# Starts a private MariaDB in folder NAME with SERVER_ID; exports its URL as VAR (and, for the
# primary, its socket). The second one is the target replicas are seeded into.
cairn_test_env_start_mariadb() {
  local name=$1 server_id=$2 var=$3
  local dir port socket
  dir="$CAIRN_TEST_ENV_DIR/$name"
  port=$(cairn_test_env_free_port) || return 1
  socket="$dir/mysqld.sock"
  mkdir -p "$dir"
  local user=mysql
  [ "$(id -u)" = 0 ] || user=$(id -un)
  cp "$CAIRN_TEST_ENV_DIR/tls/server.pem" "$CAIRN_TEST_ENV_DIR/tls/server.key" "$CAIRN_TEST_ENV_DIR/tls/ca.pem" "$dir/"
  chmod 600 "$dir/server.key"
  [ "$(id -u)" = 0 ] && chown -R mysql:mysql "$dir"
  mariadb-install-db --no-defaults --user="$user" --datadir="$dir/data" --auth-root-authentication-method=socket \
    >"$dir/install.log" 2>&1 || { cat "$dir/install.log" >&2; cairn_test_env_fail "mariadb-install-db failed"; return 1; }
  local mariadbd
  mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  "$mariadbd" --no-defaults --user="$user" --datadir="$dir/data" --socket="$socket" --port="$port" \
    --bind-address=127.0.0.1 --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" \
    --log-bin="$dir/data/binlog" --binlog-format=ROW --binlog-row-image=FULL --server-id="$server_id" \
    --log-slave-updates --local-infile=1 --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 \
    --skip-name-resolve --max-connections=300 \
    --ssl-ca="$dir/ca.pem" --ssl-cert="$dir/server.pem" --ssl-key="$dir/server.key" >/dev/null 2>&1 &
  for _ in $(seq 1 120); do
    [ -S "$socket" ] && mariadb --no-defaults -S "$socket" -u root -e 'select 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb --no-defaults -S "$socket" -u root -e 'select 1' >/dev/null 2>&1 \
    || { cat "$dir/error.log" >&2; cairn_test_env_fail "MariaDB did not start"; return 1; }
  mariadb --no-defaults -S "$socket" -u root <<SQL || { cairn_test_env_fail "creating the MariaDB test user failed"; return 1; }
CREATE USER 'cairn'@'127.0.0.1' IDENTIFIED BY 'cairn-test-pw';
GRANT ALL PRIVILEGES ON *.* TO 'cairn'@'127.0.0.1' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
  CAIRN_TEST_ENV_MARIADB_STOP="${CAIRN_TEST_ENV_MARIADB_STOP:-}kill \$(cat $dir/mysqld.pid); "
  CAIRN_TEST_ENV_MARIADB_DIRS="${CAIRN_TEST_ENV_MARIADB_DIRS:-} $dir"
  export "$var=mysql://cairn:cairn-test-pw@127.0.0.1:$port/mysql"
  [ "$name" = mariadb ] && export CAIRN_TEST_MYSQL_SOCKET="$socket"
  echo "test-env: MariaDB $(mariadb --no-defaults -S "$socket" -u root -N -e 'select version()') on 127.0.0.1:$port ($var)" >&2
}

cairn_test_env_stop() {
  [ -n "${CAIRN_TEST_ENV_PG_STOP:-}" ] && eval "$CAIRN_TEST_ENV_PG_STOP" >/dev/null 2>&1
  if [ -n "${CAIRN_TEST_ENV_MARIADB_STOP:-}" ]; then
    eval "$CAIRN_TEST_ENV_MARIADB_STOP" >/dev/null 2>&1
    for dir in ${CAIRN_TEST_ENV_MARIADB_DIRS:-}; do
      for _ in $(seq 1 60); do [ -e "$dir/mysqld.pid" ] || break; sleep 0.5; done
    done
  fi
  [ -n "${CAIRN_TEST_ENV_DIR:-}" ] && rm -rf "$CAIRN_TEST_ENV_DIR"
  unset CAIRN_TEST_ENV_PG_STOP CAIRN_TEST_ENV_MARIADB_STOP CAIRN_TEST_ENV_MARIADB_DIRS CAIRN_TEST_ENV_DIR
}

cairn_test_env_start() {
  cairn_test_env_install || return 1
  CAIRN_TEST_ENV_DIR=$(mktemp -d /tmp/cairn-test-env.XXXXXX) || return 1
  cairn_test_env_certs || return 1
  if [ -z "${CAIRN_TEST_PG_URL:-}" ]; then cairn_test_env_start_postgres pg CAIRN_TEST_PG_URL || return 1; fi
  if [ -z "${CAIRN_TEST_PG_REPLICA_URL:-}" ]; then
    cairn_test_env_start_postgres pg-replica CAIRN_TEST_PG_REPLICA_URL || return 1
  fi
  if [ -z "${CAIRN_TEST_MYSQL_URL:-}" ]; then cairn_test_env_start_mariadb mariadb 1 CAIRN_TEST_MYSQL_URL || return 1; fi
  if [ -z "${CAIRN_TEST_MYSQL_REPLICA_URL:-}" ]; then
    cairn_test_env_start_mariadb mariadb-replica 2 CAIRN_TEST_MYSQL_REPLICA_URL || return 1
  fi
}

cairn_test_env_start
