// What the browser drivers share: the system Chromium, JSON lines out, commands in.

import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

/** Prints one JSON line on stdout (what tests/browser.rs reads). */
export const say = (value) => process.stdout.write(JSON.stringify(value) + "\n");

/** The system Chromium, headless, with nothing reaching out to the network by itself. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/** Lines from stdin, one at a time (what tests/browser.rs sends). */
export function commands() {
  const input = createInterface({ input: process.stdin });
  return {
    next: () => new Promise((resolve) => input.once("line", resolve)),
    close: () => input.close(),
  };
}

/** Runs `steps(page)` on a fresh 1280x800 page; reports an error as a line and exit 1. */
export async function drive(name, steps) {
  const browser = await launch();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on("console", (message) => process.stderr.write(`${name} page: ${message.text()}\n`));
    await steps(page);
  } catch (error) {
    say({ error: String(error?.stack ?? error) });
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
