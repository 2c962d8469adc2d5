#!/usr/bin/env bash
# LAN/WAN harness for private sampling: each of the three parties, the client and the model
# owner runs in its own network namespace; the namespaces hang off a bridge by veth pairs whose
# links are shaped to a network profile; one sample (or a benchmark) runs over TLS; everything
# created is removed on exit, also on failure or Ctrl-C.
#
#   sudo scripts/lan/run.sh [--profile lan|wan] [--bin target/release/secdiff] [--out DIR]
#                           [-- CLIENT ARGS...]
#
# CLIENT ARGS default to `generate --mode mpc --steps 50 --labels 0,1,1,0 --report DIR/report.json
# --raw-out DIR/x0.safetensors`; `--parties CONFIG --shutdown-parties` are appended. Example for
# CipherDM's Table 4 rows: `-- bench sample --batch 1 --network lan --json DIR/bench.json`.
#
# Profiles (CipherDM's LAN and a WAN): lan = 0.1 ms RTT, 1 Gbit/s; wan = 20 ms RTT, 100 Mbit/s.
# Shaping: with the `netem` qdisc (most kernels), each node's uplink gets `netem delay RTT/2 rate R`.
# Without it ("Specified qdisc kind is unknown", as on the dev machine), the rate is shaped with
# `tbf` and the delay is added by scripts/lan/delay_relay.py: every TCP connection a node opens to
# another node goes through a relay in the dialer's namespace that holds each byte RTT/2 in each
# direction. The script prints which method shaped the links.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PROFILE=lan
BIN="$ROOT/target/release/secdiff"
OUT=""
MODEL=cipherdm-mnist
while [[ $# -gt 0 ]]; do
    case "$1" in
        --profile) PROFILE="$2"; shift 2 ;;
        --bin) BIN="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        --model) MODEL="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$PROFILE" in
    lan) RTT_MS=0.1; RATE=1gbit; BURST=1mb; LIMIT=64mb ;;
    wan) RTT_MS=20; RATE=100mbit; BURST=256kb; LIMIT=8mb ;;
    *) echo "run.sh: --profile must be lan or wan" >&2; exit 2 ;;
