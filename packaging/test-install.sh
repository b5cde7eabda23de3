#!/usr/bin/env bash
# `make test-install`: `make install DESTDIR=<tmp> PREFIX=/usr` into a temporary
# root, as any user: the files are where packaging/README.md says, the unit
# passes systemd-analyze verify and security once it names the binary in the
# root, systemd-sysusers finds the user there, the default config passes
# edgeinferd -check (its model loaded and validated in the installed plugin),
# a second install keeps an edited config, and uninstall leaves only the
# config and the state.
set -euo pipefail
cd "$(dirname "$0")/.."
# A make of its own: none of the calling make's flags or command-line variables.
make() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory TENSORFLOW=build "$@"; }
root=$(mktemp -d "${TMPDIR:-/tmp}/edgeinfer-install.XXXXXX")
trap 'rm -rf "$root"' EXIT
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }
ok() { echo "test-install: ok: $*"; }

make install DESTDIR="$root" PREFIX=/usr >"$root.log" 2>&1 || { cat "$root.log"; rm -f "$root.log"; fail "make install"; }
rm -f "$root.log"

want=(
  usr/bin/edgeinferd
  usr/lib/edgeinfer/edgeinfer-classify usr/lib/edgeinfer/edgeinfer-detect usr/lib/edgeinfer/edgeinfer-segment
  usr/lib/edgeinfer/edgeinfer-embed usr/lib/edgeinfer/edgeinfer-video
  usr/lib/systemd/system/edgeinferd.service usr/lib/sysusers.d/edgeinfer.conf
  etc/edgeinfer/config.toml usr/share/edgeinfer/config.toml
  usr/share/edgeinfer/models/lenet5/1/saved_model.pb usr/share/edgeinfer/models/lenet5/1/edgeinfer.toml
  var/lib/edgeinfer/models/lenet5/1/saved_model.pb var/lib/edgeinfer/inbox
  usr/share/doc/edgeinfer/README.md usr/share/doc/edgeinfer/systemd.md usr/share/doc/edgeinfer/packaging.md
)
for f in "${want[@]}"; do [ -e "$root/$f" ] || fail "/$f was not installed"; done
for f in usr/bin/edgeinferd usr/lib/edgeinfer/edgeinfer-classify; do [ -x "$root/$f" ] || fail "/$f is not executable"; done
[ "$(stat -c %a "$root/usr/lib/systemd/system/edgeinferd.service")" = 644 ] || fail "the unit is not 0644"
ok "layout: $(cd "$root" && find . -type f | wc -l) files, as listed in packaging/README.md"

unit=$root/usr/lib/systemd/system/edgeinferd.service
grep -qx 'ExecStart=/usr/bin/edgeinferd -config /etc/edgeinfer/config.toml' "$unit" || fail "ExecStart: $(grep ^ExecStart "$unit")"
grep -qx 'Documentation=file:///usr/share/doc/edgeinfer/README.md' "$unit" || fail "Documentation: $(grep ^Documentation "$unit")"
! grep -n /opt/edgeinfer "$unit" || fail "the unit still names /opt/edgeinfer"
# verify needs ExecStart's binary to exist: the copy names the one in the root.
sed "s|^ExecStart=/usr/bin/edgeinferd |ExecStart=$root/usr/bin/edgeinferd |" "$unit" >"$root/edgeinferd.service"
out=$(systemd-analyze verify --man=no "$root/edgeinferd.service" 2>&1) && [ -z "$out" ] || fail "systemd-analyze verify: $out"
ok "systemd-analyze verify: the installed unit (ExecStart=/usr/bin/edgeinferd) passes"
sec=$(systemd-analyze security --offline=true --threshold=30 "$unit" 2>&1) || fail "systemd-analyze security: $sec"
ok "systemd-analyze security --offline=true: $(grep -o 'Overall exposure level.*' <<<"$sec")"

mkdir -p "$root/etc"
sysusers=$(systemd-sysusers --root="$root" --dry-run 2>&1)
grep -q "Creating user 'edgeinfer'" <<<"$sysusers" || fail "systemd-sysusers --root does not find the user: $sysusers"
ok "systemd-sysusers --root finds /usr/lib/sysusers.d/edgeinfer.conf"

# The default config, its absolute paths moved into the root.
sed -e "s|\"/usr/lib/edgeinfer\"|\"$root/usr/lib/edgeinfer\"|" -e "s|\"/var/lib/edgeinfer/|\"$root/var/lib/edgeinfer/|" \
  "$root/etc/edgeinfer/config.toml" >"$root/config.toml"
[ "$(grep -c "$root" "$root/config.toml")" = 3 ] || fail "the config's plugin_dir, repository and inbox were not all rewritten"
"$root/usr/bin/edgeinferd" -check -config-only -config "$root/config.toml" || fail "edgeinferd -check -config-only"
ok "edgeinferd -check -config-only on the default config"
"$root/usr/bin/edgeinferd" -check -config "$root/config.toml" || fail "edgeinferd -check"
ok "edgeinferd -check on the default config: lenet5 loaded and validated in the installed plugin"

echo '# edited' >>"$root/etc/edgeinfer/config.toml"
out=$(make install DESTDIR="$root" PREFIX=/usr 2>&1) || fail "second make install: $out"
tail -n 1 "$root/etc/edgeinfer/config.toml" | grep -qx '# edited' || fail "a second make install overwrote /etc/edgeinfer/config.toml"
grep -q 'kept .*/etc/edgeinfer/config.toml' <<<"$out" || fail "a second make install did not say it kept the config"
ok "a second make install keeps an edited /etc/edgeinfer/config.toml"

make uninstall DESTDIR="$root" PREFIX=/usr >/dev/null 2>&1 || fail "make uninstall"
rm -f "$root/edgeinferd.service" "$root/config.toml"
left=$(cd "$root" && find . -type f | grep -v -e '^./etc/edgeinfer/' -e '^./var/lib/edgeinfer/' || true)
[ -z "$left" ] || fail "make uninstall left: $left"
[ -e "$root/etc/edgeinfer/config.toml" ] && [ -e "$root/var/lib/edgeinfer/models/lenet5/1/saved_model.pb" ] || fail "make uninstall took the config or the state"
ok "make uninstall removes the rest and keeps /etc/edgeinfer and /var/lib/edgeinfer"
