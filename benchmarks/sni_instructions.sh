#!/bin/sh
# Instructions per TLS 1.3 handshake of the sslsock-sni server (benchmarks/servers/
# sslsock_sni.py) under callgrind: a count that does not move with the other loads of a
# shared machine, unlike CPU time.  Every client asks for host57.example.test; with
# NAMES=0 the server holds one certificate, with NAMES=100 a hundred (the lookup and the
# switch to the chosen certificate are then in every handshake).
#
#   make -C benchmarks/c && benchmarks/sni_instructions.sh 0 && benchmarks/sni_instructions.sh 100
#
# Prints "names=N handshakes=H instructions/handshake=I" (the whole server process: accept
# engine, OpenSSL and the Python accept loop).  Takes about a minute per run.
names=${1:-100}
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-python3}
out=$(mktemp -d)
cd "$here/servers" || exit 2
$py -c 'import sslsock' || exit 2
PYTHONPATH=. valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$out/cg.%p" "$py" sslsock_sni.py --names "$names" \
    --pem "${PEM:?set PEM to a PEM file with a certificate and its key}" \
    >"$out/server.log" 2>"$out/server.err" &
vpid=$!
i=0
while ! grep -q READY "$out/server.log" 2>/dev/null; do
    i=$((i + 1)); [ $i -gt 1200 ] && { echo "server did not start" >&2; kill $vpid; exit 1; }
    sleep 0.5
done
port=$(awk '/READY/{print $2}' "$out/server.log")
lg="$here/bin/loadgen --port $port --scenario handshake --tls13 --servername host57.example.test"
$lg --conns 1 --duration 5 >/dev/null           # warm-up, not counted
callgrind_control -i on $vpid >/dev/null
$lg --conns 8 --duration 20 >"$out/loadgen.json"
callgrind_control -i off $vpid >/dev/null
callgrind_control -d $vpid >/dev/null
sleep 1
kill $vpid
wait $vpid 2>/dev/null
ops=$($py -c "import json,sys; print(json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])['ops'])" "$out/loadgen.json")
ir=$(cat "$out"/cg.*.* 2>/dev/null | awk '/^totals:/ {s += $2} END {print s}')
echo "names=$names handshakes=$ops instructions/handshake=$((ir / ops))"
rm -rf "$out"
