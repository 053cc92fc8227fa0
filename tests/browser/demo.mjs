// Drives the broadcast banner demo in the system Chromium, for tests/browser.rs.
//
// Usage: node demo.mjs '<json config>'   config: { url, token, screenshots }
// Prints JSON lines: {"ready": true} once the page's socket is connected; after "sent" on stdin,
// {"banner": {"type", "text"}} once the banner shows; then {"acknowledged": true} once the
// acknowledge button hid it; exits 0.

import { commands, drive, say } from "./driver.mjs";

const config = JSON.parse(process.argv[2]);
const input = commands();

await drive("demo", async (page) => {
  await page.goto(`${config.url}/demo/broadcast?token=${encodeURIComponent(config.token)}`);
  await page.waitForFunction(() => document.body.dataset.state === "connected", null, { timeout: 10_000 });
  say({ ready: true });
  await input.next();
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
});
input.close();
