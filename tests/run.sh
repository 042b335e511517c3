#!/usr/bin/env bash
# The whole test suite, from a bare Debian 12 with Rust: installs the real programs
# the integration tests and benches drive, then fmt, clippy and every test.
# Run as root (apt, network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have sipp       || missing+=(sip-tester)
have kamailio   || missing+=(kamailio)
have nginx      || missing+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
have keepalived || missing+=(keepalived)
have nft        || missing+=(nftables)
have ip         || missing+=(iproute2)
have tcpdump    || missing+=(tcpdump)
have tshark     || missing+=(tshark)
[ -x /usr/bin/kill ] || missing+=(procps)
have curl       || missing+=(curl)
have systemd-analyze || missing+=(systemd)
have promtool   || missing+=(prometheus)
# cargo links with the C compiler; cargo-deb --strip runs strip.
have cc         || missing+=(build-essential)
have strip      || missing+=(binutils)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # policy-rc.d keeps the packages' services (kamailio, nginx) from starting and
    # taking ports: the tests start their own instances.
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # tshark's wireshark-common asks whether non-root users may capture: answer no,
    # without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | $SUDO debconf-set-selections 2>/dev/null || true
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# cargo-deb builds the .deb that tests/deploy.rs inspects (~1.5 min to install).
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked --version 3.8.0
# cargo-machete fails the suite on a dependency that nothing uses (~1 min to install).
command -v cargo-machete >/dev/null 2>&1 || cargo install cargo-machete --locked --version 0.9.2
for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c" || true
done

# OpenSIPS (not packaged for Debian 12): built from the upstream source in ../shared/opensips
# (build.sh: ~2 min on 2 cores, a no-op when already built; the build packages it needs are
# installed here first), or an existing
# build named by OPENSIPS_PREFIX. The tests/opensips_*.rs tests run it; without it they pass
# as skipped.
OPENSIPS_SRC="$(cd .. && pwd)/shared/opensips"
if [ -n "${OPENSIPS_PREFIX:-}" ] && [ -x "$OPENSIPS_PREFIX/sbin/opensips" ]; then
    echo "== OpenSIPS: using the build in $OPENSIPS_PREFIX"
elif [ -f "$OPENSIPS_SRC/build.sh" ]; then
    OPENSIPS_PREFIX="${OPENSIPS_PREFIX:-/opt/opensips}"
    echo "== OpenSIPS: building $OPENSIPS_SRC into $OPENSIPS_PREFIX"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    if ! "$OPENSIPS_PREFIX/sbin/opensips" -V >/dev/null 2>&1; then
        # build.sh itself installs only the compilers; the auth/uac_auth modules need the
        # OpenSSL headers, `make install` builds osipsconfig against ncurses.
        need=()
        for p in build-essential bison flex pkg-config libssl-dev libncurses-dev; do
            dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
        done
        if [ "${#need[@]}" -gt 0 ]; then
            echo "== installing OpenSIPS build dependencies: ${need[*]}"
            $SUDO apt-get update -qq
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
        fi
    fi
    $SUDO bash "$OPENSIPS_SRC/build.sh" "$OPENSIPS_PREFIX"
else
    unset OPENSIPS_PREFIX
    echo "== OpenSIPS tests SKIPPED: no ../shared/opensips (with build.sh) next to the repo and no OPENSIPS_PREFIX build; put the OpenSIPS source + build.sh there or set OPENSIPS_PREFIX=/path/to/build to enable them"
fi
# The example config loads auth_db (route(auth)), which build.sh leaves out: built here
# from the same source tarball (~10 s), once, when the build lacks it.
if [ -n "${OPENSIPS_PREFIX:-}" ]; then
    mods="$OPENSIPS_PREFIX/lib64/opensips/modules"
    tarball=$(ls "$OPENSIPS_SRC"/opensips-*.tar.gz 2>/dev/null | head -1 || true)
    if [ ! -f "$mods/auth_db.so" ] && [ -n "$tarball" ]; then
        ver=$(basename "$tarball" .tar.gz); ver=${ver#opensips-}
        if "$OPENSIPS_PREFIX/sbin/opensips" -V 2>/dev/null | grep -q "opensips $ver"; then
            echo "== OpenSIPS: building the auth_db module from $tarball"
            SUDO=""
            [ "$(id -u)" -eq 0 ] || SUDO="sudo"
            src=$(mktemp -d)
            tar -xzf "$tarball" -C "$src"
            make -C "$src" modules=modules/auth_db modules >/dev/null
            $SUDO install -m 755 "$src/modules/auth_db/auth_db.so" "$mods/"
            rm -rf "$src"
        fi
    fi
fi
if [ -n "${OPENSIPS_PREFIX:-}" ]; then export OPENSIPS_PREFIX; fi

echo "== cargo fmt --all --check"
cargo fmt --all --check
echo "== cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo machete (unused dependencies)"
cargo machete
echo "== cargo test"
cargo test --no-fail-fast -- --test-threads="${SIPFRONT_TEST_THREADS:-4}"
echo "== all tests passed"
