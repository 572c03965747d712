// jumpgate in a real browser: headless Chromium through the TLS gateway, signing in at the
// fake JumpCloud (gateway a) and at panva's oidc-provider (gateway b), with the gateway's
// own pages screenshotted into tests/e2e/screenshots/.
//
// Run with tests/e2e/run.sh (it builds examples/e2e_env.rs and installs what is missing).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createLocalJWKSet, jwtVerify } from 'jose';

import { openBrowser } from './lib/browser.mjs';
import { startEnv } from './lib/env.mjs';
import { startIdp } from './lib/idp.mjs';
import { checkGatewayPage, SCREENSHOTS, screenshot } from './lib/pages.mjs';

const SESSION_COOKIE = '__Host-jumpgate';

let idp;
let env;
let A; // https://localhost:PORT of each gateway
let B;
let C;
let D;
let forbidden; // strings no gateway page may contain

/** Runs `fn` with a fresh browser, closing it whatever happens. */
async function withBrowser(fn) {
  const browser = await openBrowser(env.spki);
  try {
    return await fn(browser);
  } finally {
    await browser.close();
  }
}

/** The identity the upstream page shows. */
async function shownIdentity(page) {
  const text = async (id) => (await page.locator(`#${id}`).innerText()).trim();
  return {
    request: await text('request'),
    user: await text('user'),
    email: await text('email'),
    username: await text('username'),
    groups: await text('groups'),
    stepUpTime: await text('step_up_time'),
    claims: JSON.parse((await text('claims')) || 'null'),
  };
}

/** fetch() from the page, as its scripts would: status, headers and parsed body. */
function pageFetch(page, url, init = {}) {
  return page.evaluate(
    async ({ url, init }) => {
      const r = await fetch(url, { credentials: 'same-origin', redirect: 'manual', ...init });
      const text = await r.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {
        // not JSON
      }
      return { status: r.status, headers: Object.fromEntries(r.headers), text, json };
    },
    { url, init },
  );
}

const JSON_ACCEPT = { accept: 'application/json' };

