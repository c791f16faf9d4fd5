#!/usr/bin/env bash
# certs_cli_test.sh AEGIS_CERTS [OPENSSL]
#
# End-to-end test of aegis-certs, with the openssl command-line tool as an
# independent verifier: chains verify, SAN/KU/EKU read as intended, SPKI pins
# agree, rogue and expired certificates are rejected, keys are 0600 and never
# overwritten without --force, and bad input fails with a message naming it.
# Also a real mutual-TLS handshake between openssl s_server and s_client
# using the certificates and keys we wrote.
set -u

CERTS=${1:?usage: certs_cli_test.sh AEGIS_CERTS [OPENSSL]}
OPENSSL=${2:-openssl}
if ! command -v "$OPENSSL" >/dev/null 2>&1; then
    echo "SKIP: the openssl command-line tool ($OPENSSL) is not installed; it is the independent verifier here"
    exit 77
fi

T=$(mktemp -d "${TMPDIR:-/tmp}/aegis-certs-test.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
    fi
    rm -rf "$T"
}
trap cleanup EXIT

CHECKS=0
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
ok() {
    CHECKS=$((CHECKS + 1))
}

# run CMD...: runs it with stdout/stderr in $T/out and $T/err; sets RC.
run() {
    "$@" >"$T/out" 2>"$T/err"
    RC=$?
}

# expect_ok CMD...: must exit 0.
expect_ok() {
    run "$@"
    [ "$RC" -eq 0 ] || fail "'$*' exited $RC: $(cat "$T/err")"
    ok
}

# expect_fail CODE NEEDLE CMD...: must exit CODE (or any non-zero for "any")
# and name NEEDLE on stderr.
expect_fail() {
    local code=$1 needle=$2
    shift 2
    run "$@"
    if [ "$code" = any ]; then
        [ "$RC" -ne 0 ] || fail "'$*' succeeded but should have failed"
    else
        [ "$RC" -eq "$code" ] || fail "'$*' exited $RC, expected $code: $(cat "$T/err")"
    fi
    grep -qF -- "$needle" "$T/err" || fail "'$*' error does not mention '$needle': $(cat "$T/err")"
    ok
}

# has FILE NEEDLE / lacks FILE NEEDLE
has() {
    grep -qF -- "$2" "$1" || fail "$1 lacks '$2': $(cat "$1")"
    ok
}
lacks() {
    if grep -qF -- "$2" "$1"; then fail "$1 unexpectedly contains '$2'"; fi
    ok
}

mode_of() {
    stat -c %a "$1"
}

openssl_pin() { # certificate file -> base64 SHA-256 of its SPKI, computed by openssl
    "$OPENSSL" x509 -in "$1" -pubkey -noout | "$OPENSSL" pkey -pubin -outform der |
        "$OPENSSL" dgst -sha256 -binary | base64
}

