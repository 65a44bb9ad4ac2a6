#!/bin/sh
# FlashMQ as a tinymq-bench compare peer, on 127.0.0.1:PORT with the
# minimal configuration of ../shared/peers/README.md (anonymous, no
# persistence, errors only), written into DIR (default: a new temporary
# directory). It execs the broker, so that the PID the comparison samples
# (/proc/PID/stat, io, comm) is FlashMQ's own:
#
#   tinymq-bench compare --broker 'flashmq=bench/flashmq.sh {port} {dir}'
#
# FLASHMQ is the binary (default: ../shared/peers/flashmq beside the repo).
set -eu
port=${1:?usage: flashmq.sh PORT [DIR]}
here=$(cd "$(dirname "$0")" && pwd)
bin=${FLASHMQ:-$here/../../shared/peers/flashmq}
[ -x "$bin" ] || { echo "flashmq.sh: no FlashMQ binary at $bin (set FLASHMQ)" >&2; exit 1; }
if [ $# -ge 2 ]; then dir=$2/flashmq-$port; mkdir -p "$dir"; else dir=$(mktemp -d); fi
cat >"$dir/flashmq.conf" <<CONF
allow_anonymous true
log_level error
log_file $dir/flashmq.log
rlimit_nofile 20000
listen {
  protocol mqtt
  inet_protocol ip4
  inet4_bind_address 127.0.0.1
  port $port
}
CONF
exec "$bin" --config-file "$dir/flashmq.conf"
