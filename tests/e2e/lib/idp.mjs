// A second, independent identity provider for the browser tests: panva's oidc-provider (an
// OpenID Certified implementation) on http://127.0.0.1, with its development login and
// consent pages. The gateway's client is registered through OpenID Connect Dynamic Client
// Registration once the gateway's port is known.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

export const CLIENT_ID = 'jumpgate-e2e-b';
export const CLIENT_SECRET = `e2e-b-${randomBytes(12).toString('hex')}`;

/** People who may sign in: any login works, these get full names. */
const PEOPLE = {
  erin: { given_name: 'Erin', family_name: 'Example' },
};

function claimsFor(login) {
  const person = PEOPLE[login] ?? { given_name: login, family_name: 'Tester' };
  return {
    sub: login,
    email: `${login}@example.org`,
    email_verified: true,
    name: `${person.given_name} ${person.family_name}`,
    given_name: person.given_name,
    family_name: person.family_name,
    preferred_username: login,
  };
}

function base64url(buf) {
  return Buffer.from(buf).toString('base64url');
}

function decodeJwt(token) {
  const [header, payload] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(header, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(payload, 'base64url').toString()),
  };
}

/**
 * Starts the provider on 127.0.0.1 and an ephemeral port.
 * Returns { issuer, clientId, clientSecret, register(redirectUri), idTokens, close() }.
 */
export async function startIdp() {
  const server = createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const issuer = `http://127.0.0.1:${server.address().port}`;

  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: base64url(randomBytes(8)), use: 'sig', alg: 'RS256' };

  const provider = new Provider(issuer, {
    jwks: { keys: [jwk] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'given_name', 'family_name', 'preferred_username'],
    },
    // Claims of the requested scopes in the ID token itself, since the gateway reads the
    // ID token and not the userinfo endpoint.
    conformIdTokenClaims: false,
    features: {
      devInteractions: { enabled: true },
      registration: {
        enabled: true,
        idFactory: () => CLIENT_ID,
        secretFactory: () => CLIENT_SECRET,
      },
    },
    pkce: { required: () => true },
    ttl: {
      AccessToken: 600,
      AuthorizationCode: 60,
      ClientCredentials: 600,
      Grant: 3600,
      IdToken: 600,
      Interaction: 600,
      Session: 3600,
    },
    async findAccount(ctx, sub) {
      return { accountId: sub, claims: async () => claimsFor(sub) };
    },
  });

  // Every ID token issued, decoded, so tests can check what the gateway was given.
  const idTokens = [];
  provider.on('grant.success', (ctx) => {
    const token = ctx.body?.id_token;
    if (token) idTokens.push(decodeJwt(token));
  });
  const errors = [];
  for (const event of ['server_error', 'authorization.error', 'grant.error']) {
    provider.on(event, (ctx, err) => errors.push(`${event}: ${err?.message ?? err}`));
  }

  server.on('request', provider.callback());

  async function register(redirectUri) {
    const res = await fetch(`${issuer}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        application_type: 'web',
        redirect_uris: [redirectUri],
        response_types: ['code'],
        grant_types: ['authorization_code'],
        token_endpoint_auth_method: 'client_secret_basic',
        client_name: 'jumpgate browser tests',
      }),
    });
    const body = await res.json();
    if (res.status !== 201 || body.client_id !== CLIENT_ID) {
      throw new Error(`client registration failed: ${res.status} ${JSON.stringify(body)}`);
    }
  }

  async function close() {
    server.closeAllConnections?.();
    await new Promise((resolve) => server.close(resolve));
  }

  return { issuer, clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, register, idTokens, errors, close };
}
