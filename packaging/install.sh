#!/usr/bin/env bash
# Installs edgeinfer into $DESTDIR: what `make install` runs, and what `make
# deb` stages the package from (PREFIX=/usr). The Makefile sets every variable
# below; packaging/README.md describes the layout.
#
#   SRC_BIN     edgeinferd and the edgeinfer-<task> plugins to install
#   PLUGINS     the plugin tasks ("classify detect ...")
#   MODELS      the repository lenet5/1 (the default config's demo model) comes from
#   BINDIR SBINDIR PLUGINDIR DATADIR DOCDIR SYSCONFDIR STATEDIR UNITDIR SYSUSERSDIR
#   TENSORFLOW  build:   the plugins as `make build` linked them (RUNPATH: TF_LIBDIR)
#               outside: plugins linked with RUNPATH $PLUGINDIR/tensorflow, left empty
#                        (edgeinfer-fetch-tensorflow fills it)
#               inside:  the same, with TensorFlow's two libraries copied there
#   TF_LIBDIR   the TensorFlow the plugins were linked against (tensorflow.pc's libdir)
#   SEED_STATE  yes: also create $STATEDIR (models/ with lenet5, inbox/), keeping
#               what is there; no: the package's postinst does it
set -euo pipefail

: "${DESTDIR=}" "${SRC_BIN:?}" "${PLUGINS:?}" "${MODELS:?}" "${BINDIR:?}" "${SBINDIR:?}" "${PLUGINDIR:?}"
: "${DATADIR:?}" "${DOCDIR:?}" "${SYSCONFDIR:?}" "${STATEDIR:?}" "${UNITDIR:?}" "${SYSUSERSDIR:?}"
: "${TENSORFLOW:?}" "${TF_LIBDIR=}" "${SEED_STATE:?}"
here=$(cd "$(dirname "$0")/.." && pwd)
D=$DESTDIR
die() { echo "install: $*" >&2; exit 1; }

case $TENSORFLOW in build | outside | inside) ;; *) die "TENSORFLOW=$TENSORFLOW: build, outside or inside" ;; esac
for b in edgeinferd $(for p in $PLUGINS; do echo "edgeinfer-$p"; done); do
  [ -x "$SRC_BIN/$b" ] || die "$SRC_BIN/$b is missing: run make build first"
done
tfdir=$PLUGINDIR/tensorflow
if [ "$TENSORFLOW" != build ]; then
  [ -d "$TF_LIBDIR" ] || die "TF_LIBDIR='$TF_LIBDIR': not the TensorFlow the plugins were built against (make deps writes its tensorflow.pc)"
  # The plugins find TensorFlow through their RUNPATH alone: it must be exactly
  # where this install puts (or leaves room for) the libraries. An absolute
  # path, not $ORIGIN: edgeinferd copies a plugin into /tmp before running it.
  for p in $PLUGINS; do
    rp=$(readelf -d "$SRC_BIN/edgeinfer-$p" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]$/\1/p')
    [ "$rp" = "$tfdir" ] || die "$SRC_BIN/edgeinfer-$p: RUNPATH is '$rp', want $tfdir"
  done
fi

install -d "$D$BINDIR" "$D$PLUGINDIR" "$D$UNITDIR" "$D$SYSUSERSDIR" "$D$DOCDIR" "$D$DATADIR" "$D$SYSCONFDIR/edgeinfer"
install -m 0755 "$SRC_BIN/edgeinferd" "$D$BINDIR/edgeinferd"
for p in $PLUGINS; do
  install -m 0755 "$SRC_BIN/edgeinfer-$p" "$D$PLUGINDIR/edgeinfer-$p"
done

