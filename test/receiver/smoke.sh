#!/usr/bin/env bash
# Smoke test for the webhook receiver: builds it, starts it on a free
# loopback port, exercises every feature with curl and checks the results.
# Exits 0 only if everything passed.  RECEIVER_VALGRIND=1 also runs a short
# session under valgrind.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
check() { local name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
# is NAME WANT GOT
is() { if [ "$2" == "$3" ]; then ok "$1"; else bad "$1 (want '$2', got '$3')"; fi; }
finish() {
	echo "receiver smoke: $pass passed, $fail failed"
	[ "$fail" -eq 0 ]
	exit
}

if make -s receiver; then ok "build"; else bad "build"; finish; fi

tmp=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT

# Two secrets: a Standard Webhooks one (binary key, with a NUL byte) and a
# raw one, so that rotation is exercised.
key_hex=00a1b2c3d4e5f60718293a4b5c6d7e8f90a0b0c0d0e0f001
key_b64=$(printf "$(sed 's/../\\x&/g' <<<"$key_hex")" | openssl base64 -A)
raw_secret=raw-secret-two
max_body=65536

# start_receiver ARGS...: start in the background, set pid and URL
start_receiver() {
	"$@" >"$tmp/out" 2>"$tmp/err" &
	pid=$!
	port=
	for _ in $(seq 100); do
		port=$(sed -n 's/^listening on //p' "$tmp/out")
		[ -n "$port" ] && break
		sleep 0.05
	done
	URL=http://127.0.0.1:$port
	[ -n "$port" ]
}

if start_receiver ./receiver --port 0 --secret "whsec_$key_b64" \
	--secret "$raw_secret" --log "$tmp/log" --max-body $max_body; then
	ok "starts, port $port"
else
	bad "starts"; cat "$tmp/err"; finish
fi

ts=$(date +%s)
sign_hex() { printf '%s' "$2.$ts.$3" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$1" -binary | openssl base64 -A; }
sign_raw() { printf '%s' "$2.$ts.$3" | openssl dgst -sha256 -hmac "$1" -binary | openssl base64 -A; }

# post ID SIGNATURE BODY [curl args...]: print the status code
post() {
	local id=$1 sig=$2 body=$3
	shift 3
	local h=(-H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "outbox-key: k-$id" -H "outbox-topic: orders")
	[ -n "$sig" ] && h+=(-H "webhook-signature: $sig")
	curl -s -o /dev/null -w '%{http_code}' --max-time 5 "${h[@]}" \
		-H 'Content-Type: application/json' --data-binary "$body" "$@" "$URL/hook"
}
control() { curl -s --max-time 5 "$URL/_control?$1"; }
stats() { curl -s --max-time 5 "$URL/_stats"; }
# num KEY JSON: a number from flat-enough JSON
num() { grep -o "\"$1\":[-0-9.]*" <<<"$2" | head -1 | cut -d: -f2; }
# log_line ID: the first log line for webhook-id ID, waiting for the flush
log_line() {
	local line
	for _ in $(seq 40); do
		line=$(awk -F'\t' -v id="$1" '$2 == id { print; exit }' "$tmp/log")
		[ -n "$line" ] && { printf '%s\n' "$line"; return; }
		sleep 0.05
	done
}
field() { cut -f"$2" <<<"$1"; }
log_count() { sleep 0.25; wc -l <"$tmp/log" | tr -d ' '; }

# --- signatures, log format, seq ---
body='{"id":"msg_1","topic":"orders","key":"k1","timestamp":1700000000,"payload":{"n":1,"seq":7}}'
is "whsec_ signed POST answered 200" 200 "$(post msg_1 "v1,$(sign_hex $key_hex msg_1 "$body")" "$body")"
line=$(log_line msg_1)
is "log line has 7 tab-separated fields" 7 "$(awk -F'\t' '{ print NF }' <<<"$line")"
is "whsec_ signature logged valid" valid "$(field "$line" 5)"
is "outbox-key header logged" k-msg_1 "$(field "$line" 3)"
is "outbox-topic header logged" orders "$(field "$line" 4)"
is "body_len logged" ${#body} "$(field "$line" 6)"
is "seq extracted from payload" 7 "$(field "$line" 7)"
now_us=$(($(date +%s) * 1000000))
d=$(( $(field "$line" 1) - now_us ))
check "arrival time is unix microseconds" test "${d#-}" -lt 5000000

body='{"id":"msg_2","payload":{"seq":8}}'
post msg_2 "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= v1,$(sign_raw $raw_secret msg_2 "$body")" "$body" >/dev/null
is "raw secret, second signature entry: valid" valid "$(field "$(log_line msg_2)" 5)"

body='{"id":"msg_3","seq":9}'
post msg_3 "v1,$(sign_raw wrong-secret msg_3 "$body")" "$body" >/dev/null
line=$(log_line msg_3)
is "wrong signature logged invalid" invalid "$(field "$line" 5)"
is "top-level seq extracted" 9 "$(field "$line" 7)"

post msg_4 "" '{"hello":"world"}' >/dev/null
line=$(log_line msg_4)
is "unsigned logged none" none "$(field "$line" 5)"
is "no seq logged as -" - "$(field "$line" 7)"

curl -s -o /dev/null --max-time 5 --data-binary '{"seq":1}' "$URL/bare"
log_count >/dev/null
is "missing headers logged as -" "-	-	-" "$(tail -n 1 "$tmp/log" | cut -f2-4)"

# --- batches ---
body='[{"id":"b1","topic":"t1","key":"ka","payload":{"seq":1}},
 {"id":"b2","topic":"t1","key":"kb","payload":{"id":"inner","seq":2,"s":"x\"}]"}},
 {"id":"b3","topic":"t2","key":"kc","payload":{"seq":3}}]'
post batch "v1,$(sign_hex $key_hex batch "$body")" "$body" >/dev/null
log_line b3 >/dev/null
got=$(awk -F'\t' '$2 ~ /^b[123]$/ { printf "%s/%s/%s/%s/%s ", $2, $3, $4, $5, $7 }' "$tmp/log")
is "batch logs one line per element" "b1/ka/t1/valid/1 b2/kb/t1/valid/2 b3/kc/t2/valid/3 " "$got"

# --- HTTP handling ---
got=$(curl -s -o /dev/null -w '%{num_connects} ' --max-time 5 -d '{}' "$URL/ka" \
	--next -s -o /dev/null -w '%{num_connects}' --max-time 5 -d '{}' "$URL/ka")
is "keep-alive: second request reuses the connection" "1 0" "$got"

got=$( (exec 3<>"/dev/tcp/127.0.0.1/$port" &&
	printf 'POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}' >&3 &&
	timeout 3 cat <&3) | grep -o 'HTTP/1.1 200' | wc -l)
is "pipelined requests, then Connection: close closes" 2 "$got"

got=$(curl -sv -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 \
	-H 'Expect: 100-continue' -d '{"x":1}' "$URL/expect" 2>"$tmp/v")
check "Expect: 100-continue gets 100 then 200 at once" \
	awk -v g="$got" 'BEGIN { split(g, a, " "); exit !(a[1] == 200 && a[2] < 0.9) }'
check "100 Continue sent" grep -q '< HTTP/1.1 100' "$tmp/v"

head -c $((max_body + 1)) /dev/zero | tr '\0' x >"$tmp/big"
is "body over --max-body: 413" 413 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --data-binary @"$tmp/big" "$URL/big")"
is "chunked body refused with 411" 411 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
	-H 'Transfer-Encoding: chunked' --data-binary '{"a":1}' "$URL/chunked")"
