#!/usr/bin/env bash
# Builds berth's container image with buildah, without a daemon (vfs storage and chroot
# isolation, both kept under target/image), and writes it as an OCI archive:
# target/image/berth.oci.tar, named ghcr.io/berth-io/berth:<workspace version>
# ($BERTH_IMAGE_REPOSITORY:<version> when that is set).
#
#   scripts/image.sh                  builds the release binary, then the image
#   scripts/image.sh --binary FILE    puts FILE in the image instead (it must be berth)
#   scripts/image.sh --rootfs DIR     only assembles the image's files in DIR (Dockerfile)
#
# The image starts from scratch and holds only what the binary needs: berth itself, the C
# runtime libraries it links (as ldd lists them), /etc/passwd and /etc/group naming the
# non-root user 65532 it runs as, an nsswitch.conf (host names: /etc/hosts, then DNS) and the
# CA certificates `berth ctl` trusts for an https admin API. No shell, no package manager.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=
rootfs_only=
while (($#)); do
  case $1 in
    --binary) binary=${2:?--binary needs a file}; shift 2 ;;
    --rootfs) rootfs_only=${2:?--rootfs needs a directory}; shift 2 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "image.sh: unknown option '$1' (see --help)" >&2; exit 64 ;;
  esac
done

# The image's files, in $2, for the binary $1.
assemble_rootfs() {
  local bin=$1 rootfs=$2 lib
  rm -rf "$rootfs"
  install -d -m 0755 "$rootfs"/{etc/ssl/certs,usr/local/bin}
  install -d -m 1777 "$rootfs/tmp" # berth's directory registry and any scratch file
  install -m 0755 "$bin" "$rootfs/usr/local/bin/berth"
  # The shared libraries the dynamic linker loads, at the paths it looks for them (the
  # interpreter included); the vDSO is the kernel's. A static binary needs none.
  local linked
  if ! linked=$(ldd "$bin" 2>&1); then
    [[ $linked == *"not a dynamic executable"* ]] || { echo "image.sh: ldd $bin: $linked" >&2; return 1; }
    linked=
  fi
  if [[ $linked == *"not found"* ]]; then
    echo "image.sh: $bin needs libraries this machine lacks:" >&2
    grep "not found" <<<"$linked" >&2
    return 1
  fi
  while read -r lib; do
    install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
  done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$linked")
  printf '%s\n' "root:x:0:0:root:/root:/sbin/nologin" "nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin" \
    >"$rootfs/etc/passwd"
  printf '%s\n' "root:x:0:" "nonroot:x:65532:" >"$rootfs/etc/group"
  echo "hosts: files dns" >"$rootfs/etc/nsswitch.conf"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  chmod 0644 "$rootfs"/etc/{passwd,group,nsswitch.conf}
}

if [[ -n $rootfs_only ]]; then
  assemble_rootfs "${binary:-target/release/berth}" "$rootfs_only"
  exit 0
fi

if ! command -v buildah >/dev/null 2>&1; then
  echo "image.sh: buildah is not installed (Debian: apt-get install buildah)" >&2
  exit 69
fi

# --- what the image says about itself: all from Cargo.toml's workspace package and git ------
read -r version license source target description < <(cargo metadata --no-deps --locked --format-version 1 |
  python3 -c 'import json, sys
m = json.load(sys.stdin)
p = next(p for p in m["packages"] if p["name"] == "berth")
print(p["version"], p["license"], p["repository"], m["target_directory"], p["description"])')
repository=${BERTH_IMAGE_REPOSITORY:-ghcr.io/berth-io/berth}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown && -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  revision+="-dirty"
fi
# The commit's time, not the build's: the same commit gives the same image, byte for byte.
epoch=$(git log -1 --format=%ct 2>/dev/null || echo 0)
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

if [[ -z $binary ]]; then
  echo "==> cargo build --release --bin berth"
  cargo build --release --locked --bin berth
  binary=$target/release/berth
fi
if ! answer=$("$binary" --version) || [[ $answer != "berth $version" ]]; then
  echo "image.sh: $binary answers '${answer:-nothing}' to --version, not 'berth $version'" >&2
  exit 65
fi

work=$target/image
assemble_rootfs "$binary" "$work/rootfs"

# --- the image -----------------------------------------------------------------------------
bah=(buildah --root "$work/storage" --runroot "$work/run" --storage-driver vfs)
out=$work/berth.oci.tar
ctr=$("${bah[@]}" from --name "berth-image-$$" scratch)
trap '"${bah[@]}" rm "$ctr" >/dev/null 2>&1 || true' EXIT
"${bah[@]}" copy --chown 0:0 "$ctr" "$work/rootfs/" / >/dev/null

oci=(
  "org.opencontainers.image.title=berth"
  "org.opencontainers.image.description=$description"
  "org.opencontainers.image.version=$version"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.source=$source"
  "org.opencontainers.image.url=$source"
  "org.opencontainers.image.licenses=$license"
  "org.opencontainers.image.created=$created"
)
config=(--user 65532:65532 --entrypoint '["/usr/local/bin/berth"]' --cmd '' --workingdir /
  --env PATH=/usr/local/bin --os linux --created-by "scripts/image.sh")
for kv in "${oci[@]}"; do config+=(--label "$kv" --annotation "$kv"); done
"${bah[@]}" config "${config[@]}" "$ctr"

rm -f "$out"
"${bah[@]}" commit --quiet --format oci --timestamp "$epoch" --disable-compression=false --rm \
  "$ctr" "oci-archive:$out:$repository:$version" >/dev/null
trap - EXIT

# --- what it weighs ------------------------------------------------------------------------
python3 - "$out" "$binary" "$repository:$version" "$revision" <<'PY'
import json, os, sys, tarfile
archive, binary, ref, revision = sys.argv[1:]
with tarfile.open(archive) as t:
    blob = lambda d: t.extractfile("blobs/" + d.replace(":", "/", 1))
    manifest = json.load(blob(json.load(t.extractfile("index.json"))["manifests"][0]["digest"]))
    compressed = manifest["config"]["size"] + sum(l["size"] for l in manifest["layers"])
    unpacked = sum(m.size for l in manifest["layers"] for m in tarfile.open(fileobj=blob(l["digest"])))
mb = lambda n: f"{n / 1e6:.1f} MB"
print(f"==> image {ref} (revision {revision}): {archive}")
print(f"    compressed {mb(compressed)} (what a node pulls), unpacked {mb(unpacked)}, "
      f"binary {mb(os.path.getsize(binary))}")
PY
