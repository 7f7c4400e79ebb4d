#!/usr/bin/env bash
# TVM for a GPU machine that has no package index (tests/gpu_check.sh, REIDC_TVM_BUNDLE):
#
#     bash tests/gpu_bundle.sh DIR [PYTHON_VERSION]      # default 3.12
#
# downloads the pinned apache-tvm and apache-tvm-ffi wheels for that Python (manylinux x86-64)
# and writes DIR/site.tar.xz (both packages, unpacked as pip would, without TVM's bundled
# CUTLASS sources and web runtime, which reidc does not use) and DIR/libtvm_compiler.so.xz
# (compressed apart, with xz's x86 filter: 59 MB at TVM's 260 MB, so that the folder fits a
# 64 MiB transfer). Needs pip, unzip and xz; takes a few minutes on 2 cores.
set -euo pipefail
DIR=${1:?usage: gpu_bundle.sh DIR [PYTHON_VERSION]}
PYV=${2:-3.12}
TMP=$(mktemp -d /tmp/reidc-bundle.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$TMP/whl" \
    apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1
mkdir -p "$TMP/site" "$DIR"
for w in "$TMP"/whl/*.whl; do unzip -q -o "$w" -d "$TMP/site" -x 'tvm/3rdparty/*' 'tvm/web/*'; done
xz -T0 --x86 --lzma2=preset=9e -c "$TMP/site/tvm/lib/libtvm_compiler.so" > "$DIR/libtvm_compiler.so.xz.part"
rm "$TMP/site/tvm/lib/libtvm_compiler.so"
tar -cJf "$DIR/site.tar.xz.part" -C "$TMP/site" .
mv "$DIR/libtvm_compiler.so.xz.part" "$DIR/libtvm_compiler.so.xz"
mv "$DIR/site.tar.xz.part" "$DIR/site.tar.xz"
du -sh "$DIR"/*