# ---- one fleet per algorithm ----------------------------------------------
for algo in ed25519 p256; do
    D=$T/$algo
    expect_ok "$CERTS" init --dir "$D" --algo "$algo"
    [ "$(mode_of "$D")" = 700 ] || fail "directory $D has mode $(mode_of "$D"), want 700"
    ok
    expect_ok "$CERTS" server --dir "$D" --name control.example --name localhost \
        --ip 127.0.0.1 --ip ::1
    has "$T/out" "pin sha256//"
    expect_ok "$CERTS" operator --dir "$D" --name alice
    expect_ok "$CERTS" agent --dir "$D" --name agent-01
    expect_ok "$CERTS" client --dir "$D" --name bench
    expect_ok "$CERTS" self-signed --dir "$D" --name host-abc --out boot

    for base in ca server operator-alice agent-agent-01 client boot; do
        [ -f "$D/$base.pem" ] || fail "$D/$base.pem missing"
        [ "$(mode_of "$D/$base.key")" = 600 ] || fail "$D/$base.key has mode $(mode_of "$D/$base.key")"
        ok
        # openssl parses our PKCS#8 keys, and each key matches its certificate.
        expect_ok "$OPENSSL" pkey -in "$D/$base.key" -noout
        "$OPENSSL" pkey -in "$D/$base.key" -pubout >"$T/k.pub" || fail "pkey -pubout $base"
        "$OPENSSL" x509 -in "$D/$base.pem" -pubkey -noout >"$T/c.pub" || fail "x509 -pubkey $base"
        cmp -s "$T/k.pub" "$T/c.pub" || fail "$base.key does not match $base.pem"
        ok
        # Our pin equals openssl's SPKI SHA-256, from the cert and from the key.
        want="sha256//$(openssl_pin "$D/$base.pem")"
        expect_ok "$CERTS" pin "$D/$base.pem"
        [ "$(cat "$T/out")" = "$want" ] || fail "pin of $base.pem: $(cat "$T/out") != $want"
        expect_ok "$CERTS" pin "$D/$base.key"
        [ "$(cat "$T/out")" = "$want" ] || fail "pin of $base.key: $(cat "$T/out") != $want"
        expect_ok "$CERTS" pin "$T/c.pub"
        [ "$(cat "$T/out")" = "$want" ] || fail "pin of public key: $(cat "$T/out") != $want"
        ok
    done

    # Chains: every leaf verifies against the CA, for the intended purpose.
    for leaf in server operator-alice agent-agent-01 client; do
        expect_ok "$OPENSSL" verify -CAfile "$D/ca.pem" "$D/$leaf.pem"
        has "$T/out" "$D/$leaf.pem: OK"
    done
    expect_ok "$OPENSSL" verify -purpose sslserver -CAfile "$D/ca.pem" "$D/server.pem"
    for leaf in operator-alice agent-agent-01 client; do
        expect_ok "$OPENSSL" verify -purpose sslclient -CAfile "$D/ca.pem" "$D/$leaf.pem"
        # clientAuth only: not usable as a server.
        run "$OPENSSL" verify -purpose sslserver -CAfile "$D/ca.pem" "$D/$leaf.pem"
        [ "$RC" -ne 0 ] || fail "$leaf.pem verified for sslserver"
        ok
    done
    run "$OPENSSL" verify -purpose sslclient -CAfile "$D/ca.pem" "$D/server.pem"
    [ "$RC" -ne 0 ] || fail "server.pem verified for sslclient"
    ok
    # The self-signed bootstrap certificate is not from the fleet CA.
    run "$OPENSSL" verify -CAfile "$D/ca.pem" "$D/boot.pem"
    [ "$RC" -ne 0 ] || fail "boot.pem verified against the fleet CA"
    ok

    # Extensions and names as openssl reads them.
    "$OPENSSL" x509 -in "$D/ca.pem" -noout -text >"$T/ca.txt" || fail "x509 ca"
    has "$T/ca.txt" "CA:TRUE, pathlen:0"
    has "$T/ca.txt" "Certificate Sign, CRL Sign"
    has "$T/ca.txt" "OU = aegis-ca, CN = Aegis Fleet CA"
    if [ "$algo" = ed25519 ]; then
        has "$T/ca.txt" "Signature Algorithm: ED25519"
    else
        has "$T/ca.txt" "Signature Algorithm: ecdsa-with-SHA256"
        has "$T/ca.txt" "NIST CURVE: P-256"
    fi
    "$OPENSSL" x509 -in "$D/server.pem" -noout -text >"$T/srv.txt" || fail "x509 server"
    has "$T/srv.txt" "DNS:control.example"
    has "$T/srv.txt" "DNS:localhost"
    has "$T/srv.txt" "IP Address:127.0.0.1"
    has "$T/srv.txt" "IP Address:0:0:0:0:0:0:0:1"
    has "$T/srv.txt" "TLS Web Server Authentication"
    lacks "$T/srv.txt" "TLS Web Client Authentication"
    has "$T/srv.txt" "Digital Signature"
    has "$T/srv.txt" "CA:FALSE"
    lacks "$T/srv.txt" "CA:TRUE"
    lacks "$T/srv.txt" "Certificate Sign"
    has "$T/srv.txt" "Subject: OU = aegis-server, CN = control.example"
    has "$T/srv.txt" "Issuer: OU = aegis-ca, CN = Aegis Fleet CA"
    for leaf in operator-alice agent-agent-01 client boot; do
        "$OPENSSL" x509 -in "$D/$leaf.pem" -noout -text >"$T/leaf.txt" || fail "x509 $leaf"
        has "$T/leaf.txt" "TLS Web Client Authentication"
        lacks "$T/leaf.txt" "TLS Web Server Authentication"
        has "$T/leaf.txt" "Digital Signature"
        lacks "$T/leaf.txt" "CA:TRUE"
        lacks "$T/leaf.txt" "Subject Alternative Name"
    done
    "$OPENSSL" x509 -in "$D/operator-alice.pem" -noout -subject >"$T/subj" || fail "subject"
    has "$T/subj" "OU = aegis-operator, CN = alice"
    "$OPENSSL" x509 -in "$D/agent-agent-01.pem" -noout -subject >"$T/subj" || fail "subject"
    has "$T/subj" "OU = aegis-agent, CN = agent-01"
    "$OPENSSL" x509 -in "$D/boot.pem" -noout -subject -issuer >"$T/subj" || fail "subject"
    has "$T/subj" "subject=OU = aegis-self, CN = host-abc"
    has "$T/subj" "issuer=OU = aegis-self, CN = host-abc"
    # 16-byte serials: 32 hex digits.
    serial=$("$OPENSSL" x509 -in "$D/server.pem" -noout -serial | sed 's/^serial=//')
    [ "${#serial}" -eq 32 ] || fail "server serial '$serial' is not 16 bytes"
    ok
    # Leaves default to the CA's algorithm.
    "$OPENSSL" pkey -in "$D/agent-agent-01.key" -noout -text >"$T/key.txt" 2>&1
    if [ "$algo" = ed25519 ]; then has "$T/key.txt" "ED25519 Private-Key"; else has "$T/key.txt" "256 bit"; fi

    # show names what matters.
    expect_ok "$CERTS" show "$D/server.pem"
    has "$T/out" "role:        server"
    has "$T/out" "sans:        DNS:control.example, DNS:localhost, IP:127.0.0.1, IP:::1"
    has "$T/out" "pin:         sha256//$(openssl_pin "$D/server.pem")"
    has "$T/out" "status:      valid"
