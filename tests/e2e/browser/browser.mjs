// One headless Chromium for a whole test session (Debian's /usr/bin/chromium,
// driven by playwright-core). Reads one JSON command per line on stdin,
// answers one JSON line on stdout:
//
//   {"url": "<approval link>", "decision": "approve" | "deny" | null}
//   → {"title", "message", "details_text", "scripts_run", "status", "outcome"}
//
// Each command gets a fresh browser context (its own cookies), opens the
// page, reads what the user sees, and clicks the decision's button (none:
// only looks). `scripts_run` tells whether any script on the page ran.
import { chromium } from "playwright-core";
import readline from "node:readline";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

async function handle(cmd) {
  const context = await browser.newContext();
  try {
    const page = await context.newPage();
    let scriptsRun = false;
    await page.exposeFunction("__agentwardScriptRan", () => { scriptsRun = true; });
    page.on("dialog", async (d) => { scriptsRun = true; await d.dismiss(); });
    await page.goto(cmd.url);
    const title = await page.title();
    const message = await page.textContent("#binding-message");
    const detailsText = await page.evaluate(() => document.body.innerText);
    let status = null;
    let outcome = null;
    if (cmd.decision) {
      const [response] = await Promise.all([
        page.waitForNavigation(),
        page.click(`button[value="${cmd.decision}"]`),
      ]);
      status = response ? response.status() : null;
      outcome = await page.evaluate(() => document.body.innerText);
    }
    return { title, message, details_text: detailsText, scripts_run: scriptsRun, status, outcome };
  } finally {
    await context.close();
  }
}

const lines = readline.createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ ready: true, version: browser.version() }) + "\n");
for await (const line of lines) {
  if (!line.trim()) continue;
  let answer;
  try {
    answer = await handle(JSON.parse(line));
  } catch (e) {
    answer = { error: String(e && e.message || e) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
}
await browser.close();