/** Reloads until `done(response)` holds or `ms` pass; resolves to the last response. */
async function reloadUntil(page, done, ms, what) {
  const deadline = Date.now() + ms;
  let response;
  for (;;) {
    response = await page.reload();
    if (done(response)) return response;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}; last status ${response?.status()}`);
    }
    await page.waitForTimeout(250);
  }
}

function sessionCookie(cookies) {
  return cookies.find((c) => c.name === SESSION_COOKIE);
}

before(async () => {
  idp = await startIdp();
  env = await startEnv(idp);
  const g = env.info.gateways;
  A = g.a.url;
  B = g.b.url;
  C = g.c.url;
  D = g.d.url;
  await idp.register(`${B}/.jumpgate/callback`);
  forbidden = [
    ...env.info.secrets,
    idp.clientSecret,
    env.info.upstream,
    env.info.idp.base,
    ...Object.values(env.info.users),
  ];
});

after(async () => {
  if (env) {
    await env.stop();
    mkdirSync(SCREENSHOTS, { recursive: true });
    writeFileSync(path.join(SCREENSHOTS, 'e2e_env.log'), env.log());
  }
  if (idp) await idp.close();
});

describe('jumpgate in a real browser', { timeout: 150_000 }, () => {
  test('0. Chromium trusts the gateway through its pinned key and nothing else', { timeout: 30_000 }, async () => {
    // Another key's pin: the development CA is not trusted, so the connection must fail.
    const otherPin = createHash('sha256').update('not the gateway key').digest('base64');
    const browser = await openBrowser(otherPin);
    try {
      await assert.rejects(browser.page.goto(`${A}/public/tls`), /ERR_CERT_AUTHORITY_INVALID/);
    } finally {
      await browser.close();
    }
    await withBrowser(async ({ page }) => {
      const response = await page.goto(`${A}/public/tls`);
      assert.equal(response.status(), 200);
      const security = await response.securityDetails();
      assert.equal(security.subjectName, 'localhost');
      assert.match(security.protocol, /^TLS 1\.[23]$/);
      assert.equal(await page.evaluate(() => window.isSecureContext), true);
    });
  });

  test('1. deep link → JumpCloud sign-in → back on the deep link, signed in', { timeout: 60_000 }, async () => {
    await env.command('next-login chooser');
    await withBrowser(async ({ context, page }) => {
      const deepLink = '/reports/2024/q3?view=full&sort=desc&q=a%20b';
      await page.goto(`${A}${deepLink}`);
      // The IdP's own page: the fake JumpCloud's user chooser.
      assert.ok(page.url().startsWith(`${env.info.idp.base}/oauth2/auth?`), page.url());
      await page.locator('h1', { hasText: 'Fake JumpCloud' }).waitFor();
      await screenshot(page, 'idp-jumpcloud-chooser');
      await Promise.all([page.waitForURL(`${A}${deepLink}`), page.getByRole('link', { name: 'Alice Tester' }).click()]);

      const shown = await shownIdentity(page);
      assert.equal(shown.request, `GET ${deepLink}`);
      assert.equal(shown.user, env.info.users.alice);
      assert.equal(shown.email, 'alice@example.com');
      assert.equal(shown.username, 'alice');
      assert.deepEqual(shown.groups.split(',').map((s) => s.trim()).sort(), ['Admins', 'Staff']);
      assert.equal(shown.claims.sub, env.info.users.alice);
      await screenshot(page, 'upstream-signed-in-jumpcloud');

      // The signed assertion the upstream received, verified with an independent JOSE
      // implementation against the key the gateway publishes; a changed claim fails.
      const api = await pageFetch(page, deepLink, { headers: JSON_ACCEPT });
      const token = api.json.identity.assertion;
      assert.equal(typeof token, 'string');
      const keys = await pageFetch(page, '/.jumpgate/jwks.json');
      assert.equal(keys.status, 200);
      const jwks = createLocalJWKSet(keys.json);
      const { payload, protectedHeader } = await jwtVerify(token, jwks, {
        algorithms: ['ES256'],
        audience: 'localhost',
        maxTokenAge: '5m',
      });
      assert.equal(protectedHeader.alg, 'ES256');
      assert.equal(payload.sub, env.info.users.alice);
      assert.equal(payload.email, 'alice@example.com');
      assert.deepEqual([...payload.groups].sort(), ['Admins', 'Staff']);
      const [head, , signature] = token.split('.');
      const forged = `${head}.${Buffer.from(JSON.stringify({ ...payload, sub: env.info.users.bob })).toString('base64url')}.${signature}`;
      await assert.rejects(jwtVerify(forged, jwks, { algorithms: ['ES256'] }), /signature/i);

      // The session cookie as the browser itself stores it.
      const cookie = sessionCookie(await context.cookies(A));
      assert.ok(cookie, 'session cookie stored');
      assert.equal(cookie.secure, true);
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, 'Lax');
      assert.equal(cookie.path, '/');
      assert.equal(cookie.domain, 'localhost', 'host-only, no Domain attribute');
      assert.ok(!(await page.evaluate(() => document.cookie)).includes(SESSION_COOKIE), 'invisible to scripts');

      const me = await pageFetch(page, '/.jumpgate/userinfo');
      assert.equal(me.status, 200);
      assert.equal(me.json.sub, env.info.users.alice);
      assert.equal(me.json.email, 'alice@example.com');
    });
  });

  test('2. deep link → oidc-provider sign-in → back on the deep link, signed in', { timeout: 60_000 }, async () => {
    await withBrowser(async ({ context, page }) => {
      const deepLink = '/projects/42?tab=members';
      await page.goto(`${B}${deepLink}`);
      assert.ok(page.url().startsWith(`${idp.issuer}/interaction/`), page.url());
      await page.locator('input[name="login"]').fill('erin');
      await page.locator('input[name="password"]').fill('correct horse battery staple');
      await screenshot(page, 'idp-oidc-provider-login');
      await page.getByRole('button', { name: 'Sign-in' }).click();
      // The provider's consent page.
      await page.getByRole('button', { name: 'Continue' }).waitFor();
      await screenshot(page, 'idp-oidc-provider-consent');
      await Promise.all([page.waitForURL(`${B}${deepLink}`), page.getByRole('button', { name: 'Continue' }).click()]);

      const shown = await shownIdentity(page);
      assert.equal(shown.request, `GET ${deepLink}`);
      assert.equal(shown.user, 'erin');
      assert.equal(shown.email, 'erin@example.org');
      assert.equal(shown.username, 'erin');
      assert.equal(shown.claims.sub, 'erin');
      await screenshot(page, 'upstream-signed-in-oidc-provider');

      // What the provider issued: standard claims, a boolean email_verified, aud a string.
      const token = idp.idTokens.at(-1);
      assert.ok(token, `an ID token was issued (${idp.errors.join('; ')})`);
      assert.equal(typeof token.payload.aud, 'string');
      assert.equal(token.payload.aud, idp.clientId);
      assert.equal(token.payload.email_verified, true);
      assert.equal(token.payload.name, 'Erin Example');
      assert.equal(token.payload.iss, idp.issuer);

      const me = await pageFetch(page, '/.jumpgate/userinfo');
      assert.equal(me.status, 200);
      assert.deepEqual(
        { sub: me.json.sub, email: me.json.email, username: me.json.username, name: me.json.name },
        { sub: 'erin', email: 'erin@example.org', username: 'erin', name: 'Erin Example' },
      );
      const cookie = sessionCookie(await context.cookies(B));
      assert.ok(cookie && cookie.secure && cookie.httpOnly && cookie.sameSite === 'Lax', JSON.stringify(cookie));
    });
  });

  test('3. groups decide /admin; a suspended user is thrown out at the next sync', { timeout: 60_000 }, async () => {
    // bob is in "Staff" only: the site lets him in, /admin does not.
    await env.command('next-login bob');
    await withBrowser(async ({ page }) => {
      const response = await page.goto(`${A}/admin/settings?tab=users`);
      assert.equal(page.url(), `${A}/admin/settings?tab=users`);
      await checkGatewayPage(page, response, { status: 403, title: 'Access refused', forbidden });
      await screenshot(page, 'gateway-403-access-refused');
      const home = await page.goto(`${A}/`);
      assert.equal(home.status(), 200);
      assert.equal((await shownIdentity(page)).user, env.info.users.bob);
    });

    // carol is signed in, then suspended in the directory.
    await env.command('next-login carol');
    try {
      await withBrowser(async ({ page }) => {
        const first = await page.goto(`${A}/dashboard`);
        assert.equal(first.status(), 200);
        assert.equal((await shownIdentity(page)).user, env.info.users.carol);
        await env.command('suspend carol');
        const started = Date.now();
        const refused = await reloadUntil(page, (r) => r.status() === 403, 15_000, "carol's suspension to take effect");
        const seconds = (Date.now() - started) / 1000;
        assert.ok(seconds < 15, `thrown out after ${seconds}s`);
        await checkGatewayPage(page, refused, { status: 403, title: 'Access refused', forbidden });
        await screenshot(page, 'gateway-403-suspended');
        // Her session is gone on the gateway, not merely refused. (The 403 page allows no
        // scripts to fetch anything, so this asks from a public page.)
        await page.goto(`${A}/public/check`);
        const me = await pageFetch(page, '/.jumpgate/userinfo');
        assert.equal(me.status, 401, me.text);
        const api = await pageFetch(page, '/dashboard', { headers: JSON_ACCEPT });
        assert.equal(api.status, 401, 'no session any more: sign in again');
        assert.equal(api.json.error, 'sign_in_required');
      });
    } finally {
      await env.command('reactivate carol');
    }
  });

  test('4. step-up: a fresh MFA sign-in before sensitive routes', { timeout: 60_000 }, async () => {
    // The environment always configures step-up; a build without it fails here.
    assert.equal(env.info.step_up.enabled, true);
    await env.command('next-login alice');
    await withBrowser(async ({ page }) => {
      const home = await page.goto(`${A}/`);
      assert.equal(home.status(), 200);
      assert.equal((await shownIdentity(page)).stepUpTime, '(none)');

      // Scripts get a 401 they can act on, not a redirect.
      const xhr = await pageFetch(page, '/step-up/data', { headers: JSON_ACCEPT });
      assert.equal(xhr.status, 401, xhr.text);
      assert.match(xhr.headers['www-authenticate'] ?? '', /^Bearer error="insufficient_user_authentication"/);
      assert.equal(typeof xhr.json.step_up_url, 'string');
      assert.ok(!xhr.text.includes('eyJ'));
      // A step-up with the safe methods exempt: GET passes, POST is stopped.
      const get = await pageFetch(page, '/step-up-post/transfer', { headers: JSON_ACCEPT });
      assert.equal(get.status, 200, get.text);
      const post = await pageFetch(page, '/step-up-post/transfer', {
        method: 'POST',
        headers: { ...JSON_ACCEPT, 'content-type': 'application/json' },
        body: '{"amount":1}',
      });
      assert.equal(post.status, 401, post.text);
      assert.match(post.headers['www-authenticate'] ?? '', /insufficient_user_authentication/);

      // A navigation goes through the step-up application (MFA) and comes back.
      const logins = Number(await env.command('logins'));
      await page.goto(`${A}/step-up/report?period=week`);
      await page.waitForURL(`${A}/step-up/report?period=week`);
      assert.equal(Number(await env.command('logins')), logins + 1, 'one more sign-in at the IdP');
      const shown = await shownIdentity(page);
      assert.equal(shown.request, 'GET /step-up/report?period=week');
      assert.equal(shown.user, env.info.users.alice);
      assert.match(shown.stepUpTime, /^\d{10}$/);
      await screenshot(page, 'upstream-after-step-up');

      // Now the script's requests pass too, the POST included.
      const again = await pageFetch(page, '/step-up/data', { headers: JSON_ACCEPT });
      assert.equal(again.status, 200, again.text);
      const posted = await pageFetch(page, '/step-up-post/transfer', {
        method: 'POST',
        headers: { ...JSON_ACCEPT, 'content-type': 'application/json' },
        body: '{"amount":1}',
      });
      assert.equal(posted.status, 200, posted.text);
      assert.equal(posted.json.method, 'POST');
      assert.equal(posted.json.identity.user, env.info.users.alice);
    });
  });

  test('5. logout ends the session, and the back button does not revive it', { timeout: 60_000 }, async () => {
    await env.command('next-login chooser');
    await withBrowser(async ({ context, page }) => {
      await page.goto(`${A}/account?section=profile`);
      await Promise.all([
        page.waitForURL(`${A}/account?section=profile`),
        page.getByRole('link', { name: 'Alice Tester' }).click(),
      ]);
      assert.equal((await shownIdentity(page)).user, env.info.users.alice);
      const ended = Number(await env.command('sessions-ended'));

      // Logout: the gateway ends its session and the IdP's, and the IdP sends the browser
      // back to the registered public page.
      await page.goto(`${A}/.jumpgate/logout`);
      await page.waitForURL(`${A}/public/signed-out`);
      assert.equal((await shownIdentity(page)).user, '(none)');
      assert.equal(sessionCookie(await context.cookies(A)), undefined, 'session cookie removed');
      assert.equal(Number(await env.command('sessions-ended')), ended + 1, 'IdP session ended too');
      const me = await pageFetch(page, '/.jumpgate/userinfo');
      assert.equal(me.status, 401);

      // Back to the protected page: the logout's Clear-Site-Data emptied the browser's
      // cache, so it asks the gateway again instead of showing the page from history, and
      // is sent to sign in.
      await page.goBack();
      assert.ok(page.url().startsWith(`${env.info.idp.base}/oauth2/auth?`), `sent to sign in, at ${page.url()}`);
      await page.locator('h1', { hasText: 'Fake JumpCloud' }).waitFor();
      assert.equal(await page.locator('#user').count(), 0, 'the protected page is not shown');
    });
  });

  test('6. a WebSocket through the gateway stays up and echoes', { timeout: 60_000 }, async () => {
    await env.command('next-login alice');
    await withBrowser(async ({ page }) => {
      await page.goto(`${A}/ws-page`);
      await page.locator('#status', { hasText: 'open' }).waitFor();
      const sent = [];
      for (let i = 1; i <= 6; i++) {
        const msg = `hello ${i} ${'x'.repeat(i * 100)}`;
        sent.push(msg);
        await page.evaluate((m) => window.wsSend(m), msg);
        await page.waitForFunction((m) => window.wsReceived.includes(m), msg, { timeout: 5_000 });
        // Spread the messages over a few seconds: the tunnel must stay up between them.
        await page.waitForTimeout(600);
      }
      const state = await page.evaluate(() => ({
        opens: window.wsOpens,
        readyState: window.ws.readyState,
        received: window.wsReceived,
        url: window.ws.url,
      }));
      assert.equal(state.opens, 1, 'one connection, never reopened');
      assert.equal(state.readyState, 1, 'still open');
      assert.deepEqual(state.received, sent);
      assert.equal(state.url, `${A.replace('https:', 'wss:')}/ws`);
      await screenshot(page, 'upstream-websocket-echo');
    });

    // Without a session the gateway refuses the upgrade.
    await withBrowser(async ({ page }) => {
      await page.goto(`${A}/public/page`);
      const outcome = await page.evaluate(
        () =>
          new Promise((resolve) => {
            const ws = new WebSocket(`wss://${location.host}/ws`);
            ws.onopen = () => resolve('open');
            ws.onclose = (e) => resolve(`closed ${e.code}`);
          }),
      );
      assert.equal(outcome, 'closed 1006');
    });
  });

  test("7. the gateway's own pages are readable and leak nothing", { timeout: 90_000 }, async () => {
    const cases = [
      { name: 'gateway-400-sign-in-expired', url: `${A}/.jumpgate/callback?state=bogus-state-0123456789&code=abc`, status: 400, title: 'Sign-in expired' },
      { name: 'gateway-404-not-found', url: `${A}/.jumpgate/nothing-here`, status: 404, title: 'Not found' },
      { name: 'gateway-200-signed-out', url: `${A}/.jumpgate/logout`, status: 200, title: 'Signed out' },
      { name: 'gateway-403-sign-in-refused', url: `${A}/welcome`, status: 403, title: 'Sign-in refused', login: 'dave' },
      { name: 'gateway-503-sign-in-unavailable', url: `${C}/private`, status: 503, title: 'Sign-in unavailable' },
      { name: 'gateway-502-service-unavailable', url: `${C}/down/status`, status: 502, title: 'Service unavailable' },
      { name: 'gateway-401-sign-in-required', url: `${D}/private`, status: 401, title: 'Sign-in required' },
    ];
    await withBrowser(async ({ page }) => {
      for (const c of cases) {
        if (c.login) await env.command(`next-login ${c.login}`);
        const response = await page.goto(c.url);
        await screenshot(page, c.name);
        await checkGatewayPage(page, response, { status: c.status, title: c.title, forbidden });
        const headers = response.headers();
        assert.equal(headers['cache-control'], 'no-store', `${c.name}: never cached`);
        assert.match(headers['content-security-policy'] ?? '', /default-src 'none'/, `${c.name}: CSP`);
      }
    });
  });
});