done

# ---- a mixed fleet: P-256 agent key under an Ed25519 CA -------------------
expect_ok "$CERTS" agent --dir "$T/ed25519" --name mixed --algo p256
expect_ok "$OPENSSL" verify -CAfile "$T/ed25519/ca.pem" "$T/ed25519/agent-mixed.pem"
"$OPENSSL" x509 -in "$T/ed25519/agent-mixed.pem" -noout -text >"$T/mixed.txt"
has "$T/mixed.txt" "Signature Algorithm: ED25519"
has "$T/mixed.txt" "id-ecPublicKey"

# ---- rogue CA: same name, different key ------------------------------------
R=$T/rogue
expect_ok "$CERTS" init --dir "$R"
expect_ok "$CERTS" agent --dir "$R" --name agent-01
expect_ok "$OPENSSL" verify -CAfile "$R/ca.pem" "$R/agent-agent-01.pem"
for real in ed25519 p256; do
    run "$OPENSSL" verify -CAfile "$T/$real/ca.pem" "$R/agent-agent-01.pem"
    [ "$RC" -ne 0 ] || fail "rogue agent certificate verified against the $real fleet CA"
    ok
    run "$OPENSSL" verify -CAfile "$T/$real/ca.pem" "$R/ca.pem"
    [ "$RC" -ne 0 ] || fail "rogue CA verified against the $real fleet CA"
    ok
done

# ---- validity options -------------------------------------------------------
D=$T/ed25519
expect_ok "$CERTS" agent --dir "$D" --name old --not-before 2000-01-01 --not-after 2001-01-01
run "$OPENSSL" verify -CAfile "$D/ca.pem" "$D/agent-old.pem"
[ "$RC" -ne 0 ] || fail "expired certificate verified"
grep -q "expired" "$T/out" "$T/err" || fail "openssl did not call agent-old.pem expired: $(cat "$T/out" "$T/err")"
ok
expect_ok "$CERTS" show "$D/agent-old.pem"
has "$T/out" "status:      EXPIRED"
has "$T/out" "not after:   2001-01-01T00:00:00Z"
expect_ok "$CERTS" agent --dir "$D" --name unix --not-before 1893456000 --not-after 1924992000
"$OPENSSL" x509 -in "$D/agent-unix.pem" -noout -startdate -enddate >"$T/dates"
has "$T/dates" "notBefore=Jan  1 00:00:00 2030 GMT"
has "$T/dates" "notAfter=Jan  1 00:00:00 2031 GMT"
expect_ok "$CERTS" agent --dir "$D" --name short --days 10
expect_ok "$OPENSSL" x509 -in "$D/agent-short.pem" -noout -checkend $((9 * 86400))
run "$OPENSSL" x509 -in "$D/agent-short.pem" -noout -checkend $((11 * 86400))
[ "$RC" -ne 0 ] || fail "--days 10 certificate still valid in 11 days"
ok

