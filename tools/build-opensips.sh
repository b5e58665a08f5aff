#!/usr/bin/env bash
# Builds and installs one OpenSIPS release from a local git clone, outside
# this tree, for rsec's tests and benchmarks. Downloads nothing.
#
#   tools/build-opensips.sh <opensips git dir> <tag> <prefix>
#   e.g. tools/build-opensips.sh ~/src/opensips 3.4.18 /opt/opensips-3.4
#
# The tree is exported with `git archive` (so `opensips -V` reports no git
# revision, and rsec is built to match), built with the modules the tests
# load, and installed under <prefix>. Needs the OpenSIPS build dependencies
# (Debian: build-essential bison flex libmariadb-dev libmicrohttpd-dev
# libxml2-dev libssl-dev). Then:
#   OPENSIPS_BIN=<prefix>/sbin/opensips make test
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,13p' "$0" >&2; exit 2; }
git_dir=$1 tag=$2 prefix=$3
src="${RSEC_OPENSIPS_BUILD_DIR:-/tmp}/opensips-src-$tag"
rm -rf "$src"
mkdir -p "$src"
git -C "$git_dir" archive --format=tar "$tag" | tar -x -C "$src"
cd "$src"
make -j"$(nproc)" include_modules="db_mysql httpd prometheus mi_http" all >build.log 2>&1 ||
    { tail -30 build.log >&2; echo "build of $tag failed: $src/build.log" >&2; exit 1; }
make include_modules="db_mysql httpd prometheus mi_http" install prefix="$prefix" >install.log 2>&1 ||
    { tail -30 install.log >&2; echo "install of $tag failed: $src/install.log" >&2; exit 1; }
"$prefix/sbin/opensips" -V | head -1
