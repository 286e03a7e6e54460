// A development OpenID provider for `docker compose up` and the tests: oidc-provider
// (OpenID Certified), with one client for the client-credentials grant. Its access
// tokens are JWTs (RFC 9068) for the service's audience, signed with the first key of
// JWKS_FILE (a private JWK set: put a new key first to rotate, keep the old one after
// it while its tokens live) or with a key made at start. State lives in memory: a
// restart without JWKS_FILE makes a new key, and tokens signed before it are refused
// once the app has learnt the new one: get a new token. Never deploy it.
import { generateKeyPairSync, randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const env = process.env;
const issuer = env.ISSUER ?? "http://issuer:3000";
const audience = env.AUDIENCE ?? "api://service";
const scopes = env.SCOPES ?? "";

// A kid of its own: after a restart (a new key) the app meets an unknown kid and fetches
// the keys again within AUTH_JWKS_MIN_REFRESH_SECONDS, instead of refusing every new
// token as a bad signature under the old key's kid until its cache expires.
function madeAtStart() {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const kid = `dev-${randomUUID()}`;
  return [{ ...privateKey.export({ format: "jwk" }), kid, use: "sig", alg: "RS256" }];
}

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: env.CLIENT_ID ?? "dev-client",
      client_secret: env.CLIENT_SECRET ?? "dev-secret",
      grant_types: ["client_credentials"],
      redirect_uris: [],
      response_types: [],
      scope: scopes,
    },
  ],
  jwks: { keys: env.JWKS_FILE ? JSON.parse(readFileSync(env.JWKS_FILE, "utf8")).keys : madeAtStart() },
  scopes: scopes.split(" ").filter(Boolean),
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    // JWT access tokens need a resource server; this one is the service, by default.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: scopes,
        audience,
        accessTokenFormat: "jwt",
        accessTokenTTL: Number(env.TOKEN_TTL_SECONDS ?? 3600),
      }),
    },
  },
});
const port = Number(env.PORT ?? 3000);
provider.listen(port, () => console.log(`dev issuer ${issuer} listening on ${port}`));