# ---- never overwrite without --force ----------------------------------------
before_key=$(sha256sum <"$D/server.key")
before_pem=$(sha256sum <"$D/server.pem")
expect_fail 1 "refusing to overwrite existing key $D/server.key" \
    "$CERTS" server --dir "$D" --name control.example
[ "$(sha256sum <"$D/server.key")" = "$before_key" ] || fail "server.key changed without --force"
[ "$(sha256sum <"$D/server.pem")" = "$before_pem" ] || fail "server.pem changed without --force"
ok
expect_fail 1 "$D/ca.key" "$CERTS" init --dir "$D"
expect_ok "$CERTS" server --dir "$D" --name control.example --force
[ "$(sha256sum <"$D/server.key")" != "$before_key" ] || fail "--force did not replace server.key"
[ "$(mode_of "$D/server.key")" = 600 ] || fail "replaced server.key has mode $(mode_of "$D/server.key")"
expect_ok "$OPENSSL" verify -CAfile "$D/ca.pem" "$D/server.pem"
if compgen -G "$D/*.tmp.*" >/dev/null; then fail "temporary files left in $D: $(ls "$D")"; fi
ok

# ---- $AEGIS_PKI_DIR and the default directory -------------------------------
expect_ok env AEGIS_PKI_DIR="$T/envdir" "$CERTS" init --algo p256
[ -f "$T/envdir/ca.key" ] || fail "AEGIS_PKI_DIR was not used"
ok
(cd "$T" && "$CERTS" init >/dev/null 2>&1) || fail "init with the default directory failed"
[ -f "$T/pki/ca.pem" ] || fail "default directory ./pki was not used"
ok

# ---- keys made by openssl are read as openssl reads them --------------------
"$OPENSSL" genpkey -algorithm ed25519 -out "$T/ossl-ed.key" 2>/dev/null || fail "genpkey ed25519"
"$OPENSSL" genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/ossl-ec.key" 2>/dev/null ||
    fail "genpkey P-256"
for k in ossl-ed ossl-ec; do
    want="sha256//$("$OPENSSL" pkey -in "$T/$k.key" -pubout -outform der | "$OPENSSL" dgst -sha256 -binary | base64)"
    expect_ok "$CERTS" pin "$T/$k.key"
    [ "$(cat "$T/out")" = "$want" ] || fail "pin of openssl's $k.key: $(cat "$T/out") != $want"
done
# An openssl-made CA key signs our certificates.
mkdir -m 700 "$T/osslca"
cp "$T/ossl-ec.key" "$T/osslca/ca.key"
chmod 600 "$T/osslca/ca.key"
"$OPENSSL" req -x509 -new -key "$T/osslca/ca.key" -subj "/CN=OpenSSL CA" -days 30 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -out "$T/osslca/ca.pem" 2>/dev/null || fail "openssl req -x509"
expect_ok "$CERTS" agent --dir "$T/osslca" --name foreign
expect_ok "$OPENSSL" verify -CAfile "$T/osslca/ca.pem" "$T/osslca/agent-foreign.pem"

# ---- bad input: non-zero exit, message naming the input --------------------
expect_fail 1 "$T/none/ca.key" "$CERTS" server --dir "$T/none" --name x.example
has "$T/err" "aegis-certs init --dir $T/none"
expect_fail 1 "$T/none/ca.key" "$CERTS" agent --dir "$T/none" --name a
printf 'garbage\n' >"$T/garbage.pem"
expect_fail 1 "$T/garbage.pem" "$CERTS" pin "$T/garbage.pem"
expect_fail 1 "$T/garbage.pem" "$CERTS" show "$T/garbage.pem"
expect_fail 1 "$T/missing.pem" "$CERTS" pin "$T/missing.pem"
cp -r "$T/p256" "$T/badkey"
# A key file with valid armour and a body that is no key at all.
label="PRIVATE KEY"
printf -- '-----BEGIN %s-----\nAAAA\n-----END %s-----\n' "$label" "$label" >"$T/badkey/ca.key"
expect_fail 1 "$T/badkey/ca.key" "$CERTS" agent --dir "$T/badkey" --name z
cp "$T/ed25519/ca.pem" "$T/badkey/ca.pem"
cp "$T/p256/ca.key" "$T/badkey/ca.key"
expect_fail 1 "does not belong to CA key" "$CERTS" agent --dir "$T/badkey" --name z2
expect_fail 2 "rsa" "$CERTS" init --dir "$T/x" --algo rsa
expect_fail 2 "2020-13-45" "$CERTS" agent --dir "$D" --name bad --not-after 2020-13-45
expect_fail 2 "tomorrow" "$CERTS" agent --dir "$D" --name bad --not-before tomorrow
expect_fail 2 "--not-after must be later" "$CERTS" agent --dir "$D" --name bad \
    --not-before 2030-01-01 --not-after 2029-01-01
