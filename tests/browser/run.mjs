// The scenario driver of tests/src/browser.rs: launches the system Chromium
// headless, runs one scenario module against a fresh page, and prints one
// JSON line: { ok, result | error, requests, console, page_errors }.
//
//   node run.mjs <scenario.mjs> '<json args>'
//
// A scenario is an ES module: `export default async ({ page, context, args }) => result`.
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const [, , scenarioPath, argsJson] = process.argv;
const args = JSON.parse(argsJson || '{}');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({
  viewport: args.viewport || { width: 1280, height: 900 },
  ignoreHTTPSErrors: true,
});
const requests = [];
const consoleLines = [];
const pageErrors = [];
context.on('request', (r) => requests.push(r.url()));
const page = await context.newPage();
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => pageErrors.push(String(e)));

let out;
try {
  const scenario = await import(pathToFileURL(scenarioPath).href);
  out = { ok: true, result: (await scenario.default({ page, context, args })) ?? null };
} catch (e) {
  out = { ok: false, error: String((e && e.stack) || e) };
}
await browser.close();
out.requests = requests;
out.console = consoleLines;
out.page_errors = pageErrors;
process.stdout.write(`${JSON.stringify(out)}\n`);
