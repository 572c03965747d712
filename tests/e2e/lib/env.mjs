// Starts `examples/e2e_env.rs` (the fake JumpCloud, the upstream and the gateways in one
// process), reads the JSON line that describes it, and sends it commands on stdin.

import { spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const E2E_DIR = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const REPO = path.resolve(E2E_DIR, '..', '..');

/** The example binary: $E2E_ENV_BIN, else `cargo build --example e2e_env`'s output. */
function binary() {
  if (process.env.E2E_ENV_BIN) return process.env.E2E_ENV_BIN;
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
    : path.join(REPO, 'target');
  const bin = path.join(target, 'debug', 'examples', 'e2e_env');
  if (!existsSync(bin)) {
    throw new Error(`${bin} is missing: build it with \`cargo build --example e2e_env\``);
  }
  return bin;
}

/** base64(sha256(SubjectPublicKeyInfo)) of the first certificate in a PEM file. */
export function spkiHash(pemFile) {
  const cert = new X509Certificate(readFileSync(pemFile));
  const spki = cert.publicKey.export({ type: 'spki', format: 'der' });
  return createHash('sha256').update(spki).digest('base64');
}

/**
 * Starts the environment. `oidc` is { issuer, clientId, clientSecret } for gateway b.
 * Resolves to { info, command(line), log(), stop() }.
 */
export async function startEnv(oidc, { timeoutMs = 60_000 } = {}) {
  const child = spawn(binary(), [], {
    cwd: REPO,
    stdio: ['pipe', 'pipe', 'pipe'],
    env: {
      ...process.env,
      NO_COLOR: '1',
      E2E_OIDC_ISSUER: oidc.issuer,
      E2E_OIDC_CLIENT_ID: oidc.clientId,
      E2E_OIDC_CLIENT_SECRET: oidc.clientSecret,
    },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

  const lines = createInterface({ input: child.stdout });
  const waiting = [];
  const buffered = [];
  lines.on('line', (line) => {
    const w = waiting.shift();
    if (w) w.resolve(line);
    else buffered.push(line);
  });
  exited.then(({ code, signal }) => {
    for (const w of waiting.splice(0)) {
      w.reject(new Error(`e2e_env exited (${code ?? signal}) while an answer was awaited\n${tail(stderr)}`));
    }
  });
  function nextLine(ms, what) {
    if (buffered.length) return Promise.resolve(buffered.shift());
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject };
      const timer = setTimeout(() => {
        const i = waiting.indexOf(entry);
        if (i >= 0) waiting.splice(i, 1);
        reject(new Error(`timed out after ${ms} ms waiting for ${what}\n${tail(stderr)}`));
      }, ms);
      entry.resolve = (v) => {
        clearTimeout(timer);
        resolve(v);
      };
      entry.reject = (e) => {
        clearTimeout(timer);
        reject(e);
      };
      waiting.push(entry);
    });
  }

  let info;
  try {
    const first = await nextLine(timeoutMs, 'the environment to start');
    info = JSON.parse(first);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }

  let queue = Promise.resolve();
  /** Sends one command and resolves to its answer, failing unless it starts with "ok". */
  function command(line) {
    const run = async () => {
      child.stdin.write(`${line}\n`);
      const answer = await nextLine(10_000, `the answer to "${line}"`);
      if (!answer.startsWith('ok')) throw new Error(`e2e_env: "${line}" answered "${answer}"`);
      return answer.slice(2).trim();
    };
    const result = queue.then(run, run);
    queue = result.catch(() => {});
    return result;
  }

  async function stop() {
    child.stdin.end();
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  }

  return { info, command, log: () => stderr, stop, spki: spkiHash(info.cert) };
}

function tail(text, lines = 40) {
  return text.split('\n').slice(-lines).join('\n');
}
