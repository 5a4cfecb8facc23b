#!/usr/bin/env bash
# Builds the Debian package, installs it with dpkg -i, checks what an
# operator relies on (files, owners and modes, the shunt user, the unit,
# `shunt check` of the installed config as the service user), then purges
# it. Needs root; leaves the host as it found it.
set -euo pipefail
# Pipelines end in a grep that reads all its input (no -q): with pipefail, a
# grep -q that exits early kills the writer with SIGPIPE and fails the check.
cd "$(dirname "$0")/.."

fail() { echo "test-package: FAIL: $*" >&2; exit 1; }
if dpkg-query -W -f='${Status}' shunt 2>/dev/null | grep "install ok installed" >/dev/null; then
    fail "a shunt package is installed on this host already; not touching it"
fi

deb=$(bash scripts/package.sh "$@" | tail -1)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ "$deb" = "target/debian/shunt_${version}_$(dpkg --print-architecture).deb" ] || fail "package name $deb"
dpkg-deb --field "$deb" Package Version | grep -x "Version: $version" >/dev/null || fail "version field"
dpkg-deb --contents "$deb" | grep '\./usr/share/man/man1/shunt.1.gz' >/dev/null || fail "no man page"

cleanup() { dpkg --purge shunt >/dev/null 2>&1 || true; }
trap cleanup EXIT
dpkg -i "$deb" >/dev/null

# The service user and group, and a config it can read but not write.
getent passwd shunt >/dev/null || fail "no user shunt"
getent group shunt >/dev/null || fail "no group shunt"
[ "$(stat -c '%U:%G %a' /etc/shunt/shunt.toml)" = "root:shunt 640" ] || fail "config is $(stat -c '%U:%G %a' /etc/shunt/shunt.toml)"
[ "$(stat -c '%U:%G %a' /etc/shunt)" = "root:shunt 750" ] || fail "/etc/shunt is $(stat -c '%U:%G %a' /etc/shunt)"
grep -qx '/etc/shunt/shunt.toml' /var/lib/dpkg/info/shunt.conffiles || fail "config is not a conffile"
grep -q '^control_group = "shunt"' /etc/shunt/shunt.toml || fail "socket not opened to group shunt"

# `shunt check` of the installed config, as the service user (no root).
out=$(runuser -u shunt -- /usr/bin/shunt check --offline --config /etc/shunt/shunt.toml) || fail "check as shunt: $out"
echo "$out" | grep "/etc/shunt/shunt.toml: ok" >/dev/null || fail "check said: $out"
# Anyone else is refused the file, with the path in the error.
if out=$(runuser -u nobody -- /usr/bin/shunt check --offline --config /etc/shunt/shunt.toml 2>&1); then
    fail "nobody could read the config"
fi
echo "$out" | grep "cannot read config /etc/shunt/shunt.toml: Permission denied" >/dev/null || fail "nobody got: $out"

# The unit as installed: the packaged binary, notify, reload = planned restart through the CLI.
unit=/lib/systemd/system/shunt.service
grep -qx 'Type=notify' $unit || fail "unit type"
grep -qx 'ExecStart=/usr/bin/shunt run --config /etc/shunt/shunt.toml --state-dir /run/shunt/state' $unit || fail "unit ExecStart"
grep -qx 'ExecReload=/usr/bin/shunt restart --socket /run/shunt/control.sock' $unit || fail "unit ExecReload"
grep -q '^WatchdogSec=' $unit || fail "unit watchdog"
if command -v systemd-analyze >/dev/null; then
    # Only this unit's own findings count (the host may lack network-online.target).
    if systemd-analyze verify $unit 2>&1 | grep "shunt.service" | grep -v "network-online"; then
        fail "systemd-analyze verify found problems"
    fi
fi
/usr/bin/shunt --version | grep "^shunt $version (commit " >/dev/null || fail "version"
[ -s /usr/share/bash-completion/completions/shunt ] || fail "bash completion"
bash -c 'source /usr/share/bash-completion/completions/shunt && complete -p shunt' >/dev/null || fail "bash completion does not load"
[ -s /usr/share/zsh/vendor-completions/_shunt ] || fail "zsh completion"
[ -s /usr/share/fish/vendor_completions.d/shunt.fish ] || fail "fish completion"
zcat /usr/share/man/man1/shunt.1.gz | grep '^\.TH shunt 1' >/dev/null || fail "man page"

# Remove keeps the conffile, purge takes it and the user away.
dpkg --remove shunt >/dev/null
[ ! -e /usr/bin/shunt ] || fail "binary left after remove"
[ -e /etc/shunt/shunt.toml ] || fail "conffile gone on remove"
dpkg --purge shunt >/dev/null
[ ! -e /etc/shunt/shunt.toml ] || fail "conffile left after purge"
! getent passwd shunt >/dev/null || fail "user shunt left after purge"
trap - EXIT
echo "test-package: ok ($deb)"
