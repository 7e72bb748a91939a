#!/usr/bin/env bash
# nginx with its mail module, for tests/test_nginx_mail.py (a real nginx mail proxy in front of
# a private dovecot). Debian 12's nginx + libnginx-mod-mail are downloaded and unpacked with
# dpkg-deb -x into /var/cache/logkey/nginx-root, never installed: installing would start the
# machine's nginx on port 80. About 3 seconds (three .debs, 0.5 MB). Safe to run again.
set -euo pipefail
ROOT=${LOGKEY_NGINX_ROOT:-/var/cache/logkey/nginx-root}
if [ -x "$ROOT/usr/sbin/nginx" ] && [ -f "$ROOT/usr/lib/nginx/modules/ngx_mail_module.so" ]; then
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"
cd "$tmp"
apt-get download -qq nginx nginx-common libnginx-mod-mail 2>/dev/null || {
    apt-get update -qq && apt-get download -qq nginx nginx-common libnginx-mod-mail; }
mkdir -p "$ROOT.new"
for deb in ./*.deb; do dpkg-deb -x "$deb" "$ROOT.new"; done
rm -rf "$ROOT"
mv "$ROOT.new" "$ROOT"
