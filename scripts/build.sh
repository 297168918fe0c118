#!/bin/sh
# Configure and build Arnie in ./build (out of the source tree).
set -eu
cd "$(dirname "$0")/.."
[ -x configure ] || ./autogen.sh
mkdir -p build
cd build
[ -f Makefile ] || ../configure --prefix=/usr/local --sysconfdir=/etc \
	--localstatedir=/var
make -j"$(nproc)"
