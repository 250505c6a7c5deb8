// The dashboard in a real browser: Debian's headless Chromium driven by playwright-core against
// the built binary (target/debug/aex), a fresh database and the mock provider. It logs in with
// `#token=`, watches an agent created through the API and a request's cost appear without a
// reload, opens an execution's ledger timeline, checks that a hostile agent name renders as
// text, and saves screenshots under tests/output/.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const AEX = process.env.AEX_BIN || path.join(ROOT, "target/debug/aex");
const CHROMIUM = process.env.TEST_CHROMIUM || "/usr/bin/chromium";
const ADMIN_DB_URL = process.env.TEST_DATABASE_URL || "postgres://postgres@127.0.0.1:5432/postgres";
const OUTPUT = path.join(ROOT, "tests/output");
const XSS_NAME = "<img src=x onerror=alert(1)>";

function psql(sql) {
  const r = spawnSync("psql", [ADMIN_DB_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr}`);
}

async function freePort() {
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return port;
}

async function firstLine(child) {
  const lines = readline.createInterface({ input: child.stdout });
  for await (const line of lines) return line.trim();
  throw new Error("the process printed nothing");
}

async function waitReady(base, child, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`aex exited with ${child.exitCode}`);
    try {
      const r = await fetch(base + "/ready");
      if (r.status === 200) return;
    } catch (_) {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("aex did not become ready");
}

async function stop(child) {
  if (!child || child.exitCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
  await once(child, "exit");
  clearTimeout(timer);
}

// The dashboard's money format, for comparing what it shows with the API's headers.
function usd(micro) {
  const whole = Math.floor(micro / 1e6);
  let frac = String(micro % 1e6).padStart(6, "0").replace(/0+$/, "");
  if (frac.length < 2) frac = frac.padEnd(2, "0");
  return "$" + whole.toLocaleString("en-US") + "." + frac;
}

/// Starts a database, the mock provider and `aex serve`; returns what the test needs.
async function startAex(t) {
  const db = "aex_browser_" + Math.random().toString(16).slice(2, 14);
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "aex-browser-"));
  const children = [];
  t.after(async () => {
    for (const child of children.reverse()) await stop(child);
    psql(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    // `aex init` made the database's runtime role; roles are cluster-wide.
    psql(`DROP ROLE IF EXISTS ${db}_runtime`);
    fs.rmSync(home, { recursive: true, force: true });
  });
  psql(`CREATE DATABASE ${db}`);
  const mock = spawn(AEX, ["dev", "mock-upstream", "--listen", "127.0.0.1:0"], { stdio: ["ignore", "pipe", "inherit"] });
  children.push(mock);
  const mockAddr = await firstLine(mock);
  const port = await freePort();
  fs.writeFileSync(path.join(home, "models.toml"), `
[providers.mock]
kind = "openai"
base_url = "http://${mockAddr}/v1"
api_key_env = "MOCK_PROVIDER_KEY"

[models."gpt-4o-mini"]
provider = "mock"
upstream_model = "mock-gpt-4o-mini"
input_usd_per_million = "0.15"
output_usd_per_million = "0.60"
max_output_tokens = 1000
capabilities = ["chat", "streaming", "tools", "vision", "responses"]
`);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("AEX_")));
  Object.assign(env, {
    AEX_HOME: home,
    MOCK_PROVIDER_KEY: "sk-mock",
    AEX_LOG_FORMAT: "json",
    AEX_LEDGER__VERIFY_INTERVAL_SECONDS: "1",
  });
  const dbUrl = ADMIN_DB_URL.replace(/\/[^/]*$/, "/" + db);
  const init = spawnSync(AEX, ["init", "--database-url", dbUrl, "--listen", `127.0.0.1:${port}`, "--json"], { env, encoding: "utf8" });
  assert.equal(init.status, 0, init.stderr);
  const operatorToken = JSON.parse(init.stdout).operator_token;
  const log = fs.openSync(path.join(home, "serve.log"), "w");
  const server = spawn(AEX, ["serve"], { env, stdio: ["ignore", log, log] });
  children.push(server);
  const base = `http://127.0.0.1:${port}`;
  try {
    await waitReady(base, server);
  } catch (e) {
    console.error(fs.readFileSync(path.join(home, "serve.log"), "utf8"));
    throw e;
  }
  return { base, operatorToken, home };
}

async function createAgent(aex, name) {
  const r = await fetch(aex.base + "/admin/agents", {
    method: "POST",
    headers: { Authorization: "Bearer " + aex.operatorToken, "Content-Type": "application/json" },
    body: JSON.stringify({ name, budget_usd: "2.00", rpm: 1000 }),
  });
  assert.equal(r.status, 201, await r.clone().text());
  return r.json();
}

async function chat(aex, token, content) {
  const r = await fetch(aex.base + "/v1/chat/completions", {
    method: "POST",
    headers: { Authorization: "Bearer " + token, "Content-Type": "application/json" },
    body: JSON.stringify({ model: "gpt-4o-mini", messages: [{ role: "user", content }] }),
  });
  assert.equal(r.status, 200, await r.clone().text());
  await r.json();
  return {
    executionId: r.headers.get("x-aex-execution-id"),
    cost: Number(r.headers.get("x-aex-cost-micro-usd")),
  };
}

test("the dashboard shows a live run as it happens", { timeout: 180_000 }, async (t) => {
  assert.ok(fs.existsSync(AEX), `build the binary first: ${AEX} is missing`);
  const aex = await startAex(t);
  fs.mkdirSync(OUTPUT, { recursive: true });

  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "aex-chromium-"));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--no-first-run"],
    viewport: { width: 1280, height: 900 },
  });
  t.after(async () => {
    await context.close();
    fs.rmSync(userDataDir, { recursive: true, force: true });
  });
  const page = context.pages()[0] || (await context.newPage());
  const dialogs = [];
  const pageErrors = [];
  const requested = [];
  page.on("dialog", async (d) => {
    dialogs.push(d.message());
    await d.dismiss();
  });
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(m.text());
  });
  page.on("request", (r) => requested.push(r.url()));

  // Log in through the fragment: it is removed from the address bar and never sent.
  await page.goto(`${aex.base}/dashboard#token=${encodeURIComponent(aex.operatorToken)}`);
  await page.locator("#board").waitFor({ state: "visible" });
  assert.equal(new URL(page.url()).hash, "", "the token is removed from the address bar");
  await page.locator("#live-text", { hasText: "live" }).waitFor();
  assert.notEqual(await page.locator("#last-update").textContent(), "never");
  assert.equal(await page.evaluate(() => sessionStorage.getItem("aex.dashboard.token")), aex.operatorToken);
  await page.evaluate(() => { window.__sameDocument = true; });

  // An agent created through the API appears without a reload, and so does a hostile name.
  const agent = await createAgent(aex, "browser-agent");
  const hostile = await createAgent(aex, XSS_NAME);
  await page.locator("#agents td.name").getByText("browser-agent", { exact: true }).waitFor();
  await page.locator("#agents td.name").getByText(XSS_NAME, { exact: true }).waitFor();

  // A request's cost appears live: the execution row with its actual cost, and the spend KPI.
  const spentBefore = await page.locator("#kpi-spend .value").textContent();
  const call = await chat(aex, agent.token, "hello from the browser test");
  await chat(aex, hostile.token, "hello from a hostile name");
  const row = page.locator(`#executions tr[data-execution-id="${call.executionId}"]`);
  await row.locator(".cost-actual", { hasText: usd(call.cost) }).waitFor();
  assert.equal(await row.getAttribute("data-state"), "COMMITTED");
  await page.waitForFunction((before) => document.querySelector("#kpi-spend .value").textContent !== before, spentBefore);
  const agentRow = page.locator("#agents tr", { has: page.getByText("browser-agent", { exact: true }) });
  assert.match(await agentRow.locator("td").nth(4).textContent(), /\/h$/, "a burn rate is shown");
  assert.equal(await page.evaluate(() => window.__sameDocument), true, "no reload happened");

  // An alert appears live (the hostile agent quarantined: its name is in the message, as text)
  // and is acknowledged from the page.
  const quarantined = await fetch(`${aex.base}/admin/agents/${hostile.agent.id}/state`, {
    method: "POST",
    headers: { Authorization: "Bearer " + aex.operatorToken, "Content-Type": "application/json" },
    body: JSON.stringify({ state: "QUARANTINED" }),
  });
  assert.equal(quarantined.status, 200, await quarantined.clone().text());
  const alertItem = page.locator("#alerts li[data-alert-id]", { hasText: "QUARANTINED" });
  await alertItem.waitFor();
  assert.match(await alertItem.locator(".message").textContent(), /agent <img src=x onerror=alert\(1\)> moved from READY to QUARANTINED/);
  assert.equal(await alertItem.locator(".severity").textContent(), "critical");
  await page.locator("#alerts-summary", { hasText: "1 open: 1 critical" }).waitFor();
  await alertItem.locator("button.ack").click();
  await page.locator("#alerts li.muted", { hasText: "no open alerts" }).waitFor();
  await page.locator("#alerts-summary", { hasText: "0 open" }).waitFor();

  // Sorting by name puts the hostile name (it starts with "<") first.
  await page.locator('#agents th[data-sort="name"] button').click();
  assert.equal(await page.locator('#agents th[data-sort="name"]').getAttribute("aria-sort"), "ascending");
  assert.equal(await page.locator("#agents tbody tr td.name").first().textContent(), XSS_NAME);

  // The execution's ledger timeline.
  await row.click();
  const timeline = page.locator("#timeline-events");
  await timeline.locator('li[data-event-type="usage.commit"]').waitFor();
  const types = await timeline.locator("li").evaluateAll((items) => items.map((i) => i.dataset.eventType));
  assert.deepEqual(types, ["reservation.reserved", "execution.dispatched", "usage.commit"]);
  assert.equal(await page.locator("#timeline-id").textContent(), call.executionId);

  // The ledger KPI follows the appends (verified every second here).
  await page.locator("#kpi-ledger .value", { hasText: /^verified$/ }).waitFor();
  await page.locator("#kpi-ledger .sub", { hasText: /: (1[0-9]|[2-9][0-9]) events$/ }).waitFor();

  // The hostile name is text everywhere: no element was injected and no script ran.
  assert.equal(await page.locator("img").count(), 0, "no <img> was created from data");
  assert.deepEqual(dialogs, [], "no alert() ran");
  const shown = await page.locator("#executions td.name").allTextContents();
  assert.ok(shown.includes(XSS_NAME), "the hostile name shows as text in the executions");

  // Pause stops the updates; resume brings them back.
  await page.locator("#pause").click();
  await page.locator("#live-text", { hasText: "paused" }).waitFor();
  const frozen = await page.locator("#last-update").getAttribute("datetime");
  const later = await chat(aex, agent.token, "while paused");
  await page.waitForTimeout(2_500);
  assert.equal(await page.locator("#last-update").getAttribute("datetime"), frozen, "no update while paused");
  assert.equal(await page.locator(`#executions tr[data-execution-id="${later.executionId}"]`).count(), 0);
  await page.locator("#pause").click();
  await page.locator(`#executions tr[data-execution-id="${later.executionId}"]`).waitFor();

  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(OUTPUT, "dashboard.png"), fullPage: true });

  // A narrow window: the page does not overflow sideways (wide tables scroll in their panel).
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate(() => window.scrollTo(0, 0));
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 1, `the page overflows a narrow window by ${overflow}px`);
  await page.screenshot({ path: path.join(OUTPUT, "dashboard-narrow.png"), fullPage: true });

  // The token never left the browser in a URL.
  assert.ok(requested.length > 0);
  for (const url of requested) assert.ok(!url.includes(aex.operatorToken), `token in a URL: ${url}`);
  assert.deepEqual(pageErrors, [], "the page logged no errors");

  // Log out clears the session.
  await page.locator("#logout").click();
  await page.locator("#login").waitFor({ state: "visible" });
  assert.equal(await page.evaluate(() => sessionStorage.getItem("aex.dashboard.token")), null);
});
