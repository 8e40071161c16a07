#!/usr/bin/env bash
# The Synchronize Sites procedure (../../../shared/seed/synchronize-sites.txt) scripted with the
# official Infinispan CLI as an operator would: one CLI batch per command, statuses polled once a
# second until they read as the guide says, ERROR answered by pushing that cache again. Keycloak
# scaling is left out (site-sync's benchmark leaves it out too).
#
# usage: cli-procedure.sh <infinispan lib dir> <active connection URL> <offline connection URL>
#   connection URLs carry the credentials: http://admin:password@127.0.0.1:11222
set -euo pipefail
LIB=$1 ACTIVE=$2 OFFLINE=$3
CACHES="actionTokens authenticationSessions loginFailures work"

cli() { # <url> <commands...>: one CLI batch
  local url=$1 file
  shift
  file=$(mktemp)
  printf '%s\n' "$@" > "$file"
  java -cp "$LIB/*" org.infinispan.cli.commands.CLI -c "$url" -f "$file"
  rm -f "$file"
}

# Offline site: take the backup to the active site offline, check, clear, bring it back online.
cli "$OFFLINE" "site take-offline --all-caches --site=site-a" > /dev/null
until cli "$OFFLINE" "site status --all-caches --site=site-a" | grep -q '"offline"'; do
  cli "$OFFLINE" "site take-offline --all-caches --site=site-a" > /dev/null
done
clears=()
for c in $CACHES; do clears+=("clearcache $c"); done
cli "$OFFLINE" "${clears[@]}"
cli "$OFFLINE" "site bring-online --all-caches --site=site-a" > /dev/null
until cli "$OFFLINE" "site status --all-caches --site=site-a" | grep -q '"online"'; do sleep 1; done

# Active site: push, check online, wait for OK per cache (ERROR: push that cache again), clear.
cli "$ACTIVE" "site push-site-state --all-caches --site=site-b" > /dev/null
cli "$ACTIVE" "site status --all-caches --site=site-b" | grep -q '"online"'
for c in $CACHES; do
  while true; do
    status=$(cli "$ACTIVE" "site push-site-status --cache=$c")
    case "$status" in
      *'"OK"'*) break ;;
      *'"ERROR"'*) cli "$ACTIVE" "site push-site-state --cache=$c --site=site-b" > /dev/null ;;
      *) sleep 1 ;;
    esac
  done
done
statuses=()
for c in $CACHES; do statuses+=("site clear-push-site-status --cache=$c"); done
cli "$ACTIVE" "${statuses[@]}" > /dev/null
