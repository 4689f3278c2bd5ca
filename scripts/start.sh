#!/usr/bin/env bash
# npm start: builds the Worker, applies D1 migrations to the local state, makes sure a site
# admin with an API key exists, and serves the web app and the channels on
# http://127.0.0.1:8787 (state kept in .wrangler/state across restarts).
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$ROOT"

PORT=${PORT:-8787}
STATE=.wrangler/state

bash scripts/build.sh
wrangler d1 migrations apply DB --local --persist-to "$STATE" >/dev/null

admins=$(node scripts/admin.mjs --persist-to "$STATE" --json user list |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).filter(u=>u.is_admin).map(u=>u.name).join(" ")))')
echo
if [ -z "$admins" ]; then
    node scripts/admin.mjs --persist-to "$STATE" user create admin --admin >/dev/null
    key=$(node scripts/admin.mjs --persist-to "$STATE" --json key create admin --name bootstrap |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).key))')
    echo "Created site admin 'admin'. Its API key (shown once, only its hash is stored); sign in"
    echo "to the web app with it:"
    echo
    echo "    $key"
else
    echo "Site admins: $admins. Make an API key to sign in to the web app with:"
    echo
    echo "    npm run admin -- key create ${admins%% *}"
fi
cat <<MSG

Web app: open http://127.0.0.1:$PORT/ in a browser and sign in with the key.

Or from the command line: create a channel and upload to it (see README.md):
    npm run admin -- channel create my-channel --owner admin
    curl -X POST http://127.0.0.1:$PORT/api/v1/upload/my-channel -H "Authorization: Bearer <key>" \\
         -H "X-File-Name: <file>" -H "X-File-SHA256: \$(sha256sum <file> | cut -c1-64)" --data-binary @<file>

condaflare is serving on http://127.0.0.1:$PORT
MSG
exec wrangler dev --local --ip 127.0.0.1 --port "$PORT" --persist-to "$STATE" --log-level log
