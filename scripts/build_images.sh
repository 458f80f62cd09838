#!/usr/bin/env bash
# Build trainpipe's two container images, tagged with the package version (never :latest).
#
#   <registry>/trainpipe:<version>        training image: CUDA torch + trainpipe; runs every
#                                         pipeline component, `trainpipe` and `torchrun` on PATH
#   <registry>/trainpipe-serve:<version>  serving image: onnxruntime + the OIP v2 server, no torch
#
# Release build (Docker, Podman or Buildah; base python:3.11-slim, torch from PyPI = CUDA build):
#
#   scripts/build_images.sh                                   # docker, ghcr.io/trainpipe
#   scripts/build_images.sh --tool podman --registry registry.example.com/ml --push
#   scripts/build_images.sh --torch-index-url https://download.pytorch.org/whl/cu126
#
# The same commands by hand (run from the repository root; VERSION is pyproject's version):
#
#   docker build -f images/train/Dockerfile --build-arg VERSION=$VERSION \
#       -t ghcr.io/trainpipe/trainpipe:$VERSION .
#   docker build -f images/serve/Dockerfile --build-arg VERSION=$VERSION \
#       -t ghcr.io/trainpipe/trainpipe-serve:$VERSION .
#   (podman/buildah: add --ignorefile images/<name>/Dockerfile.dockerignore; Docker finds it
#   next to the Dockerfile by itself)
#
# Local-test mode (machines without a Docker engine or a registry, e.g. this project's CI):
#
#   scripts/build_images.sh --local-test [--registry localhost/trainpipe-test]
#
#   builds with `buildah bud --isolation chroot` on a Debian bookworm base made locally with
#   debootstrap (cached in buildah's image store under a tag keyed by a hash of how it was
#   made, so only the first run pays for it), and lets pip inside the build use this machine's
#   pip configuration: find-links directories and file:// indexes are mounted read-only, the
#   CA bundle is passed as a build secret, the index URLs as build arguments of the builder
#   stage. None of it reaches the final images. torch defaults to `torch==2.13.0`, which the
#   find-links wheelhouse serves as the CPU build (override with TORCH_SPEC=...).
#   Layers are cached (--layers), so a rebuild after a source change reinstalls only trainpipe.
#
# Options: --tool docker|podman|buildah  --registry REPO_PREFIX  --push  --only train|serve
#          --torch-spec SPEC  --torch-index-url URL  --base-image IMAGE  --local-test
#          --refresh-base (local-test: rebuild the debootstrap base)
# Prints one line per step with its duration; the last line is `built <image> ...`.
set -euo pipefail
cd "$(dirname "$0")/.."

tool=docker
registry=ghcr.io/trainpipe
push=0
only=""
local_test=0
refresh_base=0
base_image=""
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
torch_index_url="${TORCH_INDEX_URL:-}"

die() { echo "error: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --tool) tool="$2"; shift 2 ;;
        --registry) registry="${2%/}"; shift 2 ;;
        --push) push=1; shift ;;
        --only) only="$2"; shift 2 ;;
        --torch-spec) torch_spec="$2"; shift 2 ;;
        --torch-index-url) torch_index_url="$2"; shift 2 ;;
        --base-image) base_image="$2"; shift 2 ;;
        --local-test) local_test=1; tool=buildah; shift ;;
        --refresh-base) refresh_base=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
case "$tool" in docker|podman|buildah) ;; *) die "--tool must be docker, podman or buildah, not $tool" ;; esac
case "$only" in ""|train|serve) ;; *) die "--only must be train or serve, not $only" ;; esac
command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install -y $tool)"

# The tag is the package version, read from pyproject.toml (the one place it is written).
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
version=${version%%$'\n'*}  # the first match; no `| head` (SIGPIPE under pipefail)
[ -n "$version" ] || die "no version = \"...\" line in pyproject.toml"

step() {  # step NAME CMD...: run CMD, print how long it took
    local name="$1" start=$SECONDS
    shift
    "$@"
    echo "[build_images] $name: $((SECONDS - start)) s"
}

# ---------------------------------------------------------------- local-test mode: the base
# Debian bookworm with python3 (3.11, the version python:3.11-slim has), venv and CA roots.
BASE_SUITE=bookworm
BASE_INCLUDE=python3,python3-venv,ca-certificates
BASE_MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

