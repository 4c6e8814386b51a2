#!/bin/sh
# Healthcheck of a host-agent container (compose.yaml): healthy once every region named
# on the command line is alive with its client listener on, according to the PSOR.
#   regions-up.sh REGION...
# PAC: env PAC (default MyPAC); PSOR: env PACUP_PSOR. POSIX sh (busybox or dash).
pac="${PAC:-MyPAC}"
status="$(pacup -q --json --connect-timeout 2s --command-timeout 2s pac status "$pac" 2>/dev/null)" || exit 1
# `pac status --json` is one line; each region is a flat object: one object per line.
records="$(printf '%s\n' "$status" | tr '{' '\n')"
for r in "$@"; do
    printf '%s\n' "$records" | grep "\"name\":\"$r\"" | grep '"alive":true' | grep -q '"listener":"on"' || {
        echo "region $r is not alive with its listener on"
        exit 1
    }
done
echo "regions $* alive, listeners on"
