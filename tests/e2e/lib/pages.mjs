// Screenshots, and what every page the gateway makes up itself must be: readable, and
// free of tokens, secrets, internal addresses and stack traces.

import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { E2E_DIR } from './env.mjs';

export const SCREENSHOTS = path.join(E2E_DIR, 'screenshots');

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

const STACK_TRACE = [
  /\bat [\w$.<>]+ \(.*:\d+:\d+\)/, // JavaScript
  /panicked at/i,
  /stack backtrace/i,
  /RUST_BACKTRACE/,
  /\.rs:\d+/,
  /\bsrc\/[\w/]+\.rs\b/,
  /thread '.*'/,
  /Traceback \(most recent call last\)/,
  /\b(Err|Ok|Some)\(/,
  /\w+Error\s*[{(]/,
];

/**
 * Checks a page the gateway answered with: its status, its h1, readable text, and nothing
 * that must not leak. `forbidden` lists strings that must not appear (secrets, addresses).
 */
export async function checkGatewayPage(page, response, { status, title, forbidden = [] }) {
  assert.ok(response, 'no response');
  assert.equal(response.status(), status, `status of ${page.url()}`);
  const html = await response.text();
  const h1 = (await page.locator('h1').allInnerTexts()).map((t) => t.trim());
  assert.equal(h1.length, 1, `one h1 on ${page.url()}: ${JSON.stringify(h1)}`);
  assert.equal(h1[0], title);
  assert.equal(await page.title(), title, 'the title says the same as the h1');
  assert.equal(await page.locator('html').getAttribute('lang'), 'en');
  const text = (await page.locator('body').innerText()).replace(/\s+/g, ' ').trim();
  assert.ok(text.length >= 40 && text.length <= 1500, `readable amount of text: ${text}`);
  assert.match(text, /[A-Z][^.]{10,}\./, `a whole sentence for the user: ${text}`);
  assert.ok(text.includes(String(status)), `the status is shown: ${text}`);
  // Nothing sideways: the page fits a narrow window too.
  const fits = await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth);
  assert.ok(fits, 'no horizontal scrolling');

  assert.ok(!html.includes('eyJ'), 'no token (JWT) in the page');
  assert.ok(!/127\.0\.0\.1|\[::1\]|0\.0\.0\.0/.test(html), 'no internal address in the page');
  for (const s of forbidden) {
    if (s) assert.ok(!html.includes(s), `the page leaks ${JSON.stringify(s.slice(0, 6))}…`);
  }
  for (const re of STACK_TRACE) {
    assert.ok(!re.test(html), `no stack trace or error dump in the page (${re})`);
  }
  return { html, text };
}
