// The admin dashboard in a real browser (tests/tests/admin_dashboard.rs):
// every configured server shows up with its state; a drain sent to the API
// from outside the page shows as "draining" within the page's refresh
// period; the page's own buttons, with the token entered, put the server
// back; the page fits a phone's width. Screenshots go to args.artifacts.
//
// args: { admin, token, servers: [{ upstream, addr }], drain: { upstream, addr }, artifacts }

const rowOf = (page, s) => page.locator(`tr[data-upstream="${s.upstream}"][data-server="${s.addr}"]`);

async function stateOf(page, s) {
  return (await rowOf(page, s).locator('.badge').textContent()).trim();
}

// Wait until the server's badge reads `state`; resolves the time it took.
async function waitForState(page, s, state, timeout) {
  const started = Date.now();
  await page.waitForFunction(
    ([up, addr, want]) => {
      const badge = document.querySelector(`tr[data-upstream="${up}"][data-server="${addr}"] .badge`);
      return badge && badge.textContent.trim() === want;
    },
    [s.upstream, s.addr, state],
    { timeout, polling: 50 },
  );
  return Date.now() - started;
}

export default async ({ page, args }) => {
  const base = `http://${args.admin}`;
  await page.goto(`${base}/`);
  await page.waitForFunction(() => Number(document.body.dataset.refreshes || 0) >= 1);
  const refreshMs = Number(await page.evaluate(() => document.body.dataset.refreshMs));

  const initial = {};
  for (const s of args.servers) {
    await rowOf(page, s).waitFor();
    initial[`${s.upstream}/${s.addr}`] = await stateOf(page, s);
  }
  const charts = await page.locator('canvas.chart').count();
  const tokenBox = await page.locator('#control').isVisible();
  const buttonsBeforeToken = await rowOf(page, args.drain).locator('button[data-action="drain"]').isVisible();

  // A drain through the API, not through the page.
  const url = `${base}/api/upstreams/${encodeURIComponent(args.drain.upstream)}/servers/${encodeURIComponent(args.drain.addr)}/drain`;
  const sent = Date.now();
  const r = await fetch(url, { method: 'POST', headers: { Authorization: `Bearer ${args.token}` } });
  if (r.status !== 200) throw new Error(`drain through the API answered ${r.status}: ${await r.text()}`);
  await waitForState(page, args.drain, 'draining', 2 * refreshMs + 5000);
  const drainedAfterMs = Date.now() - sent;
  await page.screenshot({ path: `${args.artifacts}/admin-dashboard.png`, fullPage: true });

  // The page's own buttons: enter the token, press "ready".
  await page.fill('#token', args.token);
  await page.click('#token-form button[type="submit"]');
  const ready = rowOf(page, args.drain).locator('button[data-action="ready"]');
  await ready.waitFor({ state: 'visible' });
  await page.waitForFunction(
    ([up, addr]) => {
      const b = document.querySelector(`tr[data-upstream="${up}"][data-server="${addr}"] button[data-action="ready"]`);
      return b && !b.disabled;
    },
    [args.drain.upstream, args.drain.addr],
  );
  await ready.click();
  await waitForState(page, args.drain, 'up', 2 * refreshMs + 5000);
  const tokenKept = await page.evaluate(() => sessionStorage.getItem('ringway-admin-token') !== null);

  // A phone: nothing wider than the screen, the server's buttons reachable.
  await page.setViewportSize({ width: 390, height: 844 });
  const before = Number(await page.evaluate(() => document.body.dataset.refreshes));
  await page.waitForFunction((n) => Number(document.body.dataset.refreshes) > n, before);
  const phone = await page.evaluate(() => ({
    pageWidth: document.documentElement.scrollWidth,
    viewport: window.innerWidth,
  }));
  const phoneButtonVisible = await rowOf(page, args.drain).locator('button[data-action="maint"]').isVisible();
  await page.screenshot({ path: `${args.artifacts}/admin-dashboard-phone.png`, fullPage: true });

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
  };
};
