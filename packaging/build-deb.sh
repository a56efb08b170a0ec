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

# /usr/bin: one launcher per command of pyproject.toml's [project.scripts], from one template
mkdir -p "$ROOT/usr/bin"
sed -n '/^\[project\.scripts\]/,/^\[/s/^\([a-z-]*\) *= *"\([a-z.]*\):main"$/\1 \2/p' "$TOP/pyproject.toml" |
while read -r command module; do
	sed -e "s/@COMMAND@/$command/" -e "s/@MODULE@/$module/" "$HERE/launcher" > "$ROOT/usr/bin/$command"
	chmod 0755 "$ROOT/usr/bin/$command"
done
[ -x "$ROOT/usr/bin/hsagent" ] || { echo "build-deb.sh: no hsagent in pyproject.toml's [project.scripts]" >&2; exit 1; }
install -D -m 0644 "$TOP/etc/hsagent-acld.conf" "$ROOT/etc/hsagent-acld.conf"
install -D -m 0644 "$TOP/init/hsagent-acld.service" "$ROOT/lib/systemd/system/hsagent-acld.service"
install -D -m 0644 "$TOP/etc/hsagent.conf" "$ROOT/etc/hsagent.conf"
install -D -m 0644 "$HERE/default" "$ROOT/etc/default/hsagent"
install -D -m 0755 "$TOP/init/hsagent" "$ROOT/etc/init.d/hsagent"
install -D -m 0644 "$TOP/init/hsagent.service" "$ROOT/lib/systemd/system/hsagent.service"
install -D -m 0644 "$TOP/init/ovsdb-server-hsagent.conf" "$ROOT/usr/share/hsagent/ovsdb-server-hsagent.conf"
# hsagent-controller: installed, not enabled (it runs on one collector host, not everywhere)
install -D -m 0644 "$TOP/etc/hsagent-controller.conf" "$ROOT/etc/hsagent-controller.conf"
install -D -m 0644 "$TOP/init/hsagent-controller.service" "$ROOT/lib/systemd/system/hsagent-controller.service"
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
