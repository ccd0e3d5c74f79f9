// One headless Chromium for a whole test session (Debian's /usr/bin/chromium,
// driven by playwright-core). Reads one JSON command per line on stdin,
// answers one JSON line on stdout:
//
//   {"url": "<approval link>", "decision": "approve" | "deny" | null}
//   → {"title", "message", "details_text", "scripts_run", "status", "outcome"}
//
//   {"url": "<page>", "steps": [step, ...]}  → {"read": [...], "console_errors": [...]}
//
// Each command gets a fresh browser context (its own cookies), opens the
// page, reads what the user sees, and clicks the decision's button (none:
// only looks). `scripts_run` tells whether any script on the page ran.
// Steps drive any page: {"wait": selector} waits for it to appear,
// {"fill": selector, "value": text} types into a field, {"select":
// selector, "value": v} picks an option, {"click": selector} clicks,
// {"text": selector} reads an element's text into `read`, {"eval": js}
// reads an expression's value, {"run": js} only runs it, {"settle": ms} waits for the page's
// debounced work.
import { chromium } from "playwright-core";
import readline from "node:readline";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});

async function runSteps(page, steps) {
  const read = [];
  for (const step of steps) {
    if (step.wait) await page.waitForSelector(step.wait, { timeout: 15000 });
    else if (step.fill) await page.fill(step.fill, step.value);
    else if (step.select) await page.selectOption(step.select, step.value);
    else if (step.click) await page.click(step.click);
    else if (step.text) read.push(await page.textContent(step.text));
    else if (step.eval) read.push(await page.evaluate(step.eval));
    else if (step.run) await page.evaluate(step.run);
    else if (step.settle) await page.waitForTimeout(step.settle);
    else throw new Error(`unknown step ${JSON.stringify(step)}`);
  }
  return read;
}

async function handle(cmd) {
  const context = await browser.newContext();
  if (cmd.steps) {
    try {
      const page = await context.newPage();
      const consoleErrors = [];
      page.on("console", (m) => { if (m.type() === "error") consoleErrors.push(m.text()); });
      page.on("pageerror", (e) => consoleErrors.push(String(e)));
      await page.goto(cmd.url);
      const read = await runSteps(page, cmd.steps);
      return { read, console_errors: consoleErrors };
    } finally {
      await context.close();
    }
  }
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
