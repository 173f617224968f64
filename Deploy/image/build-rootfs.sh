#!/bin/sh
# Postduif's root file system, from Debian packages only: mmdebstrap makes
# a minimal Debian (bookworm) with the libraries the binaries link
# (RocksDB, LZ4, OpenSSL, ...) and Debian's etcd, then adds the binaries,
# a non-root user (postduif, uid 10001) and its data directory. No base
# image is pulled from anywhere else.
#
#   Deploy/image/build-rootfs.sh BINARY_DIR OUT.tar
#
# BINARY_DIR holds postduif and postduif-bench. A binary linked against
# the Swift toolchain's shared runtime (a debug build) brings those
# libraries along, at the path it looks for them; `make image` builds with
# --static-swift-stdlib, so its binaries need Debian's libraries alone.
set -eu
binaries=$1
out=$2
suite=${POSTDUIF_DEBIAN_SUITE:-bookworm}
mirror=${POSTDUIF_DEBIAN_MIRROR:-http://deb.debian.org/debian}

runtime=""
for library in $(ldd "$binaries/postduif" | awk '$3 ~ /^\/opt\/swift\// {print $3}'); do
    runtime="$runtime $library"
done

mode=root
[ "$(id -u)" -eq 0 ] || mode=unshare

# Documentation, manual pages and translations are left out of the image.
mmdebstrap --mode=$mode --variant=essential \
    --include=librocksdb7.8,liblz4-1,libssl3,libsnappy1v5,libzstd1,libgd3,zlib1g,libstdc++6,ca-certificates,etcd-server,tzdata \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="copy-in $binaries/postduif $binaries/postduif-bench /usr/local/bin" \
    --customize-hook='echo "postduif:x:10001:10001:Postduif:/var/lib/postduif:/usr/sbin/nologin" >> "$1/etc/passwd"' \
    --customize-hook='echo "postduif:x:10001:" >> "$1/etc/group"' \
    --customize-hook='mkdir -p "$1/var/lib/postduif" "$1/var/lib/etcd" "$1/etc/postduif" && chown 10001:10001 "$1/var/lib/postduif" "$1/var/lib/etcd" && chmod 0750 "$1/var/lib/postduif" "$1/var/lib/etcd"' \
    --customize-hook='rm -rf "$1/var/cache/apt"/*.bin "$1/var/lib/apt/lists"/*' \
    ${runtime:+--customize-hook="mkdir -p \"\$1/opt/swift/usr/lib/swift/linux\""} \
    ${runtime:+--customize-hook="copy-in $runtime /opt/swift/usr/lib/swift/linux"} \
    "$suite" "$out" "$mirror"
