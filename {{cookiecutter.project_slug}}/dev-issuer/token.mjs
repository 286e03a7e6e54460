// Prints an access token from the dev issuer, obtained over HTTP with the
// client-credentials grant: node token.mjs [scope ...] (default: every scope, SCOPES).
const env = process.env;
const scope = process.argv.slice(2).join(" ") || (env.SCOPES ?? "");
const client = `${env.CLIENT_ID ?? "dev-client"}:${env.CLIENT_SECRET ?? "dev-secret"}`;
const response = await fetch(`http://127.0.0.1:${env.PORT ?? 3000}/token`, {
  method: "POST",
  headers: { authorization: `Basic ${Buffer.from(client).toString("base64")}` },
  body: new URLSearchParams({ grant_type: "client_credentials", scope }),
});
const body = await response.json();
if (!response.ok) {
  console.error(`no token: ${body.error}: ${body.error_description}`);
  process.exit(1);
}
console.log(body.access_token);
