// jumpgate in a real browser: headless Chromium through the TLS gateway, signing in at the
// fake JumpCloud (gateway a) and at panva's oidc-provider (gateway b), and the path of
// Defguard's JumpCloud guide through the shipped config/defguard.toml (gateway e, in front
// of the Defguard stand-ins), with the gateway's own pages screenshotted into
// tests/e2e/screenshots/.
//
// Run with tests/e2e/run.sh (it builds examples/e2e_env.rs and installs what is missing).

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
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
let E; // gateway e: Defguard's core (the dashboard) and Edge (enrollment)
let ENROLL;
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

/**
 * A request to a gateway from Node, as another application's server sends it: no browser,
 * no session. Trusts the development CA; resolves to { status, headers, text, json }.
 */
function serverFetch(url, { method = 'GET', headers = {}, body } = {}) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port: u.port,
        servername: u.hostname,
        ca: readFileSync(env.info.ca),
        method,
        path: `${u.pathname}${u.search}`,
        headers: { host: u.host, ...headers },
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          text += d;
        });
        res.on('end', () => {
          let json = null;
          try {
            json = JSON.parse(text);
          } catch {
            // not JSON
          }
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${url}: no answer within 10 s`)));
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

/** Waits until a page of the Defguard stand-in shows `view` and its first API call settled. */
async function defguardView(page, view) {
  await page.locator(`#app[data-view="${view}"][data-ready="true"]`).waitFor();
}

/** Whether `url` is the fake JumpCloud's authorization endpoint, for the step-up or not. */
function atJumpCloud(url, { stepUp }) {
  return url.href.startsWith(`${env.info.idp.base}/oauth2/auth?`) && (url.searchParams.get('prompt') === 'login') === stepUp;
}

const JSON_BODY = { accept: 'application/json', 'content-type': 'application/json' };
/** A WireGuard public key (32 bytes). */
const PUBKEY = 'AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=';

before(async () => {
  idp = await startIdp();
  env = await startEnv(idp);
  const g = env.info.gateways;
  A = g.a.url;
  B = g.b.url;
  C = g.c.url;
  D = g.d.url;
  E = g.e.url;
  ENROLL = g.e.enroll;
  await idp.register(`${B}/.jumpgate/callback`);
  forbidden = [
    ...env.info.secrets,
    idp.clientSecret,
    env.info.upstream,
    env.info.idp.base,
    ...Object.values(env.info.users),
    env.info.defguard.core,
    env.info.defguard.edge,
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

describe('jumpgate in a real browser', { timeout: 300_000 }, () => {
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
      assert.deepEqual(shown.groups.split(',').map((s) => s.trim()).sort(), ['Admins', 'Defguard Admins', 'Staff']);
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
      assert.deepEqual([...payload.groups].sort(), ['Admins', 'Defguard Admins', 'Staff']);
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

  // Defguard behind the shipped config/defguard.toml (gateway e), on the path of Defguard's
  // JumpCloud guide: JumpCloud's Login URL is https://DEFGUARD/auth/login.
  test('8. Defguard, admin: gateway sign-in, step-up at page load, "Sign in with JumpCloud", settings saved by the page', { timeout: 60_000 }, async () => {
    await env.command('next-login chooser');
    await withBrowser(async ({ page }) => {
      const stepUps = Number(await env.command('step-ups'));
      const logins = Number(await env.command('defguard-logins'));
      // Not signed in at the gateway: JumpCloud first.
      await page.goto(`${E}/auth/login`);
      assert.ok(atJumpCloud(new URL(page.url()), { stepUp: false }), page.url());
      await page.locator('h1', { hasText: 'Fake JumpCloud' }).waitFor();
      await screenshot(page, 'defguard-01-gateway-sign-in');
      // Back at the gateway, the admin's first page load goes through the step-up
      // application (MFA) before the page: Defguard's scripts could never complete a step-up
      // offered to them as a 401.
      await Promise.all([
        page.waitForURL((u) => atJumpCloud(u, { stepUp: true })),
        page.getByRole('link', { name: 'Alice Tester' }).click(),
      ]);
      await page.locator('h1', { hasText: 'Fake JumpCloud' }).waitFor();
      await screenshot(page, 'defguard-02-admin-step-up-at-page-load');
      await Promise.all([page.waitForURL(`${E}/auth/login`), page.getByRole('link', { name: 'Alice Tester' }).click()]);
      assert.equal(Number(await env.command('step-ups')), stepUps + 1, 'one step-up, through the MFA application');

      // Defguard's login page calls auth_info through the gateway and shows the button.
      await defguardView(page, 'login');
      const button = page.locator('#openid-login');
      assert.equal((await button.innerText()).trim(), 'Sign in with JumpCloud');
      assert.equal(await page.locator('#error').isHidden(), true);
      await screenshot(page, 'defguard-03-admin-login-page-jumpcloud-button');

      // JumpCloud's SSO session makes it one click: back at /auth/callback (a top-level GET
      // navigation), whose script posts the code, then the dashboard.
      await Promise.all([page.waitForURL(`${E}/me`), button.click()]);
      await defguardView(page, 'me');
      assert.equal(await page.locator('#me-username').innerText(), 'alice');
      assert.equal(await page.locator('#me-role').innerText(), 'admin');
      assert.equal(Number(await env.command('defguard-logins')), logins + 1, 'signed in to Defguard');
      await screenshot(page, 'defguard-04-admin-dashboard');

      // Settings, moving within the app (its scripts only) and saving from its own script:
      // the step-up at page load covers the write.
      await page.locator('#nav-settings').click();
      await defguardView(page, 'settings');
      assert.equal(await page.locator('#instance-name').inputValue(), 'Defguard');
      await page.locator('#instance-name').fill('Defguard behind jumpgate');
      await page.locator('#save').click();
      await page.locator('#status', { hasText: 'Saved' }).waitFor();
      assert.equal(await page.locator('#error').isHidden(), true, await page.locator('#error').innerText());
      assert.equal(await env.command('defguard-settings'), 'Defguard behind jumpgate');
      await screenshot(page, 'defguard-05-admin-settings-saved');

      // A page load within the first half of the window is not sent through again.
      await page.reload();
      await defguardView(page, 'settings');
      assert.equal(await page.locator('#instance-name').inputValue(), 'Defguard behind jumpgate');
      assert.equal(Number(await env.command('step-ups')), stepUps + 1);
    });
  });

  test('9. Defguard, ordinary user: a readable 403 on admin pages, self-service, the consent form', { timeout: 60_000 }, async () => {
    await env.command('next-login chooser');
    await withBrowser(async ({ page }) => {
      const stepUps = Number(await env.command('step-ups'));
      await page.goto(`${E}/auth/login`);
      await page.locator('h1', { hasText: 'Fake JumpCloud' }).waitFor();
      await Promise.all([page.waitForURL(`${E}/auth/login`), page.getByRole('link', { name: 'Bob Tester' }).click()]);
      assert.equal(Number(await env.command('step-ups')), stepUps, 'ordinary users are never sent to the step-up');
      await defguardView(page, 'login');
      await screenshot(page, 'defguard-06-user-login-page');
      await Promise.all([page.waitForURL(`${E}/me`), page.locator('#openid-login').click()]);
      await defguardView(page, 'me');
      assert.equal(await page.locator('#me-username').innerText(), 'bob');
      assert.equal(await page.locator('#me-role').innerText(), 'user');
      await screenshot(page, 'defguard-07-user-dashboard');

      // An admin page: the gateway's own readable 403 page, leaking nothing.
      const refused = await page.goto(`${E}/admin/users`);
      assert.equal(page.url(), `${E}/admin/users`);
      await checkGatewayPage(page, refused, { status: 403, title: 'Access refused', forbidden });
      await screenshot(page, 'defguard-08-user-403-admin-page');

      // Self-service from the page's script: password, own device, profile.
      await page.goto(`${E}/me`);
      await defguardView(page, 'me');
      const password = env.info.defguard.password;
      const changed = await pageFetch(page, '/api/v1/user/change_password', {
        method: 'PUT',
        headers: JSON_BODY,
        body: JSON.stringify({ old_password: password, new_password: password }),
      });
      assert.equal(changed.status, 200, changed.text);
      const device = await pageFetch(page, '/api/v1/device/bob', {
        method: 'POST',
        headers: JSON_BODY,
        body: JSON.stringify({ name: 'bob-laptop', wireguard_pubkey: PUBKEY }),
      });
      assert.equal(device.status, 201, device.text);
      assert.equal(device.json.device.name, 'bob-laptop');
      const me = await pageFetch(page, '/api/v1/me', { headers: JSON_ACCEPT });
      assert.equal(me.status, 200, me.text);
      assert.deepEqual(me.json.devices.map((d) => d.name), ['bob-laptop']);
      // An admin API from a script: the gateway's 403 as JSON, never a page or a redirect.
      const settings = await pageFetch(page, '/api/v1/settings', { headers: JSON_ACCEPT });
      assert.equal(settings.status, 403, settings.text);
      assert.equal(settings.json.error, 'forbidden');
      assert.match(settings.headers['content-type'], /^application\/json/);
      for (const secret of forbidden) {
        if (secret) assert.ok(!settings.text.includes(secret), 'the refusal leaks nothing');
      }

      // Defguard as an OpenID provider: the consent page reads the client's name and posts a
      // native form, which goes through.
      const { oauth } = env.info.defguard;
      const state = 'e2e-consent-state-0001';
      const query = new URLSearchParams({
        client_id: oauth.client_id,
        redirect_uri: oauth.redirect_uri,
        response_type: 'code',
        scope: 'openid profile email',
        state,
      });
      await page.goto(`${E}/api/v1/oauth/authorize?${query}`);
      assert.equal(new URL(page.url()).pathname, '/consent');
      await defguardView(page, 'consent');
      assert.equal(await page.locator('#client-name').innerText(), 'Wiki');
      assert.equal(await page.locator('#error').isHidden(), true);
      await screenshot(page, 'defguard-09-user-consent');
      await Promise.all([page.waitForURL((u) => u.href.startsWith(`${oauth.redirect_uri}?`)), page.locator('#accept').click()]);
      const back = new URL(page.url());
      assert.equal(back.searchParams.get('state'), state);
      const code = back.searchParams.get('code');
      assert.ok(code, page.url());
      assert.match((await shownIdentity(page)).request, /^GET \/public\/wiki\/callback\?code=/);
      await screenshot(page, 'defguard-10-user-consent-accepted');

      // The relying party's server redeems the code through the gateway, with no session.
      const basic = Buffer.from(`${oauth.client_id}:${oauth.client_secret}`).toString('base64');
      const tokens = await serverFetch(`${E}/api/v1/oauth/token`, {
        method: 'POST',
        headers: { authorization: `Basic ${basic}`, accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: oauth.redirect_uri }).toString(),
      });
      assert.equal(tokens.status, 200, tokens.text);
      assert.equal(typeof tokens.json.id_token, 'string');
      const claims = JSON.parse(Buffer.from(tokens.json.id_token.split('.')[1], 'base64url').toString());
      assert.equal(claims.sub, 'bob');
    });
  });

  test('10. Defguard Edge: the enrollment page and the client-MFA WebSocket need no session', { timeout: 60_000 }, async () => {
    await env.command('next-login chooser');
    await withBrowser(async ({ context, page }) => {
      // The enrollment host is public: no sign-in on the way, no session made.
      const response = await page.goto(`${ENROLL}/enrollment`);
      assert.equal(response.status(), 200);
      assert.equal(page.url(), `${ENROLL}/enrollment`);
      await defguardView(page, 'enrollment');
      await page.locator('#token').fill(env.info.defguard.enrollment_token);
      await page.locator('#start').click();
      await page.locator('#status', { hasText: 'Enrollment started for alice' }).waitFor();
      assert.equal(await page.locator('#error').isHidden(), true);
      // The next enrollment step carries the cookie the start set, through the gateway.
      const network = await pageFetch(page, '/api/v1/enrollment/network_info', {
        method: 'POST',
        headers: JSON_BODY,
        body: JSON.stringify({ pubkey: PUBKEY }),
      });
      assert.equal(network.status, 200, network.text);
      await screenshot(page, 'defguard-11-enrollment');

      // The desktop client's remote MFA: it waits on the WebSocket while the phone approves.
      const token = 'e2e-remote-mfa-1';
      await page.evaluate((token) => {
        const section = document.createElement('section');
        section.innerHTML = '<h2>Client MFA</h2><p>WebSocket: <span id="mfa-status">connecting</span></p><pre id="mfa-log"></pre>';
        document.body.appendChild(section);
        window.mfa = { opened: false, messages: [], closed: null };
        const ws = new WebSocket(`wss://${location.host}/api/v1/client-mfa/remote?token=${token}`);
        ws.onopen = () => {
          window.mfa.opened = true;
          document.getElementById('mfa-status').textContent = 'open, waiting for the approval';
        };
        ws.onmessage = (e) => {
          window.mfa.messages.push(String(e.data));
          const shown = JSON.parse(e.data);
          document.getElementById('mfa-log').textContent = JSON.stringify({ ...shown, preshared_key: '(received)' }, null, 2);
        };
        ws.onclose = (e) => {
          window.mfa.closed = e.code;
          document.getElementById('mfa-status').textContent = `closed ${e.code}`;
        };
      }, token);
      await page.waitForFunction(() => window.mfa.opened, null, { timeout: 10_000 });
      const approved = await pageFetch(page, '/api/v1/client-mfa/finish-remote', {
        method: 'POST',
        headers: JSON_BODY,
        body: JSON.stringify({ token, code: '123456' }),
      });
      assert.equal(approved.status, 200, approved.text);
      await page.waitForFunction(() => window.mfa.messages.length > 0 && window.mfa.closed !== null, null, { timeout: 10_000 });
      const mfa = await page.evaluate(() => window.mfa);
      const message = JSON.parse(mfa.messages[0]);
      assert.equal(message.type, 'mfa_success');
      assert.ok(message.preshared_key);
      // Edge's close frame came through (it sends no code: 1005), not a dropped tunnel (1006).
      assert.ok([1000, 1005].includes(mfa.closed), `closed by Edge, not dropped: ${mfa.closed}`);
      await screenshot(page, 'defguard-12-client-mfa-websocket');
      assert.equal(sessionCookie(await context.cookies(ENROLL)), undefined, 'no gateway session');

      // The dashboard host is not public: the same browser is sent to sign in.
      await page.goto(`${E}/me`);
      assert.ok(atJumpCloud(new URL(page.url()), { stepUp: false }), page.url());
    });
  });
  // The admin listener's status page, after the scenarios above have signed people in and
  // refused some: what an operator sees first, and nothing secret on it.
  test('11. the status page on the admin listener: readable, current, and no secrets', { timeout: 60_000 }, async () => {
    const admin = env.info.gateways.a.admin;
    assert.ok(admin, 'gateway a has an admin listener');
    await withBrowser(async ({ page }) => {
      const response = await page.goto(`${admin}/status`);
      assert.equal(response.status(), 200);
      assert.equal(response.headers()['cache-control'], 'no-store');
      await screenshot(page, 'admin-status-a');
      const html = await response.text();
      assert.match(await page.locator('h1').innerText(), /^jumpgate \S+ ready$/);
      assert.equal(await page.title(), 'jumpgate status');
      const directory = await page.locator('#directory').innerText();
      assert.match(directory, /\d+ users, \d+ groups, \d+ memberships/, directory);
      const lastHour = await page.locator('#last-hour').innerText();
      assert.match(lastHour, /sign-ins\s+ok \d+/, lastHour);
      assert.match(lastHour, /denials\s+\S+ \d+/, `scenario 3's refusals are counted: ${lastHour}`);
      assert.match(await page.locator('#certificate').innerText(), /localhost/);
      // Secrets, user ids and tokens never; internal addresses are the operator's to see.
      for (const s of [...env.info.secrets, idp.clientSecret, ...Object.values(env.info.users)]) {
        if (s) assert.ok(!html.includes(s), `the status page leaks ${JSON.stringify(s.slice(0, 6))}…`);
      }
      assert.ok(!html.includes('eyJ'), 'no token (JWT) in the page');
      assert.ok(!/PRIVATE KEY|__Host-jumpgate/.test(html), 'no key or cookie in the page');
      // The same report for scripts.
      const json = await pageFetch(page, '/status.json');
      assert.equal(json.status, 200);
      assert.equal(json.json.ready, true);
      assert.ok(json.json.last_hour.sign_ins.ok >= 1, json.text);
      assert.ok(json.json.directory.users >= 4, json.text);

      // Defguard's gateway: its directory, and groups that admit no one would be named.
      const e = await page.goto(`${env.info.gateways.e.admin}/status`);
      assert.equal(e.status(), 200);
      await screenshot(page, 'admin-status-defguard');
      assert.match(await page.locator('#config').innerText(), /sites \(2\)/);
    });
  });
});
