// Plays an operator through the console in headless Chromium (Debian's, playwright-core).
//
//   node console.mjs /usr/bin/chromium < scenario.json
//
// The scenario is {"headers": {...}?, "steps": [...]}; each step is one of
//   {"goto": url}                       open a page (its HTTP status is recorded)
//   {"fill": selector, "value": text}   type into a field
//   {"press": selector, "key": "Enter"} press a key in a field (e.g. submit a form)
//   {"click": selector}                 click, waiting for the page it leads to
//   {"tab": n}                          press Tab n times (keyboard use)
//   {"screenshot": path}                save the whole page
// and prints {"steps": [{step, url, title, status, text, focused}], "error"?, "requests"}.
import { chromium } from "playwright-core";

const input = await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => (data += chunk));
  process.stdin.on("end", () => resolve(data));
});
const scenario = JSON.parse(input);
const browser = await chromium.launch({
  executablePath: process.argv[2] ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const out = { steps: [], requests: [], console: [] };
const context = await browser.newContext({
  viewport: { width: 1366, height: 800 },
  extraHTTPHeaders: scenario.headers ?? {},
});
context.on("requestfinished", (r) => out.requests.push(`done ${new URL(r.url()).origin}`));
context.on("requestfailed", (r) => out.requests.push(`failed ${new URL(r.url()).origin}`));
const page = await context.newPage();
page.setDefaultTimeout(30000);
page.on("pageerror", (e) => out.console.push(`pageerror: ${e.message}`));
page.on("console", (m) => m.type() === "error" && out.console.push(`error: ${m.text()}`));
try {
  for (const step of scenario.steps) {
    let status = null;
    if (step.goto) {
      const answer = await page.goto(step.goto);
      status = answer ? answer.status() : null;
    } else if (step.fill) {
      await page.fill(step.fill, step.value);
    } else if (step.press) {
      await Promise.all([page.waitForNavigation(), page.press(step.press, step.key)]);
    } else if (step.click) {
      const [answer] = await Promise.all([page.waitForNavigation(), page.click(step.click)]);
      status = answer ? answer.status() : null;
    } else if (step.tab) {
      for (let i = 0; i < step.tab; i++) await page.keyboard.press("Tab");
    } else if (step.screenshot) {
      await page.screenshot({ path: step.screenshot, fullPage: true });
    }
    out.steps.push({
      step,
      status,
      url: page.url(),
      title: await page.title(),
      text: (await page.evaluate(() => document.body.innerText)).slice(0, 20000),
      focused: await page.evaluate(() => {
        const el = document.activeElement;
        return el ? `${el.tagName.toLowerCase()} ${el.textContent?.trim().slice(0, 40) ?? ""}` : "";
      }),
    });
  }
} catch (e) {
  out.error = String(e);
  out.url = page.url();
}
await browser.close();
process.stdout.write(JSON.stringify(out) + "\n");
