#!/usr/bin/env bash
# `make test-deb`: installs the edgeinfer .deb with dpkg on this machine (root;
# no running systemd needed) and checks what the package promises, then purges
# it and removes the user the purge leaves (Debian keeps system users), so the
# machine is as it was, also when a check fails. It refuses to run where
# edgeinfer is installed or has left anything.
#
#   packaging/test-deb.sh build/edgeinfer_<version>_<arch>.deb <tensorflow libdir>
#
# <tensorflow libdir> (tensorflow.pc's) holds the libraries the plugins were
# built against; the test hard-links (or copies) them into
# /usr/lib/edgeinfer/tensorflow for a moment to run the default config's model
# in the packaged plugin. Not a symbolic link: the edgeinfer user may not be
# able to enter the checkout (a clone in a private temporary folder).
set -euo pipefail
deb=$(readlink -f "$1") tflib=$2
pkg=edgeinfer user=edgeinfer unit=edgeinferd.service
unitfile=/usr/lib/systemd/system/$unit
wants=/etc/systemd/system/multi-user.target.wants/$unit
dsh=/var/lib/systemd/deb-systemd-helper-enabled
tfdir=/usr/lib/edgeinfer/tensorflow
state=/var/lib/edgeinfer
libs=(libtensorflow_cc.so.2 libtensorflow_framework.so.2)

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
ok() { echo "test-deb: ok: $*"; }
status() { dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null | tr -d ' ' || true; }
owner() { stat -c %U:%G "$1"; }

[ "$(id -u)" = 0 ] || fail "run as root (make test-deb uses sudo)"
[ -f "$deb" ] || fail "$deb: no such file"
# Not on a machine where edgeinfer is, or was, installed: the purge would take it.
case $(status) in "" | un) ;; *) fail "package $pkg is on this machine ($(status)): not touching it" ;; esac
for p in /etc/edgeinfer "$state" /usr/lib/edgeinfer /usr/share/edgeinfer "$wants" "$dsh/$unit.dsh-also"; do
  [ ! -e "$p" ] && [ ! -L "$p" ] || fail "$p exists: not touching an edgeinfer installation"
done
! getent passwd "$user" >/dev/null && ! getent group "$user" >/dev/null || fail "user or group $user exists: not touching it"

# The backups useradd and userdel leave (/etc/passwd- ...) are put back too.
backup=$(mktemp -d)
for f in passwd group shadow gshadow; do [ ! -e "/etc/$f-" ] || cp -p "/etc/$f-" "$backup/"; done
cleanup() {
  for l in "${libs[@]}"; do rm -f "$tfdir/$l"; done # the test put them there (nothing was, checked above)
  case $(status) in "" | un) ;; *) dpkg --purge "$pkg" >/dev/null 2>&1 || true ;; esac
  if getent passwd "$user" >/dev/null; then userdel "$user" || true; fi
  if getent group "$user" >/dev/null; then groupdel "$user" || true; fi
  rm -rf "$state" # it was not there before the test (checked above)
  for f in passwd group shadow gshadow; do
    if [ -e "$backup/$f-" ]; then cp -p "$backup/$f-" "/etc/$f-"; else rm -f "/etc/$f-"; fi
  done
  rm -rf "$backup"
}
trap cleanup EXIT

echo "test-deb: $(basename "$deb"), $(stat -c %s "$deb") bytes"
ctl=$(mktemp -d) && dpkg-deb -e "$deb" "$ctl"
[ "$(cat "$ctl/conffiles")" = /etc/edgeinfer/config.toml ] || fail "conffiles in the .deb: $(cat "$ctl/conffiles")"
! grep -En '(systemctl|deb-systemd-invoke)[^#]*[^-]\b(start|restart)\b' "$ctl/postinst" || fail "postinst starts the service"
rm -rf "$ctl"

# 1. Install.
echo "test-deb: dpkg -i $(basename "$deb")"
dpkg -i "$deb" </dev/null 2>&1 | sed 's/^/  | /' || fail "dpkg -i"
[ "$(status)" = ii ] || fail "dpkg status $(status)"
ok "installed: $(dpkg-query -W -f='${Package} ${Version} ${Architecture}, ${Installed-Size} KiB' $pkg)"

conf=$(dpkg-query -W -f='${Conffiles}' $pkg)
grep -Eq '^ /etc/edgeinfer/config.toml [0-9a-f]{32}$' <<<"$conf" || fail "conffiles: $conf"
ok "conffile:$conf"

entry=$(getent passwd "$user") || fail "no user $user"
[ "$(cut -d: -f6 <<<"$entry")" = "$state" ] || fail "home of $user: $entry"
id -nG "$user" | grep -qw video || fail "$user is not in group video: $(id -nG "$user")"
ok "user: $entry; groups: $(id -nG "$user")"