is "GET on a webhook path: 405" 405 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/hook")"
is "bad control parameter: 400" 400 "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/_control?fail_rate=2")"

# --- counters ---
curl -s -o /dev/null --max-time 5 -X POST "$URL/_reset"
post s1 "v1,$(sign_hex $key_hex s1 '{}')" '{}' >/dev/null
post s2 "v1,bogus" '{}' >/dev/null
post s3 "" '{}' >/dev/null
control fail_rate=1 >/dev/null
post s4 "" '{}' >/dev/null
control fail_rate=0 >/dev/null
s=$(stats)
is "stats requests_total" 4 "$(num requests_total "$s")"
is "stats accepted" 3 "$(num accepted "$s")"
is "stats by status" "3 1" "$(num 200 "$s") $(num 500 "$s")"
is "stats signatures valid/invalid/none" "1 1 2" "$(num sig_valid "$s") $(num sig_invalid "$s") $(num sig_none "$s")"
is "stats connections_opened (one per curl)" 7 "$(num connections_opened "$s")"
check "stats max_concurrent_connections >= 1" test "$(num max_concurrent_connections "$s")" -ge 1

# --- faults ---
n0=$(log_count)
got=$(control fail_rate=1)
is "control answers the settings" 1 "$(num fail_rate "$got")"
is "fail_rate=1: 500" 500 "$(post f1 "" '{}')"
is "failed requests are not logged" "$n0" "$(log_count)"
control fail_rate=0 >/dev/null

control 'status=429&retry_after=3' >/dev/null
got=$(curl -s -D - -o /dev/null --max-time 5 -d '{}' "$URL/hook" | tr -d '\r')
check "status=429: 429" grep -q '^HTTP/1.1 429' <<<"$got"
check "retry_after=3: Retry-After: 3" grep -qi '^Retry-After: 3$' <<<"$got"
control status=410 >/dev/null
is "status=410: 410" 410 "$(post f2 "" '{}')"
control 'status=400&status_rate=0' >/dev/null
is "status_rate=0: 200" 200 "$(post f3 "" '{}')"
control status=0 >/dev/null