make_base() {  # make_base TAG: debootstrap a root fs and commit it as image TAG
    local tag="$1" work ctr mnt
    command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install -y debootstrap)"
    work=$(mktemp -d /var/tmp/trainpipe-base.XXXXXX)
    # shellcheck disable=SC2064
    trap "rm -rf '$work'" EXIT
    debootstrap --variant=minbase --include="$BASE_INCLUDE" "$BASE_SUITE" "$work/rootfs" \
        "$BASE_MIRROR" >"$work/debootstrap.log" 2>&1 \
        || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    # Package lists and downloaded .debs are not needed in an image.
    rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/var/cache/apt/archives/*.deb
    ctr=$(buildah from scratch)
    mnt=$(buildah mount "$ctr")
    cp -a "$work/rootfs/." "$mnt/"
    buildah umount "$ctr" >/dev/null
    buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /bin/bash \
        --label org.opencontainers.image.description="debootstrap $BASE_SUITE minbase + $BASE_INCLUDE" \
        "$ctr"
    buildah commit --rm --quiet "$ctr" "$tag" >/dev/null
}

# pip settings of this machine for the builds: `pip config list` (+ PIP_* environment) values.
pip_setting() {  # pip_setting KEY: the effective value of a pip option, or empty
    local key="$1" env_name value
    env_name="PIP_$(echo "$key" | tr 'a-z-' 'A-Z_')"
    if [ -n "${!env_name:-}" ]; then echo "${!env_name}"; return; fi
    value=$(python3 -m pip config list 2>/dev/null \
        | sed -n "s/^\(:env:\|install\|global\)\.$key='\(.*\)'$/\1 \2/p" \
        | sort -k1,1 -s | awk '{ $1=""; sub(/^ /, ""); v=$0 } END { print v }')
    echo "$value"
}

build_args=()
if [ "$local_test" = 1 ]; then
    key=$(printf '%s\n' "$BASE_SUITE" minbase "$BASE_INCLUDE" "$BASE_MIRROR" v1 | sha256sum | cut -c1-12)
    base_tag="localhost/trainpipe-base:$BASE_SUITE-$key"
    if [ "$refresh_base" = 1 ] || ! buildah inspect --type image "$base_tag" >/dev/null 2>&1; then
        step "base image $base_tag (debootstrap)" make_base "$base_tag"
    else
        echo "[build_images] base image $base_tag: cached"
    fi
    base_image="${base_image:-$base_tag}"

    # Mount every local wheel directory and file:// index read-only at the same path, so the
    # URLs in the pip settings mean the same inside the build.
    mounts=()
    for key in find-links index-url extra-index-url trusted-host; do
        value=$(pip_setting "$key")
        [ -n "$value" ] || continue
        build_args+=(--build-arg "PIP_$(echo "$key" | tr 'a-z-' 'A-Z_')=$value")
        [ "$key" = trusted-host ] && continue
        for location in $value; do
            path="${location#file://}"
            [ "${path:0:1}" = / ] || continue
            # A file:// "simple" index links to its files relative to its parent: mount that.
            [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
            [ -e "$path" ] && mounts+=(--volume "$path:$path:ro")
        done
    done
    # Tests want the CPU torch: from a local wheelhouse when one has it, else PyTorch's CPU index
    # (never PyPI's default, the multi-GB CUDA build).
    if [ -z "$torch_index_url" ] && [ -z "${TORCH_SPEC:-}" ]; then
        cpu_wheels=$(for dir in $(pip_setting find-links); do
            ls "${dir#file://}"/torch-*+cpu-*.whl 2>/dev/null || true; done)
        [ -n "$cpu_wheels" ] || torch_index_url=https://download.pytorch.org/whl/cpu
    fi
    cert=$(pip_setting cert)
    cert="${cert:-/etc/ssl/certs/ca-certificates.crt}"
    [ -f "$cert" ] && build_args+=(--secret "id=pip_ca,src=$cert")
    build_args+=("${mounts[@]}")
fi

# ------------------------------------------------------------------------------ the builds
[ -n "$base_image" ] && build_args+=(--build-arg "BASE_IMAGE=$base_image")
build_args+=(--build-arg "VERSION=$version" --build-arg "TORCH_SPEC=$torch_spec")
[ -n "$torch_index_url" ] && build_args+=(--build-arg "TORCH_INDEX_URL=$torch_index_url")

build() {  # build NAME IMAGE_REPO
    local name="$1" image="$registry/$2:$version" cmd
    case "$tool" in
        docker) cmd=(docker build) ;;
        podman) cmd=(podman build --layers --ignorefile "images/$name/Dockerfile.dockerignore") ;;
        buildah) cmd=(buildah bud --layers --ignorefile "images/$name/Dockerfile.dockerignore") ;;
    esac
    [ "$local_test" = 1 ] && cmd+=(--isolation chroot)
    step "image $image" "${cmd[@]}" "${build_args[@]}" -f "images/$name/Dockerfile" -t "$image" .
    if [ "$push" = 1 ]; then
        step "push $image" "$tool" push "$image"
    fi
    built+=("$image")
}

built=()
[ "$only" = serve ] || build train trainpipe
[ "$only" = train ] || build serve trainpipe-serve
echo "built ${built[*]}"
