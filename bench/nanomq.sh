#!/bin/sh
# NanoMQ as a tinymq-bench compare peer, on 127.0.0.1:PORT with the
# minimal configuration of ../shared/peers/README.md (anonymous, no
# persistence, errors only), written into DIR (default: a new temporary
# directory). It execs the broker, so that the PID the comparison samples
# (/proc/PID/stat, io, comm) is NanoMQ's own:
#
#   tinymq-bench compare --broker 'nanomq=bench/nanomq.sh {port} {dir}'
#
# NANOMQ is the binary (default: ../shared/peers/nanomq beside the repo).
set -eu
port=${1:?usage: nanomq.sh PORT [DIR]}
here=$(cd "$(dirname "$0")" && pwd)
bin=${NANOMQ:-$here/../../shared/peers/nanomq}
[ -x "$bin" ] || { echo "nanomq.sh: no NanoMQ binary at $bin (set NANOMQ)" >&2; exit 1; }
if [ $# -ge 2 ]; then dir=$2/nanomq-$port; mkdir -p "$dir"; else dir=$(mktemp -d); fi
cat >"$dir/nanomq.conf" <<CONF
mqtt { max_packet_size = 2MB, max_mqueue_len = 2048 }
listeners.tcp { bind = "127.0.0.1:$port" }
log { to = [console], level = error }
auth { allow_anonymous = true, no_match = allow, deny_action = ignore }
CONF
cd "$dir" # anything NanoMQ writes beside itself stays here
exec "$bin" start --conf "$dir/nanomq.conf"
