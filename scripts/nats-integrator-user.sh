#!/usr/bin/env bash
# Prints the NATS user of one partner's integrator, to add to the `users` of the PICKET account in
# deploy/nats/nats-server.conf (docs/integrators.md): `scripts/nats-integrator-user.sh PARTNER_ID`.
#
# The user reads only that partner's events: live subscriptions to picket.*.v1.*.<partner>.>, and
# JetStream consumers named <partner>-1 to <partner>-3 on each event stream, each created with a
# filter on the partner's subjects (the server takes the filter from the create subject, which the
# permission fixes to the partner's position). It publishes no event and sees no dead letter. Its
# password comes from the environment variable the block names.
set -euo pipefail

partner=${1:?usage: nats-integrator-user.sh PARTNER_ID}
if [[ ! $partner =~ ^[A-Za-z0-9_-]{1,120}$ || $partner == _ ]]; then
    echo "nats-integrator-user: '$partner' is not a partner id (letters, digits, '-', '_')" >&2
    exit 2
fi
variable=INTEGRATOR_$(tr 'a-z-' 'A-Z_' <<<"$partner")_PASSWORD
areas=(tenants findings fixes incidents notifications ledger offboarding)

echo "      {"
echo "        user: \"integrator-$partner\""
echo "        password: \$$variable"
echo "        permissions: {"
echo "          publish: { allow: ["
echo "            \"\$JS.API.INFO\","
echo "            \"\$JS.API.STREAM.INFO.*\","
for area in "${areas[@]}"; do
    stream=PICKET_$(tr 'a-z' 'A-Z' <<<"$area")
    for number in 1 2 3; do
        consumer=$partner-$number
        echo "            \"\$JS.API.CONSUMER.CREATE.$stream.$consumer.picket.$area.v1.*.$partner.>\","
        echo "            \"\$JS.API.CONSUMER.INFO.$stream.$consumer\","
        echo "            \"\$JS.API.CONSUMER.MSG.NEXT.$stream.$consumer\","
        echo "            \"\$JS.ACK.$stream.$consumer.>\","
    done
done
echo "          ] }"
echo "          subscribe: { allow: [\"picket.*.v1.*.$partner.>\", \"_INBOX.>\"] }"
echo "        }"
echo "      }"
