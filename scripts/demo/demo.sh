#!/usr/bin/env bash
# The scripted demo `make run` ends with: an MSP connects two simulated Microsoft 365 tenants,
# Picket scans them and opens incidents, the MSP approves one, Picket applies the fix, and the
# MSP's webhook endpoint receives signed events along the way. Every step is a picketctl command,
# printed before it runs, so it can be repeated by hand.
#
# Expects the services, graph-sim and the webhook receiver started by scripts/run-services.sh;
# environment: PICKETCTL (the binary), DEMO_DIR (scratch files), SIM_TENANTS (graph-sim's tenant
# ids, space separated), SIM_ADMINISTRATORS (a Global Administrator of each), RECEIVER_URL.
set -euo pipefail

PARTNER=demo-msp-$(date +%s)
export PICKET_PARTNER=$PARTNER

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() {
	printf '$ picketctl %s\n' "$*"
	"$PICKETCTL" "$@"
}
json() { "$PICKETCTL" --output json "$@"; }
field() { python3 -c 'import json,sys; print(eval("json.load(sys.stdin)" + sys.argv[1]))' "$1"; }

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		if ((SECONDS > deadline)); then
			echo "demo: timed out waiting for: $*" >&2
			return 1
		fi
		sleep 1
	done
}

step "A partner token for $PARTNER (development key in .dev/jwt-secret)"
printf '$ export PICKET_TOKEN=$(picketctl token mint --role partner --partner %s --subject alice@%s)\n' \
	"$PARTNER" "$PARTNER"
PICKET_TOKEN=$("$PICKETCTL" token mint --role partner --subject "alice@$PARTNER")
export PICKET_TOKEN

step "The MSP's SOC subscribes a webhook endpoint"
json channels add-webhook --url "$RECEIVER_URL" --description "MSP SOC" >"$DEMO_DIR/endpoint.json"
field '["secret"]' <"$DEMO_DIR/endpoint.json" >"$DEMO_DIR/webhook-secret"
printf '$ picketctl channels add-webhook --url %s --description "MSP SOC"\n' "$RECEIVER_URL"
printf 'endpoint %s (signing secret saved for the receiver)\n' "$(field '["endpoint"]["endpointId"]' <"$DEMO_DIR/endpoint.json")"

# An administrator's browser: follows every redirect from Microsoft (graph-sim) to Picket's consent
# callback and back, signing in as $2 where Entra asks (graph-sim takes login_hint for a password).
consent_in_browser() {
	local url=$1 account=$2 next
	for _ in $(seq 20); do
		case $url in
		*/v2.0/adminconsent\?* | */oauth2/v2.0/authorize\?*) url="$url&login_hint=$account" ;;
		esac
		next=$(curl -fsS -o "$DEMO_DIR/consent-page.html" -w '%{redirect_url}' "$url") || return 1
		[[ -z $next ]] && break
		url=$next
	done
	grep -q '<h1>Connected</h1>' "$DEMO_DIR/consent-page.html"
}

step "Two customers are onboarded; their administrators grant consent and sign in"
read -r -a tenants <<<"$SIM_TENANTS"
read -r -a administrators <<<"$SIM_ADMINISTRATORS"
names=("Contoso Dental" "Fabrikam Legal")
for index in 0 1; do
	microsoft_tenant=${tenants[$index]}
	printf '$ picketctl tenants onboard --name "%s" --microsoft-tenant %s --plan standard\n' \
		"${names[$index]}" "$microsoft_tenant"
	json tenants onboard --name "${names[$index]}" --microsoft-tenant "$microsoft_tenant" \
		--plan standard >"$DEMO_DIR/onboarded.json"
	url=$(field '["consentUrl"]' <"$DEMO_DIR/onboarded.json")
	printf 'tenant %s, pending consent: %s\n' "$(field '["tenant"]["tenantId"]' <"$DEMO_DIR/onboarded.json")" "$url"
	# The administrator accepts the prompt, Microsoft redirects to Picket's consent callback, which
	# asks the administrator to sign in: the ID token proves which directory consented.
	if ! consent_in_browser "$url" "${administrators[$index]}"; then
		echo "consent did not complete:" >&2
		cat "$DEMO_DIR/consent-page.html" >&2
		exit 1
	fi
	echo "(${administrators[$index]} accepted the consent prompt and signed in)"
done
show tenants list

step "Picket scans both tenants and opens incidents"
incidents_open() { [[ $(json incidents list --state open | field '.get("incidents", [])' | wc -c) -gt 3 ]]; }
wait_for 120 incidents_open
show incidents list --state open

incident=$(json incidents list --state open | python3 -c '
import json, sys
incidents = json.load(sys.stdin)["incidents"]
fixable = [i for i in incidents if i.get("fixAction") not in (None, "", "FIX_ACTION_UNSPECIFIED")]
print((fixable or incidents)[0]["incidentId"])')

step "The MSP approves one incident; Picket applies the fix"
show incidents approve "$incident" --comment "approved in the demo" | grep -E '^(incident|title|state|recommended fix) '
resolved() { [[ $(json incidents show "$incident" | field '["incident"]["state"]') == INCIDENT_STATE_RESOLVED ]]; }
if wait_for 60 resolved; then
	show incidents show "$incident" | grep -E '^(incident|title|state|resolved|timeline) '
else
	show incidents show "$incident"
fi

step "Webhooks the MSP's endpoint received (signed, per Standard Webhooks)"
sleep 2
show deliveries list --page-size 10

printf '\nTry it yourself:\n  export PICKET_TOKEN=%s\n  target/debug/picketctl incidents list\n  target/debug/picketctl events tail --area incidents\n' "$PICKET_TOKEN"
