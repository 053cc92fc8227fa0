// Drives the web console in the system Chromium, for tests/browser.rs.
//
// Usage: node console.mjs '<json config>'   config: { url, apiKey, screenshots (a directory) }
// Prints JSON lines: {"alive": [node ids]} once three members show alive; then, after reading
// "killed <node id>" on stdin, {"dead_after_ms": N} when that row shows dead; then
// {"published": true, "tail": "<live tail text>"} after publishing from the form; exits 0.

import { commands, drive, say } from "./driver.mjs";

const config = JSON.parse(process.argv[2]);
const input = commands();

await drive("console", async (page) => {
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

  const [, victim] = (await input.next()).split(" ");
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
});
input.close();
