#!/usr/bin/env bash
# Aegis dependency bootstrap.
#
# Installs the Debian packages Aegis builds against and builds the two
# libraries Debian bookworm cannot give us in binary form (wolfSSL with QUIC,
# ngtcp2 1.11 with its wolfSSL crypto helper) into a cached prefix.
#
# stdout: exactly one line, the dependency prefix (for CMake's
#         -DAEGIS_DEPS_PREFIX). Everything else goes to stderr.
#
# Environment:
#   AEGIS_DEPS_CACHE   cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/aegis-deps)
#   AEGIS_NO_APT=1     never run apt; fail with the list of missing packages
#
# What it changes on the machine (see README "What the bootstrap changes"):
#   /etc/apt/sources.list.d/aegis.sources   (only if backports / deb-src are missing)
#   the Debian packages listed below
#   the cache root above
set -Eeuo pipefail

# ---------------------------------------------------------------------------
# Pinned inputs. Versions are upstream versions, never Debian revisions: the
# mirror keeps only the newest revision and a security update replaces it,
# while the orig tarball (and so its hash) stays the same.
WOLFSSL_VERSION=5.7.2
WOLFSSL_SHA256=0f2ed82e345b833242705bbc4b08a2a2037a33f7bf9c610efae6464f6b10e305
NGTCP2_VERSION=1.11.0
NGTCP2_SHA256=382c15bf66b630f26021631b25b7eb1feac42c67c1d6826189d61091dfaa4d09
NGHTTP3_MIN=1.8
# Bump when the recipe below changes in a way the key would not see.
RECIPE_REVISION=1

WOLFSSL_CONFIGURE=(
    --enable-static --disable-shared --with-pic
    --enable-quic --enable-session-ticket --enable-earlydata --enable-psk
    --enable-ecc --enable-curve25519 --enable-ed25519 --enable-aesgcm
    --enable-chacha --enable-poly1305 --enable-certgen --enable-certreq
    --enable-certext --enable-opensslextra --enable-alpn --enable-sni
    --enable-sp=ec256 --enable-sp-asm --enable-aesni --enable-intelasm
    --enable-harden --enable-keygen --enable-ip-alt-name
    --disable-rsa --disable-dh --disable-sha3
    --disable-examples --disable-crypttests --disable-benchmark
)
# Footprint (the agent links wolfSSL statically; budget 4 MB stripped): the
# project uses Ed25519, ECDSA P-256 and X25519 only (certs/include/aegis/pki.h
# "never RSA", transport/src/tls_wolfssl.c offers X25519 and P-256), so the
# single-precision maths is built for P-256 alone (the P-384/P-521 tables are
# 1 MB) and RSA, finite-field DH and SHA-3 are left out. Function/data sections
# let the agent's --gc-sections drop what it does not call.
WOLFSSL_CFLAGS="-O2 -g -ffunction-sections -fdata-sections"
# HAVE_SECRET_CALLBACK lets the transport write an SSLKEYLOGFILE on request (the
# secrets go only to our callback; nothing is exported unless configured).
WOLFSSL_CPPFLAGS="-DWOLFSSL_ALT_NAMES -DWOLFSSL_GETRANDOM -DHAVE_SECRET_CALLBACK"

NGTCP2_CMAKE=(
    -DCMAKE_BUILD_TYPE=Release
    -DCMAKE_POSITION_INDEPENDENT_CODE=ON
    -DENABLE_STATIC_LIB=ON -DENABLE_SHARED_LIB=OFF
    -DENABLE_WOLFSSL=ON -DENABLE_OPENSSL=OFF -DENABLE_GNUTLS=OFF
    -DENABLE_BORINGSSL=OFF -DENABLE_PICOTLS=OFF
    -DBUILD_TESTING=OFF
    # Without libev/nghttp3/brotli ngtcp2 builds no examples.
    -DCMAKE_DISABLE_FIND_PACKAGE_Libev=ON
    -DCMAKE_DISABLE_FIND_PACKAGE_Libnghttp3=ON
    -DCMAKE_DISABLE_FIND_PACKAGE_Libbrotlienc=ON
    -DCMAKE_DISABLE_FIND_PACKAGE_Libbrotlidec=ON
)

# Debian packages from bookworm.
APT_PACKAGES=(
    build-essential cmake pkg-config git ca-certificates xz-utils util-linux
    autoconf automake libtool
    libev-dev protobuf-c-compiler libprotobuf-c-dev libzstd-dev zstd
    libpq-dev postgresql-15 postgresql-client-15
    libbpf-dev bpftool clang llvm libclang-rt-14-dev libelf-dev zlib1g-dev
    libcmocka-dev libmicrohttpd-dev libjson-c-dev
    openssl iproute2 nftables clang-format
)
# From bookworm-backports (bookworm's own are too old).
BACKPORTS_PACKAGES=(libnghttp3-dev ngtcp2-client ngtcp2-server)

