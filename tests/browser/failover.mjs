// Drives a page in the system Chromium that subscribes through herald-client, for
// tests/browser.rs.
//
// Usage: node failover.mjs '<json config>'
//   config: { urls: [node http addresses], token, channel, expected, screenshot, timeoutMs }
//
// Prints, one per line on stdout:
//   {"ready": "<node url the client connected to>"}          once subscribed
//   {"switched": "<url>", "at": <ms since epoch>}            each time it connects elsewhere
//   {"done": true, "events": [n...], "states": [...], "cursor": "...", "arrivals": [[n, at, url]...]}
// and exits 0, or prints {"error": "..."} and exits 1.

import { drive, say } from "./driver.mjs";

const config = JSON.parse(process.argv[2]);

await drive("failover", async (page) => {
  await page.setContent(`<!doctype html><html><head><title>herald failover</title>
    <style>body{font:14px system-ui;margin:2rem} #state{font-weight:600}</style></head>
    <body><h1>herald-client failover</h1><p>state: <span id="state">-</span>,
    node: <span id="node">-</span>, events: <span id="count">0</span></p>
    <pre id="last"></pre></body></html>`);
  await page.exposeFunction("report", (value) => say(value));
  await page.addScriptTag({
    type: "module",
    content: `
      import { HeraldClient } from ${JSON.stringify(config.urls[0] + "/client/herald.js")};
      const config = ${JSON.stringify(config)};
      window.events = [];
      window.states = [];
      window.arrivals = [];
      const client = new HeraldClient({
        urls: config.urls, channels: [config.channel], token: config.token,
        initialBackoff: 100, maxBackoff: 1000, connectTimeout: 2000,
      });
      window.client = client;
      client.on("error", (error) => console.log("client error: " + (error?.stack ?? error)));
      let connectedTo = null;
      client.on("state", (state) => {
        window.states.push(typeof state === "string" ? state : state.state);
        document.getElementById("state").textContent = typeof state === "string" ? state : state.state;
      });
      client.on("connected", () => {
        document.getElementById("node").textContent = client.url;
        if (connectedTo === null) report({ ready: client.url });
        else if (connectedTo !== client.url) report({ switched: client.url, at: Date.now() });
        connectedTo = client.url;
      });
      client.on("message", (message) => {
        if (message.type !== "tick") return;
        window.events.push(message.n);
        window.arrivals.push([message.n, Date.now(), client.url]);
        document.getElementById("count").textContent = String(window.events.length);
        document.getElementById("last").textContent = JSON.stringify(message);
      });
    `,
  });
  const deadline = Date.now() + config.timeoutMs;
  let seen = 0;
  while (Date.now() < deadline) {
    seen = await page.evaluate(() => window.events?.length ?? 0);
    if (seen >= config.expected) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (config.screenshot) await page.screenshot({ path: config.screenshot });
  const result = await page.evaluate(() => ({
    events: window.events,
    states: window.states,
    cursor: window.client.cursor,
    arrivals: window.arrivals,
  }));
  say({ done: true, ...result });
});
