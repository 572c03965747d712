// Debian's Chromium, headless, driven by playwright-core. Each browser gets a fresh profile
// directory, and trusts the gateway's certificate by its public key only
// (--ignore-certificate-errors-spki-list): every other certificate error still fails.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.E2E_CHROMIUM || '/usr/bin/chromium';

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/**
 * A fresh browser profile. Resolves to { context, page, close() }.
 * `spki` is base64(sha256(SPKI)) of the gateway's certificate.
 */
export async function openBrowser(spki) {
  const profile = mkdtempSync(path.join(os.tmpdir(), 'jumpgate-e2e-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...FLAGS, `--ignore-certificate-errors-spki-list=${spki}`],
    ignoreHTTPSErrors: false,
    viewport: { width: 1000, height: 700 },
    timeout: 30_000,
  });
  context.setDefaultTimeout(15_000);
  context.setDefaultNavigationTimeout(20_000);
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    async close() {
      await context.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}
