// The console in a real browser (Debian's chromium, driven by
// playwright-core). tests/console.rs starts the server and runs this in two
// phases: `open` (no tokens) and `signed` (a token exists: sign in with it).
// A screenshot of each view goes to SHOTS.
import { createRequire } from "node:module";

// playwright-core lives in the tools folder .ci/run installs (NODE_PATH).
const { chromium } = createRequire(process.env.NODE_PATH + "/")("playwright-core");

const [base, phase, shots] = [process.env.BASE, process.env.PHASE, process.env.SHOTS];
const token = process.env.TOKEN;
const headers = Object.assign({ "content-type": "application/json" }, token ? { authorization: "Bearer " + token } : {});

async function api(method, path, body) {
  const r = await fetch(base + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
  return json;
}
function check(cond, what) { if (!cond) throw new Error("failed: " + what); }

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, timezoneId: "Europe/Paris" });
const page = await context.newPage();
page.on("pageerror", e => { console.error("page error:", e); process.exitCode = 1; });
const shot = name => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const rows = () => page.locator("#runs tbody tr[data-id]");

try {
  if (phase === "open") {
    const failed = await api("POST", "/api/runs", { task_name: "etl" });
    await api("POST", `/api/runs/${failed.id}/start`, {});
    await api("POST", `/api/runs/${failed.id}/end`, { end_reason: "failed", exit_code: 2, error: "disk full" });
    await api("POST", "/api/runs", { task_name: "report" });

    // Load.
    let resp = await page.goto(base + "/");
    check(resp.status() === 200, "GET / is 200");
    await rows().first().waitFor();
    check(await rows().count() === 2, "both runs listed");
    check((await page.locator("#total").textContent()).trim() === "2", "the total");
    // Times in the viewer's zone, UTC on hover.
    const t = page.locator("#runs time").first();
    check((await t.getAttribute("title")).endsWith("Z"), "UTC in title");
    check(!(await t.textContent()).endsWith("Z"), "local time shown");
    await shot("runs");

    // Filter by URL.
    await page.goto(base + "/?status=failed&task_name=etl");
    check(await rows().count() === 1, "one failed etl run");
    check(await rows().first().getAttribute("data-id") === failed.id, "the failed run");
    check((await page.locator("#runs .status").first().textContent()).includes("failed"), "status in words");
    check(await page.inputValue("#filters input[name=status]") === "failed", "the form shows the filter");
    await shot("filtered");

    // Watch a run go from pending to ended, live, with no reload.
    await page.goto(base + "/?task_name=nightly");
    await page.locator("#live-state", { hasText: "live" }).waitFor();
    await page.evaluate(() => { window.__stayed = true; });
    const run = await api("POST", "/api/runs", { task_name: "nightly" });
    await page.locator(`#runs tr[data-id="${run.id}"][data-status="pending"]`).waitFor();
    await api("POST", `/api/runs/${run.id}/start`, {});
    await page.locator(`#runs tr[data-id="${run.id}"][data-status="running"]`).waitFor();
    await api("POST", `/api/runs/${run.id}/end`, { end_reason: "success", exit_code: 0 });
    await page.locator(`#runs tr[data-id="${run.id}"][data-status="ended"]`).waitFor();
    check(await page.evaluate(() => window.__stayed === true), "no reload");
    await shot("live");

    // Time travel to before it existed.
    const events = await api("GET", `/api/runs/${run.id}/events`);
    const created = events.events[0].position;
    await page.goto(base + `/?task_name=nightly&as_of=${created - 1}`);
    check(await rows().count() === 0, "not there before it was created");
    check((await page.locator("#as-of-position").textContent()).trim() === String(created - 1), "the position shown");
    check(await page.locator("#chain.ok").count() === 1, "chain verdict shown");
    await shot("time-travel");
    await page.goto(base + `/?task_name=nightly&as_of=${created}`);
    check(await rows().count() === 1, "there once created");
    check(await rows().first().getAttribute("data-status") === "pending", "pending at its creation");
    await page.goto(base + `/diff?from=${created - 1}&to=${created + 2}`);
    check(await page.locator(`#diff a[href^="/runs/${run.id}"]`).count() === 1, "the diff names it");
    await shot("diff");

    // Its page and timeline.
    await page.goto(base + "/?task_name=nightly");
    await page.click(`#runs a[href="/runs/${run.id}"]`);
    await page.locator("#timeline").waitFor();
    const types = await page.locator("#timeline tbody tr td:nth-child(3)").allTextContents();
    check(JSON.stringify(types) === JSON.stringify(["run.created", "run.started", "run.ended"]), "timeline " + types);
    check((await page.locator("#timeline tbody tr td:nth-child(5)").first().textContent()) === "anonymous", "actor");
    check(await page.locator("#chain.ok").count() === 1, "chain verifies");
    check(await page.locator('a[href$="/debug-bundle"]').count() === 1, "debug bundle link");
    await shot("run");

    // Retry the failed run, with confirmation.
    await page.goto(base + `/runs/${failed.id}`);
    await page.click('button[data-action="retry"]');
    await page.locator("dialog[open]").waitFor();
    await shot("retry-confirm");
    await page.click("#confirm-ok");
    await page.locator("#new-run").waitFor();
    const retried = await api("GET", `/api/runs/${failed.id}/events?type=run.retried`);
    check(retried.events.length === 1, "run.retried appended");
    await page.click("#new-run");
    await page.locator("#lineage-h").waitFor();
    check(await page.locator(`section[aria-labelledby=lineage-h] a[href="/runs/${failed.id}"]`).count() === 1, "lineage links the source");
    await shot("retried");

    // Cancel, delete and restore the new run, each confirmed.
    const act = async (action, then) => {
      await page.click(`#actions button[data-action="${action}"]`);
      await page.locator("dialog[open]").waitFor();
      await page.click("#confirm-ok");
      await page.locator(then).waitFor();
    };
    await act("cancel", '#run-status .status[data-status="stopped"]');
    await act("delete", '#actions button[data-action="restore"]');
    check((await page.locator("#run-status").textContent()).includes("deleted"), "shown deleted");
    await act("restore", '#actions button[data-action="delete"]');
    const newId = page.url().split("/runs/")[1];
    const types2 = (await api("GET", `/api/runs/${newId}/events`)).events.map(e => e.type);
    check(JSON.stringify(types2) === JSON.stringify(["run.created", "run.ended", "run.deleted", "run.restored"]), "actions appended " + types2);

    // Bulk: every matching run, with the exact dry-run count pinned at a
    // position, then the operation's result.
    await page.goto(base + "/?task_name=report&status=pending");
    check(await rows().count() === 1, "one pending report run");
    await page.check('#bulk input[name=scope][value=all]');
    await page.selectOption('#bulk select[name=action]', "cancel");
    await page.click('#bulk button[type=submit]');
    const dialog = page.locator("dialog[open]");
    await dialog.waitFor();
    check((await dialog.locator("h2").textContent()) === "cancel 1 runs?", "the dry-run count");
    check((await dialog.textContent()).includes("Selected at position"), "pinned at a position");
    await shot("bulk-confirm");
    await page.click("#confirm-ok");
    await page.locator("#bulk-result", { hasText: "cancel: done" }).waitFor();
    check((await page.locator("#bulk-result pre").textContent()).includes('"canceled": 1'), "the operation record");
    await page.locator("#runs tbody td.empty").waitFor();
    await shot("bulk-done");

    // Keyboard: "/" focuses the filters.
    await page.keyboard.press("/");
    check(await page.evaluate(() => document.activeElement.closest("#filters") !== null), "/ focuses the filters");

    // Every run so far: the README's picture.
    await page.goto(base + "/");
    await page.locator("#live-state", { hasText: "live" }).waitFor();
    await shot("overview");

    // Bulk on a selection: tick one run, delete it.
    await page.check(`#runs input[name=id][value="${run.id}"]`);
    await page.selectOption('#bulk select[name=action]', "delete");
    await page.click('#bulk button[type=submit]');
    await page.locator("dialog[open]").waitFor();
    check((await page.locator("dialog[open] h2").textContent()) === "delete 1 runs?", "the selection's count");
    await page.click("#confirm-ok");
    await page.locator("#bulk-result", { hasText: "delete: done" }).waitFor();
    check((await page.locator("#bulk-result pre").textContent()).includes('"affected": 1'), "one deleted");
    await page.locator(`#runs tr[data-id="${run.id}"]`).waitFor({ state: "detached" });
    check((await api("GET", `/api/runs/${run.id}`)).deleted === true, "deleted in the ledger");

    // A phone.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto(base + "/");
    await shot("phone");
  } else {
    // A token exists: the console asks to sign in, and the stream works by cookie.
    const resp = await page.goto(base + "/");
    check(resp.status() === 401, "sign-in needed");
    await page.locator("#sign-in").waitFor();
    await shot("sign-in");
    await page.fill("#token", token);
    await page.click("#sign-in button[type=submit]");
    await page.locator(".who", { hasText: "oncall" }).waitFor();
    await page.locator("#live-state", { hasText: "live" }).waitFor();
    const cookies = await context.cookies();
    const session = cookies.find(c => c.name === "runledger_session");
    check(session && session.httpOnly && session.sameSite === "Strict", "HttpOnly SameSite=Strict cookie");
    check(await page.evaluate(() => document.cookie) === "", "the page cannot read it");
    const run = await api("POST", "/api/runs", { task_name: "signed" });
    await page.locator(`#runs tr[data-id="${run.id}"]`).waitFor();
    const events = await api("GET", `/api/runs/${run.id}/events`);
    check(events.events[0].metadata.actor === "oncall", "the token's actor");
    await shot("signed-in");
    // Signing out ends it.
    await page.click("#sign-out");
    await page.locator("#sign-in").waitFor();
  }
  console.log(`console scenario ${phase}: ok`);
} catch (e) {
  await shot(`failure-${phase}`).catch(() => {});
  console.error(e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
