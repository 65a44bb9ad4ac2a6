#!/bin/sh
# Mosquitto with persistence on, for tinymq-bench compare --broker:
#   mosquitto-persist=bench/mosquitto-persist.sh {port} {dir}
# (the data directory is opened to the mosquitto user, which Mosquitto drops
# root privileges to)
port=$1; dir=$2
chmod 777 "$dir"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_connections -1\nmax_queued_messages 1000\nlog_type error\n' "$port" "$dir" > "$dir/m.conf"
exec /usr/sbin/mosquitto -c "$dir/m.conf"