# ---------------------------------------------------------------------------
log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() {
    printf 'bootstrap: error: %s\n' "$1" >&2
    [ $# -gt 1 ] && printf 'bootstrap:   what to do: %s\n' "$2" >&2
    exit 1
}
trap 'die "command failed at line $LINENO: $BASH_COMMAND" "read the output above; rerun with bash -x tools/bootstrap.sh for a trace"' ERR

APT_OPTS=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3 -y -q)
export DEBIAN_FRONTEND=noninteractive

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        die "installing Debian packages needs root: $*" \
            "run 'make test' as root, or install the packages listed in README.md by hand and set AEGIS_NO_APT=1"
    fi
}

# ---------------------------------------------------------------------------
# Packages.

pkg_installed() { # name [min-version]
    local v
    v=$(dpkg-query -W -f='${Status}|${Version}' "$1" 2>/dev/null) || return 1
    case $v in "install ok installed|"*) ;; *) return 1 ;; esac
    [ $# -lt 2 ] && return 0
    dpkg --compare-versions "${v#*|}" ge "$2"
}

have_target() { # "release type", e.g. "trixie Sources": is that index configured?
    apt-get indextargets --no-release-info --format '$(RELEASE) $(CREATED_BY)' 2>/dev/null |
        grep -qx "$1"
}

