// The demo page over https:// in headless chromium, through the proxy's
// TLS listener: it must open its WebSocket as wss:// and exchange a
// message. Input: {url, spki, text}; `spki` is the base64 SHA-256 of the
// server key that chromium is told to trust (the test CA is not in its
// store), so any other certificate still fails. Result: what the page used
// and showed.
import { input, launch, run } from "./lib.mjs";

const timeout = 30000;

run(async () => {
  const browser = await launch({ args: [`--ignore-certificate-errors-spki-list=${input.spki}`] });
  const page = await browser.context.newPage();
  const sockets = [];
  const received = [];
  page.on("websocket", (ws) => {
    sockets.push(ws.url());
    ws.on("framereceived", (f) => received.push(String(f.payload)));
  });
  const response = await page.goto(input.url);
  await page.waitForFunction(() => document.querySelector("#status").dataset.worker, null, { timeout });
  await page.fill("#say input[name=text]", input.text);
  await page.click("#say button");
  await page.waitForFunction(
    (t) => [...document.querySelectorAll("#log div")].some((d) => d.textContent.endsWith(`: ${t}`)),
    input.text,
    { timeout },
  );
  const result = {
    status: response.status(),
    protocol: await page.evaluate(() => location.protocol),
    page_ws_url: await page.evaluate(() => ws.url),
    sockets,
    received,
    worker: await page.$eval("#status", (s) => s.dataset.worker),
    lines: await page.$$eval("#log div", (ds) => ds.map((d) => d.textContent)),
  };
  await browser.close();
  return result;
});
