// The admin dashboard in a real browser (tests/tests/admin_dashboard.rs):
// every configured server shows with its state; the Rust side drains one
// through the API (asked with {"await": {"drain": …}}) and the page must
// show it draining within its refresh period; the page's own buttons, with
// the token entered, put it back; the page fits a phone's width; every URL
// the page requested is reported. Screenshots go to input.artifacts.
//
// Input: {admin, token, servers: [{upstream, addr}], drain: {upstream, addr}, artifacts}.
import { ask, input, launch, run } from "./lib.mjs";

const rowSelector = (s) => `tr[data-upstream="${s.upstream}"][data-server="${s.addr}"]`;

async function stateOf(page, s) {
  return (await page.locator(`${rowSelector(s)} .badge`).textContent()).trim();
}

/** Wait until the server's badge reads `state`. */
async function waitForState(page, s, state, timeout) {
  await page.waitForFunction(
    ([row, want]) => {
      const badge = document.querySelector(`${row} .badge`);
      return badge && badge.textContent.trim() === want;
    },
    [rowSelector(s), state],
    { timeout, polling: 50 },
  );
}

/** Wait for the page's next refresh from /stats.json. */
async function nextRefresh(page) {
  const before = Number(await page.evaluate(() => document.body.dataset.refreshes || 0));
  await page.waitForFunction((n) => Number(document.body.dataset.refreshes || 0) > n, before);
}

run(async () => {
  const browser = await launch();
  const { context } = browser;
  const requests = [];
  const pageErrors = [];
  context.on("request", (r) => requests.push(r.url()));
  const page = await context.newPage();
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.goto(`http://${input.admin}/`);
  await nextRefresh(page);
  const refreshMs = Number(await page.evaluate(() => document.body.dataset.refreshMs));

  const initial = {};
  for (const s of input.servers) {
    await page.locator(rowSelector(s)).waitFor();
    initial[`${s.upstream}/${s.addr}`] = await stateOf(page, s);
  }
  const charts = await page.locator("canvas.chart").count();
  const tokenBox = await page.locator("#control").isVisible();
  const drainButton = page.locator(`${rowSelector(input.drain)} button[data-action="drain"]`);
  const buttonsBeforeToken = await drainButton.isVisible();

  // The test drains the server through the API, outside the page.
  await ask({ drain: input.drain });
  const drained = Date.now();
  await waitForState(page, input.drain, "draining", 2 * refreshMs + 5000);
  const drainedAfterMs = Date.now() - drained;
  await page.screenshot({ path: `${input.artifacts}/admin-dashboard.png`, fullPage: true });

  // The page's own buttons: enter the token, press "ready".
  await page.fill("#token", input.token);
  await page.click('#token-form button[type="submit"]');
  const ready = `${rowSelector(input.drain)} button[data-action="ready"]`;
  await page.waitForFunction((sel) => {
    const b = document.querySelector(sel);
    return b && !b.hidden && !b.disabled;
  }, ready);
  await page.click(ready);
  await waitForState(page, input.drain, "up", 2 * refreshMs + 5000);
  const tokenKept = await page.evaluate(() => sessionStorage.getItem("ringway-admin-token") !== null);

  // A phone: nothing wider than the screen, the server's buttons reachable.
  await page.setViewportSize({ width: 390, height: 844 });
  await nextRefresh(page);
  const phone = await page.evaluate(() => ({
    page_width: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
  }));
  const phoneButtonVisible = await page
    .locator(`${rowSelector(input.drain)} button[data-action="maint"]`)
    .isVisible();
  await page.screenshot({ path: `${input.artifacts}/admin-dashboard-phone.png`, fullPage: true });
  await browser.close();

  return {
    refresh_ms: refreshMs,
    initial_states: initial,
    charts,
    token_box: tokenBox,
    buttons_before_token: buttonsBeforeToken,
    drained_after_ms: drainedAfterMs,
    token_kept: tokenKept,
    phone,
    phone_button_visible: phoneButtonVisible,
    requests,
    page_errors: pageErrors,
  };
});