esac
ONEWAY_MS=$(awk "BEGIN { print $RTT_MS / 2 }")
[[ $EUID -eq 0 ]] || { echo "run.sh: needs root (network namespaces, tc)" >&2; exit 2; }
[[ -x "$BIN" ]] || { echo "run.sh: no secdiff binary at $BIN (cargo build --release)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "run.sh: python3 is needed for the delay relay" >&2; exit 2; }

WORK="$(mktemp -d /tmp/secdiff-lan.XXXXXX)"
OUT="${OUT:-$WORK/out}"
mkdir -p "$OUT"
TAG="sd$(( $$ % 100000 ))"
HUB="$TAG-hub"
NODES=(p0 p1 p2 cl ow)
declare -A IP=([p0]=10.77.0.1 [p1]=10.77.0.2 [p2]=10.77.0.3 [cl]=10.77.0.10 [ow]=10.77.0.11)
PIDS=()

cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for n in "${NODES[@]}"; do ip netns del "$TAG-$n" 2>/dev/null; done
    ip netns del "$HUB" 2>/dev/null
    rm -rf "$WORK/keys" "$WORK"/*.toml
    [[ "$OUT" == "$WORK/out" ]] || rm -rf "$WORK"
    echo "run.sh: removed namespaces $TAG-*, exit $rc" >&2
}
trap cleanup EXIT INT TERM

ns() { ip netns exec "$1" "${@:2}"; }

# ---- topology -------------------------------------------------------------------------------
ip netns add "$HUB"
ns "$HUB" ip link add br0 type bridge
ns "$HUB" ip link set br0 up
ns "$HUB" ip link set lo up
for n in "${NODES[@]}"; do
    ip netns add "$TAG-$n"
    ip link add "$TAG$n" type veth peer name "$TAG${n}h"
    ip link set "$TAG$n" netns "$TAG-$n"
    ip link set "$TAG${n}h" netns "$HUB"
    ns "$HUB" ip link set "$TAG${n}h" master br0
    ns "$HUB" ip link set "$TAG${n}h" up
    ns "$TAG-$n" ip link set lo up
    ns "$TAG-$n" ip addr add "${IP[$n]}/24" dev "$TAG$n"
    ns "$TAG-$n" ip link set "$TAG$n" up
done

# ---- shaping ----------------------------------------------------------------------------------
if ns "$HUB" tc qdisc add dev lo root netem delay 1ms 2>/dev/null; then
    ns "$HUB" tc qdisc del dev lo root
    METHOD=netem
    for n in "${NODES[@]}"; do
        ns "$TAG-$n" tc qdisc add dev "$TAG$n" root netem delay "${ONEWAY_MS}ms" rate "$RATE" limit 100000
    done
    SHAPING="netem: delay ${ONEWAY_MS} ms and rate $RATE on every node's uplink"
else
    METHOD=relay
    for n in "${NODES[@]}"; do
        ns "$TAG-$n" tc qdisc add dev "$TAG$n" root tbf rate "$RATE" burst "$BURST" limit "$LIMIT"
    done
    SHAPING="tbf: rate $RATE on every node's uplink; delay: userspace relay, ${ONEWAY_MS} ms each way per connection (this kernel has no netem qdisc)"
fi
echo "run.sh: profile $PROFILE (RTT $RTT_MS ms, $RATE); $SHAPING"

# ---- keys and per-node configs ----------------------------------------------------------------
"$BIN" keygen --out "$WORK/keys" >/dev/null
MESH_PORT=7000; CLIENT_PORT=7100; RELAY_MESH=17000; RELAY_CLIENT=17100
party_ip() { echo "${IP[p$1]}"; }
write_config() { # $1 file, $2 node (p0|p1|p2|cl|ow)
    local file="$1" node="$2"
    {
        echo "session = $(( $$ % 1000000 ))"
        echo "tls_dir = \"$WORK/keys\""
        echo "recv_timeout_secs = 120"
        echo "connect_timeout_secs = 60"
        for j in 0 1 2; do
            local mesh="$(party_ip $j):$MESH_PORT" client="$(party_ip $j):$CLIENT_PORT"
            if [[ $METHOD == relay ]]; then
                # Dialled links go through this node's relays: party i dials parties j > i;
                # the client and the owner dial every party's client port.
                if [[ $node == p* && $j -gt ${node#p} ]]; then mesh="127.0.0.1:$((RELAY_MESH + j))"; fi
                if [[ $node == cl || $node == ow ]]; then client="127.0.0.1:$((RELAY_CLIENT + j))"; fi
            fi
            printf '[[party]]\nid = %d\nmesh = "%s"\nclient = "%s"\n' "$j" "$mesh" "$client"
        done
    } > "$file"
}
for n in "${NODES[@]}"; do write_config "$WORK/$n.toml" "$n"; done

if [[ $METHOD == relay ]]; then
    start_relays() { # $1 node, rest: mappings
        local node="$1"; shift
        [[ $# -gt 0 ]] || return 0
        ns "$TAG-$node" python3 "$ROOT/scripts/lan/delay_relay.py" --delay-ms "$ONEWAY_MS" "$@" \
            > "$OUT/relay-$node.log" 2>&1 &
        PIDS+=($!)
    }
    start_relays p0 "127.0.0.1:$((RELAY_MESH + 1))=$(party_ip 1):$MESH_PORT" \
                    "127.0.0.1:$((RELAY_MESH + 2))=$(party_ip 2):$MESH_PORT"
    start_relays p1 "127.0.0.1:$((RELAY_MESH + 2))=$(party_ip 2):$MESH_PORT"
    for n in cl ow; do
        start_relays "$n" "127.0.0.1:$((RELAY_CLIENT))=$(party_ip 0):$CLIENT_PORT" \
                          "127.0.0.1:$((RELAY_CLIENT + 1))=$(party_ip 1):$CLIENT_PORT" \
                          "127.0.0.1:$((RELAY_CLIENT + 2))=$(party_ip 2):$CLIENT_PORT"
    done
    for n in p0 p1 cl ow; do # wait until every relay listens
        for _ in $(seq 100); do grep -q relays "$OUT/relay-$n.log" 2>/dev/null && break; sleep 0.1; done
    done
fi

# ---- roles ------------------------------------------------------------------------------------
for i in 0 1 2; do
    ns "$TAG-p$i" "$BIN" party --id "$i" --config "$WORK/p$i.toml" > "$OUT/party$i.log" 2>&1 &
    PIDS+=($!)
done
# The owner serves one session per run; restart it for the next one (bench runs several).
ns "$TAG-ow" bash -c "while true; do '$BIN' owner --model '$MODEL' --parties '$WORK/ow.toml' || sleep 1; done" \
    > "$OUT/owner.log" 2>&1 &
PIDS+=($!)

if [[ $# -eq 0 ]]; then
    set -- generate --mode mpc --model "$MODEL" --steps 50 --labels 0,1,1,0 \
        --report "$OUT/report.json" --raw-out "$OUT/x0.safetensors"
fi
echo "run.sh: client: secdiff $* --parties <client config> --shutdown-parties"
set +e
ns "$TAG-cl" "$BIN" "$@" --parties "$WORK/cl.toml" --shutdown-parties 2>&1 | tee "$OUT/client.log"
RC=${PIPESTATUS[0]}
set -e
echo "run.sh: link shaping was: $SHAPING" | tee -a "$OUT/client.log"
echo "run.sh: logs in $OUT"
exit "$RC"
