// The demo page in two tabs of one browser, through the proxy: both tabs
// are live at once with their own sessions and the one remembered name;
// they exchange messages; the node of tab A is killed (by the Rust side);
// tab B says more; tab A reconnects, resumes, and must show the missed
// messages once. Input: {url, screenshot}. Result: what each tab shows.
import { ask, emit, input, launch, run } from "./lib.mjs";

const timeout = 30000;

/** Open the demo in a new tab and wait until it is connected. */
async function open(context) {
  const page = await context.newPage();
  await page.goto(input.url);
  await page.waitForFunction(() => document.querySelector("#status").dataset.worker, null, { timeout });
  return page;
}

const worker = (page) => page.$eval("#status", (s) => s.dataset.worker);
const lines = (page) => page.$$eval("#log div", (ds) => ds.map((d) => d.textContent));

async function say(page, text) {
  await page.fill("#say input[name=text]", text);
  await page.click("#say button");
}

async function shows(page, text) {
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#log div")].some((d) => d.textContent.endsWith(`: ${t}`)),
    text,
    { timeout },
  );
}

run(async () => {
  const browser = await launch();
  const { context } = browser;
  const a = await open(context);
  // Tab B must live on another node than A: a new tab is a new session.
  let b = await open(context);
  for (let i = 0; i < 12 && (await worker(b)) === (await worker(a)); i++) {
    await b.close();
    b = await open(context);
  }
  const before = { a: await worker(a), b: await worker(b) };
  if (before.a === before.b) throw new Error(`both tabs stayed on ${before.a}`);
  const names = await Promise.all([a, b].map((p) => p.$eval("#who input[name=user]", (i) => i.value)));
  emit({ tabs: before, names });

  await say(a, "a1");
  await say(b, "b1");
  for (const page of [a, b]) for (const t of ["a1", "b1"]) await shows(page, t);

  await ask({ kill: before.a });
  for (const t of ["b2", "b3", "b4"]) {
    await say(b, t);
    await shows(b, t);
  }
  for (const t of ["b2", "b3", "b4"]) await shows(a, t);
  await a.waitForFunction((w) => document.querySelector("#status").dataset.worker !== w, before.a, { timeout });
  // Delivery is in order: anything shown twice shows before this one.
  await say(b, "b5");
  await shows(a, "b5");
  await a.screenshot({ path: input.screenshot, fullPage: true });
  const result = {
    before,
    after: { a: await worker(a), b: await worker(b) },
    names,
    a: await lines(a),
    b: await lines(b),
    status_a: await a.$eval("#status", (s) => s.textContent),
  };
  await browser.close();
  return result;
});
