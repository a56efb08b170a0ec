#!/bin/sh
# Build hsagent_<version>_all.deb with dpkg-deb alone (no debhelper).
#   packaging/build-deb.sh [VERSION]
# VERSION defaults to pyproject.toml's; the .deb goes to $OUTDIR (default: dist/ in the tree).
# Prints the path of the package it made.
set -eu

TOP=$(cd "$(dirname "$0")/.." && pwd)
HERE="$TOP/packaging/debian"
VERSION=${1:-$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$TOP/pyproject.toml")}
OUTDIR=${OUTDIR:-$TOP/dist}
[ -n "$VERSION" ] || { echo "build-deb.sh: no version in pyproject.toml" >&2; exit 1; }

ROOT=$(mktemp -d)
chmod 0755 "$ROOT"  # becomes the mode of "/" in the archive
trap 'rm -rf "$ROOT"' EXIT

# The Python package: sources only; postinst byte-compiles with py3compile.
SITE="$ROOT/usr/lib/python3/dist-packages"
mkdir -p "$SITE"
(cd "$TOP" && find hsagent -name '*.py' -type f) | while read -r source; do
	install -D -m 0644 "$TOP/$source" "$SITE/$source"
done

install -D -m 0755 "$HERE/launcher" "$ROOT/usr/bin/hsagent"
install -D -m 0755 "$HERE/launcher-acld" "$ROOT/usr/bin/hsagent-acld"
install -D -m 0644 "$TOP/etc/hsagent-acld.conf" "$ROOT/etc/hsagent-acld.conf"
install -D -m 0644 "$TOP/init/hsagent-acld.service" "$ROOT/lib/systemd/system/hsagent-acld.service"
install -D -m 0644 "$TOP/etc/hsagent.conf" "$ROOT/etc/hsagent.conf"
install -D -m 0644 "$HERE/default" "$ROOT/etc/default/hsagent"
install -D -m 0755 "$TOP/init/hsagent" "$ROOT/etc/init.d/hsagent"
install -D -m 0644 "$TOP/init/hsagent.service" "$ROOT/lib/systemd/system/hsagent.service"
install -D -m 0644 "$TOP/README.md" "$ROOT/usr/share/doc/hsagent/README.md"

mkdir -p "$ROOT/DEBIAN"
install -m 0644 "$HERE/conffiles" "$ROOT/DEBIAN/conffiles"
for script in postinst prerm postrm; do
	install -m 0755 "$HERE/$script" "$ROOT/DEBIAN/$script"
done
SIZE=$(du -k -s --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@INSTALLED_SIZE@/$SIZE/" "$HERE/control" \
	> "$ROOT/DEBIAN/control"

mkdir -p "$OUTDIR"
DEB="$OUTDIR/hsagent_${VERSION}_all.deb"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