expect_fail 2 "bad name" "$CERTS" server --dir "$D" --name "bad name" --out other
expect_fail 2 "999.1.1.1" "$CERTS" server --dir "$D" --ip 999.1.1.1 --out other
expect_fail 2 "at least one --name" "$CERTS" server --dir "$D"
expect_fail 2 "../evil" "$CERTS" agent --dir "$D" --name ../evil
expect_fail 2 "frobnicate" "$CERTS" frobnicate
expect_fail 2 "--bogus" "$CERTS" agent --bogus
expect_fail 2 "--ip" "$CERTS" agent --dir "$D" --name a --ip 127.0.0.1
[ ! -e "$T/x" ] || fail "a failed init left $T/x behind"
ok
for cmd in init server operator agent client self-signed pin show; do
    expect_ok "$CERTS" "$cmd" --help
    has "$T/out" "usage: aegis-certs $cmd"
done
expect_ok "$CERTS" --help
run "$CERTS"
[ "$RC" -eq 2 ] || fail "no arguments exited $RC, want 2"
ok

# ---- mutual TLS with openssl on both ends -----------------------------------
# s_server serves one connection with our server certificate and requires a
# client certificate from the fleet CA; s_client presents an agent's.
# tls_handshake DIR CLIENT_BASENAME ok|reject
tls_handshake() {
    local d=$1 cbase=$2 expect=$3 port log attempt deadline
    for attempt in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 40000))
        log=$T/s_server.$attempt.log
        "$OPENSSL" s_server -accept "127.0.0.1:$port" -naccept 1 -www -tls1_3 \
            -cert "$d/server.pem" -key "$d/server.key" -CAfile "$d/ca.pem" -Verify 1 \
            -verify_return_error </dev/null >"$log" 2>&1 &
        SERVER_PID=$!
        # Wait (bounded) until it listens or exits (port taken: try another).
        deadline=$((SECONDS + 10))
        while [ $SECONDS -lt $deadline ] && kill -0 "$SERVER_PID" 2>/dev/null &&
            ! grep -q ACCEPT "$log"; do
            sleep 0.05
        done
        if grep -q ACCEPT "$log" && kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
        kill "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
        SERVER_PID=
    done
    [ -n "$SERVER_PID" ] || fail "openssl s_server did not start: $(cat "$log")"
    run timeout 20 "$OPENSSL" s_client -connect "127.0.0.1:$port" -tls1_3 -brief \
        -servername control.example -verify_hostname control.example \
        -CAfile "$d/ca.pem" -verify_return_error \
        -cert "$cbase.pem" -key "$cbase.key" </dev/null
    # -naccept 1: the server exits after this connection; wait for that
    # (bounded), then make sure it is gone.
    deadline=$((SECONDS + 10))
    while [ $SECONDS -lt $deadline ] && kill -0 "$SERVER_PID" 2>/dev/null; do
        sleep 0.05
    done
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
    SERVER_PID=
    if [ "$expect" = ok ]; then
        [ "$RC" -eq 0 ] || fail "TLS handshake in $d failed: $(cat "$T/err") / server: $(cat "$log")"
        grep -q "Verification: OK" "$T/err" "$T/out" ||
            fail "s_client did not verify the server: $(cat "$T/err")"
        grep -q "1 server accepts that finished" "$log" ||
            fail "s_server did not accept the agent certificate: $(cat "$log")"
        grep -q "CN = $(basename "$cbase" | sed 's/^agent-//')" "$log" ||
            fail "s_server did not see the agent certificate: $(cat "$log")"
    else
        grep -q "0 server accepts that finished" "$log" ||
            fail "s_server accepted a client certificate from another CA: $(cat "$log")"
    fi
    ok
}
tls_handshake "$T/ed25519" "$T/ed25519/agent-agent-01" ok
tls_handshake "$T/p256" "$T/p256/agent-agent-01" ok
# An agent certificate from the rogue CA is refused by the server.
tls_handshake "$T/ed25519" "$T/rogue/agent-agent-01" reject

echo "certs_cli_test: $CHECKS checks passed"
exit 0
