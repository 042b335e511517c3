#!/bin/sh
# keepalived track script for sipfront's external mode (see keepalived.conf).
#
# Exit 0 when sipfront answers 200 on /ready: its dataplane is alive and at
# least one backend is usable (healthy and enabled). Anything else -- sipfront
# stopped, hung, starting, or every backend down/drained/disabled -- exits
# non-zero and keepalived moves the VIP to the peer.
#
# /ready needs no token, also when admin.token_file is set.
#
# Usage: check_sipfront.sh [ADMIN_ADDR [PATH]]
#   ADMIN_ADDR is sipfront's [admin] listen address; default $SIPFRONT_ADMIN, else
#   127.0.0.1:9090. PATH: /ready (default) or /live (the process answers, whatever
#   the backends). In keepalived.conf: script "/usr/lib/sipfront/check_sipfront.sh 192.0.2.11:9090 /live"
admin="${1:-${SIPFRONT_ADMIN:-127.0.0.1:9090}}"
case "${2:-/ready}" in
  /ready | /live) path="${2:-/ready}" ;;
  *) echo "check_sipfront.sh: PATH must be /ready or /live" >&2; exit 2 ;;
esac
exec /usr/bin/curl -fsS --max-time 1 -o /dev/null "http://${admin}${path}"
