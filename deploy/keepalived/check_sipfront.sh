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
# Usage: check_sipfront.sh [ADMIN_ADDR]
#   ADMIN_ADDR is sipfront's [admin] listen address; default $SIPFRONT_ADMIN, else
#   127.0.0.1:9090. In keepalived.conf: script "/usr/lib/sipfront/check_sipfront.sh 192.0.2.11:9090"
admin="${1:-${SIPFRONT_ADMIN:-127.0.0.1:9090}}"
exec /usr/bin/curl -fsS --max-time 1 -o /dev/null "http://${admin}/ready"