for p in "$state" "$state/models" "$state/inbox" "$state/models/lenet5/1/saved_model.pb"; do
  [ "$(owner "$p")" = "$user:$user" ] || fail "$p belongs to $(owner "$p")"
done
ok "state: $state, models/lenet5/1 and inbox/ belong to $user"

[ -L "$wants" ] && [ "$(readlink -f "$wants")" = "$(readlink -f "$unitfile")" ] || fail "not enabled: $wants"
[ "$(systemctl is-enabled "$unit" 2>&1)" = enabled ] || fail "systemctl is-enabled: $(systemctl is-enabled "$unit" 2>&1)"
ok "enabled: $wants -> $(readlink "$wants")"
! pgrep -u "$user" >/dev/null || fail "processes of $user are running: $(pgrep -a -u "$user")"
ok "not started: no process of $user"

out=$(systemd-analyze verify --man=no "$unitfile" 2>&1) && [ -z "$out" ] || fail "systemd-analyze verify $unitfile: $out"
ok "systemd-analyze verify $unitfile: nothing to say"
sec=$(systemd-analyze security --offline=true --threshold=30 "$unitfile" 2>&1) || fail "systemd-analyze security: $sec"
ok "systemd-analyze security --offline=true: $(grep -o 'Overall exposure level.*' <<<"$sec")"

for p in classify detect segment embed video; do
  rp=$(readelf -d "/usr/lib/edgeinfer/edgeinfer-$p" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]$/\1/p')
  [ "$rp" = "$tfdir" ] || fail "edgeinfer-$p RUNPATH '$rp'"
done
! readelf -d /usr/bin/edgeinferd | grep -q tensorflow || fail "edgeinferd links TensorFlow"
ok "RUNPATH of the 5 plugins: $tfdir; edgeinferd needs no TensorFlow"

/usr/bin/edgeinferd -check -config-only -config /etc/edgeinfer/config.toml | sed 's/^/  | /' || fail "edgeinferd -check -config-only"
ok "edgeinferd -check -config-only -config /etc/edgeinfer/config.toml"

# 2. TensorFlow: missing until fetched; a wrong wheel is refused; the right
# libraries (the build's, linked in for the test) load the model as the service would.
! edgeinfer-fetch-tensorflow --check >/dev/null 2>&1 || fail "edgeinfer-fetch-tensorflow --check passes with no libraries"
wheel=$(mktemp --suffix=.whl)
python3 -c 'import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for n in ("libtensorflow_cc.so.2", "libtensorflow_framework.so.2"):
        z.writestr("tensorflow/" + n, b"not this one")' "$wheel"
out=$(edgeinfer-fetch-tensorflow --wheel "$wheel" 2>&1) && fail "a wheel with other libraries was taken: $out"
rm -f "$wheel"
[ -z "$(ls -A "$tfdir")" ] || fail "a refused wheel left files in $tfdir: $(ls -A "$tfdir")"
ok "edgeinfer-fetch-tensorflow refuses other libraries: ${out##*: }"
for l in "${libs[@]}"; do ln "$tflib/$l" "$tfdir/$l" 2>/dev/null || cp "$tflib/$l" "$tfdir/$l"; done
edgeinfer-fetch-tensorflow --check | sed 's/^/  | /' || fail "edgeinfer-fetch-tensorflow --check: the build's libraries are not the pinned wheel's"
runuser -u "$user" -- env TF_CPP_MIN_LOG_LEVEL=2 /usr/bin/edgeinferd -check -config /etc/edgeinfer/config.toml 2>&1 | sed 's/^/  | /' || fail "edgeinferd -check as $user"
ok "edgeinferd -check as $user: lenet5 loaded in the packaged plugin through its RUNPATH and validated"

# What systemctl start would run, short of systemd: edgeinferd as edgeinfer in
# /var/lib/edgeinfer on the default config (its broker and HTTP ports moved to
# free ones, so that nothing else on the machine is in the way); a digit
# dropped into the inbox is classified and moved to inbox/done.
run=$(mktemp -d) && chown "$user:$user" "$run"
sed -e 's|^listen = "127.0.0.1:1884"|listen = "127.0.0.1:0"|' -e 's|^listen = "127.0.0.1:9470"|listen = "127.0.0.1:0"|' \
  /etc/edgeinfer/config.toml >"$run/config.toml"
[ "$(grep -c '^listen = "127.0.0.1:0"' "$run/config.toml")" = 2 ] || fail "the config's two listen addresses were not moved"
(cd "$state" && exec setpriv --reuid="$user" --regid="$user" --init-groups env TMPDIR="$run" TF_CPP_MIN_LOG_LEVEL=2 \
  /usr/bin/edgeinferd -config "$run/config.toml") >"$run/log" 2>&1 &
