// Drives the web console in the system Chromium, for tests/browser.rs.
//
// Usage: node console.mjs '<json config>'   config: { url, apiKey, screenshots (a directory) }
// Prints JSON lines: {"alive": [node ids]} once three members show alive; then, after reading
// "killed <node id>" on stdin, {"dead_after_ms": N} when that row shows dead; then
// {"published": true, "tail": "<live tail text>"} after publishing from the form; exits 0.

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
  page.on("console", (message) => process.stderr.write(`console page: ${message.text()}\n`));
  await page.goto(`${config.url}/console`);
  await page.fill("#api-key", config.apiKey);
  await page.click("#signin-form button[type=submit]");
  await page.waitForFunction(
    () => document.querySelectorAll('#members tr[data-state="alive"]').length === 3,
    null,
    { timeout: 15_000 },
  );
  const alive = await page.$$eval("#members tr", (rows) => rows.map((row) => row.dataset.nodeId));
  await page.screenshot({ path: `${config.screenshots}/console-members.png` });
  say({ alive });

  const [, victim] = (await nextCommand()).split(" ");
  const killedAt = Date.now();
  await page.waitForFunction(
    (id) => document.querySelector(`#members tr[data-node-id="${id}"]`)?.dataset.state === "dead",
    victim,
    { timeout: 5_000 },
  );
  say({ dead_after_ms: Date.now() - killedAt });
  await page.screenshot({ path: `${config.screenshots}/console-dead.png` });

  // Publish from the form to the channel the live tail follows.
  await page.fill("#tail-channel", "console-e2e");
  await page.click("#tail-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("tail-state").textContent === "connected",
    null, { timeout: 10_000 });
  await page.fill("#publish-channel", "console-e2e");
  await page.fill("#publish-type", "note");
  await page.fill("#publish-data", '{"text": "from the console form"}');
  await page.click("#publish-form button[type=submit]");
  await page.waitForFunction(
    () => document.getElementById("tail-log").textContent.includes("from the console form"),
    null,
    { timeout: 10_000 },
  );
  await page.screenshot({ path: `${config.screenshots}/console-tail.png` });
  say({ published: true, tail: await page.textContent("#tail-log") });
} catch (error) {
  say({ error: String(error?.stack ?? error) });
  process.exitCode = 1;
} finally {
  input.close();
  await browser.close();
}
