// Shared by every browser check run from the Rust tests (tests/src/browser.rs):
// the Debian chromium, headless, with a fresh profile; and the line protocol
// with the Rust side: each JSON line on stdout is a report or a question
// ({"await": ...}, answered by one JSON line on stdin); the last line is the
// result.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

/** The input the Rust side passed (argv[2], JSON). */
export const input = JSON.parse(process.argv[2] || "{}");

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Send one JSON line to the Rust side. */
export function emit(value) {
  process.stdout.write(JSON.stringify(value) + "\n");
}

/** Ask the Rust side for something; its one-line JSON answer. */
export async function ask(question) {
  emit({ await: question });
  const { value, done } = await lines.next();
  if (done) throw new Error(`no answer to ${JSON.stringify(question)}`);
  return JSON.parse(value);
}

/** A browser context of the system chromium with a fresh profile; close() removes it.
 * `args`: extra command-line switches (e.g. which certificate to trust). */
export async function launch({ args = [] } = {}) {
  const profile = mkdtempSync(join(tmpdir(), "ringway-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: input.chromium || "/usr/bin/chromium",
    headless: true,
    viewport: { width: 900, height: 640 },
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      ...args,
    ],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/** Run `main`; print its result as the last line, or fail with exit 1. */
export function run(main) {
  main().then(
    (result) => { emit(result); process.exit(0); },
    (error) => { process.stderr.write(`${error.stack || error}\n`); process.exit(1); },
  );
}
