// Presence in a real browser, for tests/browser.rs: a page on one node's origin imports the
// client from there and connects to another node's track socket, so presence() is a
// cross-origin request with a bearer token (CORS).
//
// Usage: node presence.mjs '<json config>'   config: { page, node, token, track, screenshots }
// Prints JSON lines: {"snapshot": {...}, "presence": {...}} once connected; after "joined" on
// stdin, {"join": user} once a presence_join arrived; after "left", {"leave": user, "count": n}.

import { commands, drive, say } from "./driver.mjs";

const config = JSON.parse(process.argv[2]);
const input = commands();

await drive("presence", async (page) => {
  await page.goto(`${config.page}/healthz`);
  await page.evaluate(async (config) => {
    const { HeraldClient } = await import(`${config.page}/client/herald.js`);
    window.presenceEvents = [];
    window.client = new HeraldClient({
      urls: [config.node],
      path: `/api/ws/track/${config.track}`,
      token: config.token,
    });
    window.client.on("presence", (event) => window.presenceEvents.push(event));
  }, config);
  const snapshot = await page.waitForFunction(
    () => window.presenceEvents.find((e) => e.type === "snapshot"), null, { timeout: 10_000 });
  const presence = await page.evaluate(
    (track) => window.client.presence(`track:${track}`), config.track);
  say({ snapshot: await snapshot.jsonValue(), presence });
  await input.next();
  const join = await page.waitForFunction(
    () => window.presenceEvents.find((e) => e.type === "join"), null, { timeout: 10_000 });
  say({ join: (await join.jsonValue()).user });
  await input.next();
  const leave = await page.waitForFunction(
    () => window.presenceEvents.find((e) => e.type === "leave"), null, { timeout: 10_000 });
  const count = await page.evaluate(
    (track) => window.client.presenceCount(`track:${track}`), config.track);
  await page.screenshot({ path: `${config.screenshots}/presence.png` });
  say({ leave: (await leave.jsonValue()).user, count });
});
input.close();
