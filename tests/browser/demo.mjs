// Drives the broadcast banner demo in the system Chromium, for tests/browser.rs.
//
// Usage: node demo.mjs '<json config>'   config: { url, token, screenshots }
// Prints JSON lines: {"ready": true} once the page's socket is connected; after "sent" on stdin,
// {"banner": {"type", "text"}} once the banner shows; then {"acknowledged": true} once the
// acknowledge button hid it; exits 0.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const config = JSON.parse(process.argv[2]);
const say = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const input = createInterface({ input: process.stdin });
const nextCommand = () => new Promise((resolve) => input.once("line", resolve));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("console", (message) => process.stderr.write(`demo page: ${message.text()}\n`));
  await page.goto(`${config.url}/demo/broadcast?token=${encodeURIComponent(config.token)}`);
  await page.waitForFunction(() => document.body.dataset.state === "connected", null, { timeout: 10_000 });
  say({ ready: true });
  await nextCommand();
  await page.waitForSelector("#banner:not(.hidden)", { timeout: 10_000 });
  const banner = await page.$eval("#banner", (el) => ({
    type: el.dataset.type,
    text: document.getElementById("banner-text").textContent,
  }));
  await page.screenshot({ path: `${config.screenshots}/demo-banner.png` });
  say({ banner });
  await page.click("#banner-ack");
  await page.waitForSelector("#banner.hidden", { state: "attached", timeout: 5_000 });
  say({ acknowledged: true });
} catch (error) {
  say({ error: String(error?.stack ?? error) });
  process.exitCode = 1;
} finally {
  input.close();
  await browser.close();
}
