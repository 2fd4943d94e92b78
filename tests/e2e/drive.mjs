// Plays the user of a SMART app in headless Chromium (Debian's, driven by playwright-core).
//
// Starts one browser, then reads one JSON visit per line on stdin and answers one JSON line
// on stdout per visit. A visit opens its URL in a fresh browser context (no cookies, no
// storage from earlier visits) and answers whatever page comes up -- our login page, our
// patient picker, our consent page -- until the app's page reports a result or one of our
// error pages shows:
//
//   in:  {"url", "username", "passwords": [tried in turn], "search": name to find the patient
//         by in the picker, "patient", "decision": "allow"|"deny", "untick": [scope...],
//         "timeoutMs"}
//   out: {"trace": [{page, path, title, error, ms}], "state", "result", "text", "url",
//         "choices": [patient...], "offered": [scope...], "console": [...], "requests": [...],
//         "error"?}
//
//   node drive.mjs /usr/bin/chromium
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

// Without the background-networking flags Chromium keeps trying to reach Google's hosts,
// which this closed network refuses. Playwright gives the browser a new empty profile.
const browser = await chromium.launch({
  executablePath: process.argv[2] ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});

const FORMS = ["login", "pick", "consent"];

async function visit(spec) {
  const started = Date.now();
  const out = { trace: [], state: null, result: null, text: "", console: [], requests: [] };
  const context = await browser.newContext();
  const log = (r, how) => {
    const url = new URL(r.url());
    out.requests.push(`${Date.now() - started}ms ${how} ${r.method()} ${url.origin}${url.pathname}`);
  };
  context.on("requestfinished", (r) => log(r, "done"));
  context.on("requestfailed", (r) => log(r, "failed"));
  try {
    const page = await context.newPage();
    page.setDefaultTimeout(spec.timeoutMs ?? 30000);
    page.on("console", (m) => out.console.push(`${m.type()}: ${m.text()}`));
    page.on("pageerror", (e) => out.console.push(`pageerror: ${e.message}`));
    const note = async (name) => {
      const url = new URL(page.url());
      const title = await page.title();
      const error = await page.evaluate(() => document.querySelector("p.error")?.textContent);
      out.trace.push({ page: name, path: url.pathname, title, error, ms: Date.now() - started });
    };
    const submit = async (selector) => {
      const navigated = page.waitForEvent("framenavigated", (f) => f === page.mainFrame());
      await page.click(selector);
      await navigated;
    };

    await page.goto(spec.url);
    for (let step = 0; step < 8; step++) {
      await page.waitForSelector(
        FORMS.map((f) => `form[method="post"][action="${f}"]`).join(", ") +
          ", body[data-state], p.error",
        { state: "attached" },
      );
      const form = await page.evaluate(
        (names) =>
          names.find((n) => document.querySelector(`form[method="post"][action="${n}"]`)) ?? null,
        FORMS,
      );
      if (form === "login") {
        await note("login");
        const tries = out.trace.filter((t) => t.page === "login").length;
        if (tries > spec.passwords.length) break; // every password refused: stop here
        await page.fill('input[name="username"]', spec.username);
        await page.fill('input[name="password"]', spec.passwords[tries - 1]);
        await submit('form[action="login"] button[type="submit"]');
      } else if (form === "pick") {
        await note("pick");
        out.choices = await page.$$eval('input[name="patient"]', (xs) => xs.map((x) => x.value));
        if (spec.search && out.trace.filter((t) => t.page === "pick").length === 1) {
          await page.fill('form[method="get"][action="pick"] input[name="q"]', spec.search);
          await submit('form[method="get"][action="pick"] button[type="submit"]');
          continue;
        }
        await page.check(`input[name="patient"][value="${spec.patient}"]`);
        await submit('form[method="post"][action="pick"] button[type="submit"]');
      } else if (form === "consent") {
        await note("consent");
        out.offered = await page.$$eval('input[name="scope"]', (xs) => xs.map((x) => x.value));
        for (const scope of spec.untick ?? []) {
          await page.uncheck(`input[name="scope"][value="${scope}"]`);
        }
        await submit(`button[name="decision"][value="${spec.decision ?? "allow"}"]`);
      } else {
        // the app's page once it wrote data-state, or one of our error pages (p.error)
        const app = await page.evaluate(() => document.body.dataset.state !== undefined);
        await note(app ? "app" : "error");
        out.state = await page.evaluate(() => document.body.dataset.state ?? null);
        const result = await page.evaluate(() => document.getElementById("result")?.textContent);
        out.result = result ? JSON.parse(result) : null;
        break;
      }
    }
    out.text = await page.evaluate(() => document.body.innerText);
    out.url = page.url();
  } catch (error) {
    out.error = String(error);
  } finally {
    await context.close();
  }
  return out;
}

try {
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    process.stdout.write(JSON.stringify(await visit(JSON.parse(line))) + "\n");
  }
} finally {
  await browser.close();
}