control delay_ms=300 >/dev/null
got=$(curl -s -o /dev/null -w '%{http_code} %{time_total}' --max-time 5 \
	-H 'webhook-id: d1' --data-binary '{"seq":5}' "$URL/hook")
check "delay_ms=300: 200 after >= 300 ms" \
	awk -v g="$got" 'BEGIN { split(g, a, " "); exit !(a[1] == "200" && a[2] >= 0.3) }'
is "delayed request logged" 5 "$(field "$(log_line d1)" 7)"
control delay_ms=0 >/dev/null

control reset_rate=1 >/dev/null
post r1 "" '{}' >/dev/null
rc=$?
check "reset_rate=1: curl sees a reset (rc $rc)" test $rc -eq 52 -o $rc -eq 56
control reset_rate=0 >/dev/null

control hang_rate=1 >/dev/null
post h1 "" '{}' --max-time 1 >/dev/null
is "hang_rate=1: curl times out" 28 $?
control hang_rate=0 >/dev/null
is "hung request not logged" "" "$(log_line h1)"

s=$(stats)
is "stats resets_injected" 1 "$(num resets_injected "$s")"

# --- down and up ---
wait_rc() {	# wait_rc WANT: retry a plain POST until curl exits WANT
	local rc
	for _ in $(seq 40); do
		curl -s -o /dev/null --max-time 2 -d '{}' "$URL/up"
		rc=$?
		[ "$rc" -eq "$1" ] && return 0
		sleep 0.05
	done
	return 1
}
kill -USR1 "$pid"
check "SIGUSR1: connection refused" wait_rc 7
kill -USR2 "$pid"
check "SIGUSR2: back up" wait_rc 0
got=$(control down=1)
is "down=1 answers before going down" 1 "$(num down "$got")"
check "down=1: connection refused" wait_rc 7
kill -USR2 "$pid"
check "SIGUSR2 after down=1: back up" wait_rc 0
is "stats say up" 0 "$(num down "$(stats)")"

# --- reset ---
control 'fail_rate=0.5&delay_ms=10' >/dev/null
got=$(curl -s --max-time 5 "$URL/_reset")
s=$(stats)
is "/_reset clears faults" "0 0" "$(num fail_rate "$got") $(num delay_ms "$got")"
is "/_reset clears counters" "0 0" "$(num requests_total "$s") $(num accepted "$s")"

# --- throughput, only if wrk is around ---
if command -v wrk >/dev/null; then
	printf 'wrk.method = "POST"\nwrk.body = "{\\"seq\\":1}"\n' >"$tmp/post.lua"
	rps=$(wrk -t2 -c64 -d2s -s "$tmp/post.lua" "$URL/bench" | awk '/Requests\/sec/ { print int($2) }')
	check "wrk throughput: ${rps:-?} requests/s" test "${rps:-0}" -gt 1000
else
	echo "skip wrk throughput (wrk not installed)"
fi

# --- SIGTERM flushes the log and exits 0 ---
post last "" '{"seq":99}' >/dev/null
kill -TERM "$pid"
wait "$pid"
is "SIGTERM: exit 0" 0 $?
pid=
is "log flushed on exit" 99 "$(awk -F'\t' '$2 == "last" { print $7 }' "$tmp/log")"

# --- optional: a short session under valgrind ---
if [ "${RECEIVER_VALGRIND:-0}" = 1 ]; then
	if start_receiver valgrind -q --leak-check=full --error-exitcode=1 ./receiver --port 0 \
		--secret "whsec_$key_b64" --log "$tmp/vlog"; then
		body='[{"id":"v1","seq":1},{"id":"v2","seq":2}]'
		post v "v1,$(sign_hex $key_hex v "$body")" "$body" >/dev/null
		control delay_ms=50 >/dev/null
		post v3 "" '{"seq":3}' >/dev/null
		control 'delay_ms=0&reset_rate=1' >/dev/null
		post v4 "" '{}' >/dev/null
		control 'reset_rate=0&hang_rate=1' >/dev/null
		post v5 "" '{}' --max-time 0.5 >/dev/null
		curl -s -o /dev/null --max-time 5 "$URL/_stats" -H 'Expect: 100-continue' -d x
		kill -TERM "$pid"
		wait "$pid"
		is "valgrind: clean exit" 0 $?
		pid=
		is "valgrind: log lines" 3 "$(wc -l <"$tmp/vlog" | tr -d ' ')"
	else
		bad "valgrind: start"
	fi
fi

finish
