#!/bin/sh
# Install what building, running and testing Arnie needs on Debian 12 / Ubuntu.
# Run as root.  Safe to run again.
set -eu

export DEBIAN_FRONTEND=noninteractive

# Postfix asks which configuration to install; "No configuration" leaves the
# system's mail set-up alone (it is only used for smtp-sink, smtp-source and
# the private test instance).
echo "postfix postfix/main_mailer_type select No configuration" |
	debconf-set-selections

apt-get update -q
apt-get install -y -q --no-install-recommends \
	build-essential autoconf automake libtool pkg-config git ca-certificates \
	libesmtp-dev libmilter-dev libevent-dev libssl-dev libsystemd-dev check \
	postfix swaks curl miltertest python3 python3-aiosmtpd openssl \
	clang libclang-rt-14-dev gdb \
	debhelper lintian rpm systemd \
	util-linux
