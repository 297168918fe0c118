#!/bin/sh
# Build the Debian package (and the RPM) from a clean copy of the source,
# check the .deb with lintian, then install it, run the installed daemon the
# way its unit does, and purge it (tests/package/test_deb.sh).  As root, on
# Debian 12 with scripts/install-deps.sh done.  Leaves the packages in
# build/deb/ and build/rpm/.
#
#   sh scripts/package.sh          build, lint, install-test, rpm
#   NOTEST=1 sh scripts/package.sh build and lint only
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
deb=$top/build/deb
rm -rf "$deb"
mkdir -p "$deb/arnie"

# A clean copy: the tracked files as they are now, nothing a build left.
git ls-files -z | xargs -0 cp --parents -t "$deb/arnie"
(cd "$deb/arnie" && dpkg-buildpackage -us -uc -b) >"$deb/build.log" 2>&1 || {
	tail -n 40 "$deb/build.log"
	echo "package.sh: dpkg-buildpackage failed (log: $deb/build.log)"
	exit 1
}
ls "$deb"/*.deb

# No error, and no warning that debian/ does not justify.
lintian --allow-root --fail-on error,warning "$deb"/*.changes

[ -n "${NOTEST:-}" ] && exit 0
sh tests/package/test_deb.sh "$deb"/arnie_*.deb

# make install into a staging root, completed as the README says
# (systemd-sysusers, systemd-tmpfiles): the user, the spool, and units
# that name installed programs.
stage=$top/build/stage
rm -rf "$stage"
[ -f build/Makefile ] || sh scripts/build.sh
make -C build install DESTDIR="$stage" >"$top/build/stage.log" 2>&1 ||
	{ tail -n 20 "$top/build/stage.log"; exit 1; }
systemd-sysusers --root="$stage" >>"$top/build/stage.log" 2>&1
systemd-tmpfiles --root="$stage" --create >>"$top/build/stage.log" 2>&1
uid=$(awk -F: '$1 == "arnie" { print $3 }' "$stage/etc/passwd")
[ -n "$uid" ] || { echo "package.sh: no arnie user from sysusers.d"; exit 1; }
[ "$(stat -c '%a %u' "$stage/var/spool/arnie")" = "700 $uid" ] ||
	{ echo "package.sh: tmpfiles.d made a wrong spool"; exit 1; }
for unit in "$stage"/lib/systemd/system/arnie*.service; do
	prog=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
	[ -x "$stage$prog" ] || { echo "package.sh: $unit runs $prog, not installed"; exit 1; }
done
echo "make install: ok"

# The RPM, as far as a Debian machine allows: built, not installed, from
# the release tarball (make dist).
rpm=$top/build/rpm
rm -rf "$rpm"
mkdir -p "$rpm/SOURCES"
make -C build dist >"$rpm/dist.log" 2>&1 ||
	{ tail -n 20 "$rpm/dist.log"; exit 1; }
version=$(sed -n 's/^Version: *//p' contrib/arnie.spec)
mv "build/arnie-$version.tar.gz" "$rpm/SOURCES/"
rpmbuild -bb --nodeps --define "_topdir $rpm" contrib/arnie.spec \
	>"$rpm/build.log" 2>&1 || {
	tail -n 40 "$rpm/build.log"
	echo "package.sh: rpmbuild failed (log: $rpm/build.log)"
	exit 1
}
ls "$rpm"/RPMS/*/*.rpm
