#!/usr/bin/env bash
# Builds the `dynamo:latest` image without pulling anything: the release binary plus exactly
# the shared libraries `ldd` says it needs, copied into a scratch image.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tag="${1:-dynamo:latest}"

cargo build --release --locked -p dynamo-node --manifest-path "$root/Cargo.toml"
target="${CARGO_TARGET_DIR:-$root/target}"
bin="$target/release/dynamo"

rootfs="$here/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/dynamo" "$rootfs/var/lib/dynamo" "$rootfs/tmp"
cp "$bin" "$rootfs/usr/local/bin/dynamo"
# Every library the binary links, at the path the loader expects.
ldd "$bin" | awk '/=>/ {print $3} /^[[:space:]]*\// {print $1}' | sort -u | while read -r lib; do
  [ -f "$lib" ] || continue
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
docker build -t "$tag" "$here"
echo "built $tag"