ensure_sources() {
    local need=()
    have_target "bookworm-backports Packages" || need+=(backports)
    have_target "trixie Sources" || need+=(trixie-src)
    [ ${#need[@]} -eq 0 ] && return 1
    log "adding apt sources: ${need[*]} -> /etc/apt/sources.list.d/aegis.sources"
    local f
    f=$(mktemp)
    {
        echo "# Added by Aegis tools/bootstrap.sh: nghttp3 1.8 (backports) and"
        echo "# wolfSSL/ngtcp2 orig tarballs (deb-src). Remove this file to undo."
        if [[ " ${need[*]} " == *" backports "* ]]; then
            printf 'Types: deb deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n'
        fi
        if [[ " ${need[*]} " == *" trixie-src "* ]]; then
            printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
        fi
    } >"$f"
    chmod 0644 "$f"
    as_root install -m 0644 "$f" /etc/apt/sources.list.d/aegis.sources
    rm -f "$f"
    return 0
}

APT_UPDATED=0
apt_update() {
    [ "$APT_UPDATED" = 1 ] && return 0
    log "apt-get update"
    as_root apt-get "${APT_OPTS[@]}" update >&2 ||
        die "apt-get update failed" "check that the Debian mirror is reachable (network, proxy) and that no other apt is stuck"
    APT_UPDATED=1
}

ensure_packages() {
    local missing=() missing_bpo=() p
    for p in "${APT_PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
    pkg_installed libnghttp3-dev "$NGHTTP3_MIN" || missing_bpo+=(libnghttp3-dev)
    pkg_installed ngtcp2-client "$NGTCP2_VERSION" || missing_bpo+=(ngtcp2-client)
    pkg_installed ngtcp2-server "$NGTCP2_VERSION" || missing_bpo+=(ngtcp2-server)
    if [ ${#missing[@]} -eq 0 ] && [ ${#missing_bpo[@]} -eq 0 ]; then
        return 0
    fi
    if [ "${AEGIS_NO_APT:-0}" = 1 ]; then
        die "missing Debian packages: ${missing[*]} ${missing_bpo[*]} (backports: ${missing_bpo[*]:-none})" \
            "install them, or unset AEGIS_NO_APT so the bootstrap installs them"
    fi
    ensure_sources || true
    apt_update
    if [[ " ${missing[*]} " == *" postgresql-15 "* ]] && [ ! -e /etc/postgresql-common/createcluster.d/aegis.conf ]; then
        # Tests start throwaway servers of their own; keep Debian from creating
        # (and starting) a system cluster on port 5432 when it installs the server.
        log "postgresql-15: no system cluster (/etc/postgresql-common/createcluster.d/aegis.conf)"
        as_root mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.d/aegis.conf >/dev/null
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing: ${missing[*]}"
        as_root apt-get "${APT_OPTS[@]}" install --no-install-recommends "${missing[@]}" >&2 ||
            die "apt-get install failed for: ${missing[*]}" "see apt's message above (disk full? mirror unreachable?)"
    fi
    if [ ${#missing_bpo[@]} -gt 0 ]; then
        log "installing from bookworm-backports: ${missing_bpo[*]}"
        as_root apt-get "${APT_OPTS[@]}" install --no-install-recommends -t bookworm-backports \
            "${missing_bpo[@]}" >&2 ||
            die "apt-get install -t bookworm-backports failed for: ${missing_bpo[*]}" \
                "check /etc/apt/sources.list.d/aegis.sources and that bookworm-backports is reachable"
    fi
}

# ---------------------------------------------------------------------------
# Source tarballs: located through apt's signed Sources index, fetched by apt's
# own downloader, and checked against the hash pinned above.

fetch_orig() { # pkg upstream-version sha256 dest
    local pkg=$1 ver=$2 sum=$3 dest=$4
    if [ -f "$dest" ] && echo "$sum  $dest" | sha256sum -c --status; then
        return 0
    fi
    local suite line uri idx_sum
    for suite in trixie bookworm-backports bookworm; do
        line=$(apt-get source --print-uris "$pkg/$suite" 2>/dev/null |
            grep -E "[[:space:]]${pkg}_${ver}\.orig\.tar\.[a-z0-9]+[[:space:]]" | head -n1) || true
        [ -n "$line" ] && break
    done
    if [ -z "$line" ]; then
        # The index may be stale or the deb-src line new: update once and retry.
        if [ "$APT_UPDATED" = 0 ] && [ "${AEGIS_NO_APT:-0}" != 1 ]; then
            ensure_sources || true
            apt_update
            fetch_orig "$@"
            return
        fi
        die "no Debian source package offers ${pkg} ${ver}" \
            "check that a deb-src line for trixie exists (see README) and run apt-get update"
    fi
    uri=$(echo "$line" | awk '{print $1}' | tr -d "'")
    idx_sum=$(echo "$line" | awk '{print $4}')
    idx_sum=${idx_sum#SHA256:}
    if [ "$idx_sum" != "$sum" ]; then
        die "${pkg} ${ver}: the signed Sources index says sha256 ${idx_sum}, the bootstrap pins ${sum}" \
            "someone changed the upstream tarball; do not build it. Check Debian's changelog before updating the pin"
    fi
    log "downloading ${uri##*/}"
    mkdir -p "$(dirname "$dest")"
    rm -f "$dest.part"
    # apt-helper checks the hash itself; run it as the caller so the file stays ours.
    /usr/lib/apt/apt-helper -o Acquire::Retries=3 download-file "$uri" "$dest.part" "SHA256:$sum" >&2 2>/dev/null ||
        /usr/lib/apt/apt-helper -o Acquire::Retries=3 download-file "$uri" "$dest.part" "SHA256:$sum" >&2 ||
        die "download of $uri failed or its hash did not match $sum" \
            "check the mirror is reachable; a hash mismatch means a corrupt or tampered file"
    echo "$sum  $dest.part" | sha256sum -c --status ||
        die "$dest: sha256 mismatch after download" "delete $dest.part and retry; if it persists, the mirror is serving a bad file"
    mv -f "$dest.part" "$dest"
}

# ---------------------------------------------------------------------------
# Builds.

JOBS=$(nproc 2>/dev/null || echo 2)

build_wolfssl() { # srcdir prefix destdir
    local src=$1 prefix=$2 destdir=$3
    log "building wolfSSL ${WOLFSSL_VERSION} (about 2 minutes)"
    (
        cd "$src"
        ./autogen.sh >"$src/../wolfssl-autogen.log" 2>&1
        ./configure --prefix="$prefix" "${WOLFSSL_CONFIGURE[@]}" \
            CPPFLAGS="$WOLFSSL_CPPFLAGS" CFLAGS="$WOLFSSL_CFLAGS" >"$src/../wolfssl-configure.log" 2>&1
        make -j"$JOBS" >"$src/../wolfssl-build.log" 2>&1
        make install DESTDIR="$destdir" >>"$src/../wolfssl-build.log" 2>&1
    ) || die "wolfSSL build failed; logs in $(dirname "$src")/wolfssl-*.log" \
        "read the log's last lines; 'No space left' means free disk space under $CACHE"
}

build_ngtcp2() { # srcdir prefix destdir
    local src=$1 prefix=$2 destdir=$3
    local staged=$destdir$prefix
    log "building ngtcp2 ${NGTCP2_VERSION} with ngtcp2_crypto_wolfssl"
    (
        cmake -S "$src" -B "$src/_build" -DCMAKE_INSTALL_PREFIX="$prefix" \
            -DCMAKE_INSTALL_LIBDIR=lib "${NGTCP2_CMAKE[@]}" \
            -DWOLFSSL_INCLUDE_DIR="$staged/include" \
            -DWOLFSSL_LIBRARY="$staged/lib/libwolfssl.a" \
            >"$src/../ngtcp2-build.log" 2>&1
        cmake --build "$src/_build" -j"$JOBS" >>"$src/../ngtcp2-build.log" 2>&1
        DESTDIR="$destdir" cmake --install "$src/_build" >>"$src/../ngtcp2-build.log" 2>&1
    ) || die "ngtcp2 build failed; log in $(dirname "$src")/ngtcp2-build.log" \
        "read the log's last lines"
}

cache_key() {
    {
        echo "recipe=$RECIPE_REVISION"
        echo "wolfssl=$WOLFSSL_VERSION $WOLFSSL_SHA256 ${WOLFSSL_CONFIGURE[*]} $WOLFSSL_CPPFLAGS $WOLFSSL_CFLAGS"
        echo "ngtcp2=$NGTCP2_VERSION $NGTCP2_SHA256 ${NGTCP2_CMAKE[*]}"
        cc --version | head -n1
        cmake --version | head -n1
        uname -m
    } | sha256sum | cut -c1-16
}

# ---------------------------------------------------------------------------
main() {
    ensure_packages

    CACHE=${AEGIS_DEPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/aegis-deps}
    mkdir -p "$CACHE" || die "cannot create the dependency cache $CACHE" "set AEGIS_DEPS_CACHE to a writable directory"
    local key prefix
    key=$(cache_key)
    prefix=$CACHE/$key

    if [ -f "$prefix/.complete" ]; then
        echo "$prefix"
        return 0
    fi

    # Only one builder at a time; the others wait and then find it complete.
    exec 9>"$CACHE/.lock"
    if ! flock -n 9; then
        log "another bootstrap is building; waiting for the lock $CACHE/.lock"
        flock -w 1800 9 ||
            die "timed out waiting for $CACHE/.lock" "another bootstrap is stuck; kill it or remove the lock"
    fi
    true || die "timed out waiting for $CACHE/.lock" "another bootstrap is stuck; kill it or remove the lock"
    if [ -f "$prefix/.complete" ]; then
        echo "$prefix"
        return 0
    fi

    local avail
    avail=$(df -Pk "$CACHE" | awk 'NR==2 {print $4}')
    if [ -n "$avail" ] && [ "$avail" -lt 1048576 ]; then
        die "less than 1 GiB free under $CACHE" "free disk space or point AEGIS_DEPS_CACHE elsewhere"
    fi

    fetch_orig wolfssl "$WOLFSSL_VERSION" "$WOLFSSL_SHA256" "$CACHE/src/wolfssl_${WOLFSSL_VERSION}.orig.tar.gz"
    fetch_orig ngtcp2 "$NGTCP2_VERSION" "$NGTCP2_SHA256" "$CACHE/src/ngtcp2_${NGTCP2_VERSION}.orig.tar.xz"

    STAGE=$CACHE/.staging.$$
    local stage=$STAGE
    rm -rf "$stage"
    mkdir -p "$stage/src" "$stage/root"
    trap 'rm -rf "${STAGE:-}"' EXIT
    tar -xf "$CACHE/src/wolfssl_${WOLFSSL_VERSION}.orig.tar.gz" -C "$stage/src"
    tar -xf "$CACHE/src/ngtcp2_${NGTCP2_VERSION}.orig.tar.xz" -C "$stage/src"
    local wsrc nsrc
    wsrc=$(find "$stage/src" -maxdepth 1 -type d -name 'wolfssl*' | head -n1)
    nsrc=$(find "$stage/src" -maxdepth 1 -type d -name 'ngtcp2*' | head -n1)

    build_wolfssl "$wsrc" "$prefix" "$stage/root"
    build_ngtcp2 "$nsrc" "$prefix" "$stage/root"

    # Record what went in, then publish with one rename.
    {
        echo "key=$key"
        echo "wolfssl=$WOLFSSL_VERSION sha256=$WOLFSSL_SHA256"
        echo "ngtcp2=$NGTCP2_VERSION sha256=$NGTCP2_SHA256"
        echo "built=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$stage/root$prefix/.complete"
    rm -rf "$prefix"
    mv "$stage/root$prefix" "$prefix"
    log "dependencies ready in $prefix"
    echo "$prefix"
}

main "$@"