daemon=$!
cp "$(dirname "$0")/../testdata/digits/digit-000.png" "$state/inbox/"
for _ in $(seq 120); do [ ! -e "$state/inbox/done/digit-000.png" ] && kill -0 $daemon 2>/dev/null || break; sleep 0.5; done
kill -TERM $daemon 2>/dev/null || true
wait $daemon && rc=0 || rc=$?
[ -e "$state/inbox/done/digit-000.png" ] && [ $rc = 0 ] || { sed 's/^/  | /' "$run/log"; fail "edgeinferd as $user did not classify a digit and stop cleanly (exit $rc)"; }
grep -F 'serving (pid' "$run/log" | sed 's/^/  | /'
rm -rf "$run" "$state/inbox/done"
ok "edgeinferd as $user on the default config: a digit classified (moved to inbox/done), SIGTERM exit 0"

# 3. Reinstall over an edited config and a disabled unit: both are kept.
echo '# edited' >>/etc/edgeinfer/config.toml
systemctl disable "$unit" >/dev/null 2>&1 || fail "systemctl disable"
[ ! -e "$wants" ] || fail "systemctl disable left $wants"
dpkg -i "$deb" </dev/null >/dev/null 2>&1 || fail "dpkg -i again"
[ "$(tail -n 1 /etc/edgeinfer/config.toml)" = '# edited' ] || fail "reinstalling replaced the edited config"
[ ! -e "$wants" ] || fail "reinstalling enabled the unit the administrator disabled"
systemctl enable "$unit" >/dev/null 2>&1 || fail "systemctl enable"
ok "reinstalled: the edited config and the disabled unit were kept"

# 4. Remove: the files go, the config and state stay.
touch "$state/inbox/photo.png" # an input of the administrator's
dpkg -r "$pkg" </dev/null 2>&1 | sed 's/^/  | /' || fail "dpkg -r"
[ "$(status)" = rc ] || fail "after dpkg -r: status $(status)"
for p in /usr/bin/edgeinferd "$unitfile" /usr/lib/edgeinfer/edgeinfer-classify /usr/share/edgeinfer; do [ ! -e "$p" ] || fail "dpkg -r left $p"; done
[ -f /etc/edgeinfer/config.toml ] && [ -f "$state/models/lenet5/1/saved_model.pb" ] || fail "dpkg -r took the config or the state"
for l in "${libs[@]}"; do [ -f "$tfdir/$l" ] || fail "dpkg -r took $tfdir/$l"; done
ok "removed: the files went; /etc/edgeinfer/config.toml, $state and TensorFlow in $tfdir stayed"

# 5. Purge: the config, the enablement and the unchanged demo model go; the
# administrator's input and the user stay (Debian's convention).
dpkg -P "$pkg" </dev/null 2>&1 | sed 's/^/  | /' || fail "dpkg -P"
case $(status) in "" | un) ;; *) fail "after dpkg -P: status $(status)" ;; esac
for p in /etc/edgeinfer "$wants" "$dsh/$unit.dsh-also" "$state/models" "$state/.seeded.md5sums" /usr/lib/edgeinfer; do
  [ ! -e "$p" ] && [ ! -L "$p" ] || fail "dpkg -P left $p"
done
[ -f "$state/inbox/photo.png" ] || fail "dpkg -P took the administrator's input"
getent passwd "$user" >/dev/null || fail "dpkg -P removed the user (Debian keeps system users)"
ok "purged: config, enablement, TensorFlow and demo model gone; $state/inbox/photo.png and user $user kept"

# 6. A demo model the administrator changed survives a purge too.
rm -rf "$state"
dpkg -i "$deb" </dev/null >/dev/null 2>&1 || fail "dpkg -i (second time)"
echo >>"$state/models/lenet5/1/edgeinfer.toml"
dpkg -P "$pkg" </dev/null >/dev/null 2>&1 || fail "dpkg -P (second time)"
[ -f "$state/models/lenet5/1/saved_model.pb" ] || fail "dpkg -P removed a demo model that was changed"
ok "purged again: a changed demo model is kept"

trap - EXIT
cleanup
for p in /etc/edgeinfer "$state" /usr/lib/edgeinfer /usr/share/edgeinfer /usr/share/doc/edgeinfer "$unitfile" "$wants" "$dsh/$unit.dsh-also"; do
  [ ! -e "$p" ] && [ ! -L "$p" ] || fail "left behind: $p"
done
! getent passwd "$user" >/dev/null && ! getent group "$user" >/dev/null || fail "left behind: user or group $user"
! grep -qw "$user" /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/passwd- /etc/group- /etc/shadow- /etc/gshadow- 2>/dev/null ||
  fail "left behind: $user in $(grep -lw "$user" /etc/passwd /etc/group /etc/shadow /etc/gshadow /etc/passwd- /etc/group- /etc/shadow- /etc/gshadow- 2>/dev/null | xargs)"
ok "the machine is as it was: no package, files, user or group"