# TensorFlow, and the script that fetches it (pinned to the wheel the plugins
# were built against: its tag, and its two libraries' sha256 from its RECORD).
if [ "$TENSORFLOW" != build ]; then
  install -d "$D$tfdir"
  if [ "$TENSORFLOW" = inside ]; then
    for l in libtensorflow_cc.so.2 libtensorflow_framework.so.2; do
      install -m 0644 "$TF_LIBDIR/$l" "$D$tfdir/$l"
    done
  fi
  distinfo=$(ls -d "$TF_LIBDIR"/../tensorflow_cpu-*.dist-info "$TF_LIBDIR"/../tensorflow-*.dist-info 2>/dev/null | head -n 1 || true)
  if [ -n "$distinfo" ]; then
    dist=$(sed -n 's/^Name: //p' "$distinfo/METADATA" | head -n 1)
    version=$(sed -n 's/^Version: //p' "$distinfo/METADATA" | head -n 1)
    tag=$(sed -n 's/^Tag: //p' "$distinfo/WHEEL" | head -n 1)
    sha() { sed -n "s|^tensorflow/$1,sha256=\([^,]*\),.*|\1|p" "$distinfo/RECORD"; }
    cc=$(sha libtensorflow_cc.so.2) fw=$(sha libtensorflow_framework.so.2)
    [ -n "$dist" ] && [ -n "$version" ] && [ -n "$tag" ] && [ -n "$cc" ] && [ -n "$fw" ] || die "$distinfo: no name, version, tag or library hashes"
    install -d "$D$SBINDIR"
    sed -e "s|@TF_DIST@|$dist|; s|@TF_VERSION@|$version|; s|@TF_TAG@|$tag|; s|@TF_SHA256_CC@|$cc|; s|@TF_SHA256_FW@|$fw|; s|@TF_DIR@|$tfdir|; s|@DOCDIR@|$DOCDIR|" \
      "$here/packaging/edgeinfer-fetch-tensorflow" > "$D$SBINDIR/edgeinfer-fetch-tensorflow"
    chmod 0755 "$D$SBINDIR/edgeinfer-fetch-tensorflow"
    ! grep -n '@[A-Z_]*@' "$D$SBINDIR/edgeinfer-fetch-tensorflow" || die "edgeinfer-fetch-tensorflow: a placeholder is left"
  else
    echo "install: no wheel metadata next to $TF_LIBDIR: edgeinfer-fetch-tensorflow not installed; put libtensorflow_cc.so.2 and libtensorflow_framework.so.2 in $tfdir yourself" >&2
  fi
fi

# The unit, from systemd/edgeinferd.service (the one source; its tests are in
# systemd/unit_test.go) with the paths of this install.
sed -e "s|/opt/edgeinfer/bin/edgeinferd|$BINDIR/edgeinferd|g" \
    -e "s|file:///opt/edgeinfer/README.md|file://$DOCDIR/README.md|g" \
    -e "s|systemd/README.md|$DOCDIR/systemd.md|g" \
    "$here/systemd/edgeinferd.service" > "$D$UNITDIR/edgeinferd.service"
chmod 0644 "$D$UNITDIR/edgeinferd.service"
! grep -n /opt/edgeinfer "$D$UNITDIR/edgeinferd.service" || die "edgeinferd.service still names /opt/edgeinfer"
grep -q "^ExecStart=$BINDIR/edgeinferd -config $SYSCONFDIR/edgeinfer/config.toml$" "$D$UNITDIR/edgeinferd.service" ||
  die "edgeinferd.service: ExecStart does not run $BINDIR/edgeinferd on $SYSCONFDIR/edgeinfer/config.toml"
install -m 0644 "$here/systemd/sysusers.d/edgeinfer.conf" "$D$SYSUSERSDIR/edgeinfer.conf"

# The default config: a pristine copy in $DATADIR, and $SYSCONFDIR's unless
# there is one (the package makes it a conffile instead).
sed -e "s|\"/usr/lib/edgeinfer\"|\"$PLUGINDIR\"|" -e "s|/usr/share/doc/edgeinfer|$DOCDIR|g" \
    -e "s|\"/var/lib/edgeinfer/|\"$STATEDIR/|g" -e "s|/etc/edgeinfer/|$SYSCONFDIR/edgeinfer/|g" \
    "$here/packaging/config.toml" > "$D$DATADIR/config.toml"
chmod 0644 "$D$DATADIR/config.toml"
if [ -e "$D$SYSCONFDIR/edgeinfer/config.toml" ]; then
  echo "install: kept $D$SYSCONFDIR/edgeinfer/config.toml; the default is $D$DATADIR/config.toml"
else
  install -m 0644 "$D$DATADIR/config.toml" "$D$SYSCONFDIR/edgeinfer/config.toml"
fi

# The demo model, the seed of the repository in $STATEDIR.
[ -f "$MODELS/lenet5/1/saved_model.pb" ] || die "$MODELS/lenet5/1 is missing: run make models first"
rm -rf "$D$DATADIR/models"
install -d "$D$DATADIR/models/lenet5"
cp -R "$MODELS/lenet5/1" "$D$DATADIR/models/lenet5/1"
chmod -R u=rwX,go=rX "$D$DATADIR/models"
if [ "$SEED_STATE" = yes ]; then
  install -d "$D$STATEDIR/models" "$D$STATEDIR/inbox"
  [ -e "$D$STATEDIR/models/lenet5" ] || cp -R "$D$DATADIR/models/lenet5" "$D$STATEDIR/models/lenet5"
fi

install -m 0644 "$here/README.md" "$D$DOCDIR/README.md"
install -m 0644 "$here/systemd/README.md" "$D$DOCDIR/systemd.md"
install -m 0644 "$here/packaging/README.md" "$D$DOCDIR/packaging.md"
