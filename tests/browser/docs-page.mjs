// Drives /docs in headless Chromium (Debian's, through playwright-core; no
// browser is downloaded): authorizes with a credential, runs calls from the
// try-it-out forms, checks what the page shows, checks that the page fits a
// 390 px screen, and saves screenshots. Fails if the page requests anything
// that is not on the server under test.
//
//   TENANTRY_URL=http://127.0.0.1:8080 TENANTRY_KEY=tnty_... node docs-page.mjs
//
// Optional: CHROMIUM (default /usr/bin/chromium), ARTIFACTS (screenshot dir).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

const base = process.env.TENANTRY_URL;
const key = process.env.TENANTRY_KEY;
const artifacts = process.env.ARTIFACTS || "target/artifacts/docs";
if (!base || !key) throw new Error("set TENANTRY_URL and TENANTRY_KEY");
mkdirSync(artifacts, { recursive: true });
const origin = new URL(base).origin;

const foreign = [];
let checks = 0;
const pass = (what) => { checks += 1; console.log(`ok ${checks} - ${what}`); };
const fail = (what) => { throw new Error(what); };

/** Polls until the locator's text matches `pattern`; returns the text. */
async function waitText(locator, pattern, what, timeout = 20000) {
  const until = Date.now() + timeout;
  let text = "";
  while (Date.now() < until) {
    text = (await locator.textContent()) || "";
    if (pattern.test(text)) return text;
    await new Promise((r) => setTimeout(r, 100));
  }
  fail(`${what}: expected ${pattern}, the page shows ${JSON.stringify(text.slice(0, 400))}`);
}

/** Opens an operation's try-it form, fills it, sends it; returns its result parts. */
async function tryIt(page, operationId, fill = {}) {
  const op = page.locator(`#${operationId}`);
  if (!(await op.locator("details.try").evaluate((details) => details.open))) {
    await op.locator("details.try summary").click();
  }
  const form = op.locator("form.tryit");
  for (const [name, value] of Object.entries(fill)) await form.locator(`[name="${name}"]`).fill(value);
  const status = form.locator(".result .status");
  await status.evaluate((element) => { element.textContent = ""; });
  await form.locator("button[type=submit]").click();
  await waitText(status, /^\d{3} /, `${operationId}: a status line`);
  return { op, form, status, headers: form.locator(".result .headers"), body: form.locator(".result .body") };
}

/** A screenshot of one element, whole: the viewport is made as tall as the
 * element for the shot (element and full-page screenshots of a page this
 * long can time out headless). */
async function shot(page, locator, file) {
  const size = page.viewportSize();
  const height = await locator.evaluate((element) => Math.ceil(element.getBoundingClientRect().height) + 16);
  await page.setViewportSize({ width: size.width, height: Math.min(Math.max(height, 300), 4000) });
  await locator.evaluate((element) => window.scrollTo(0, element.getBoundingClientRect().top + window.scrollY - 8));
  await page.screenshot({ path: join(artifacts, file) });
  await page.setViewportSize(size);
}

/** The page must not be wider than its viewport. */
async function assertNoOverflow(page, what) {
  const { scroll, client } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  if (scroll > client) fail(`${what}: the page is ${scroll} px wide in a ${client} px viewport`);
  pass(`${what}: ${scroll} px wide in a ${client} px viewport`);
}

async function watch(context) {
  // Anything not on the server under test is recorded and refused.
  await context.route("**/*", (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    foreign.push(url);
    return route.abort();
  });
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Root in CI containers: Chromium's sandbox needs user namespaces it may not have.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  // Desktop: authorize, then run calls.
  const desktop = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await watch(desktop);
  const page = await desktop.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  const response = await page.goto(`${base}/docs`);
  if (response.status() !== 200) fail(`/docs answered ${response.status()}`);
  pass("/docs loads");
  await page.screenshot({ path: join(artifacts, "desktop-top.png") });

  const createDescription = await page.locator("#TenantService_CreateTenant > p").nth(1).innerHTML();
  if (!createDescription.includes("<code>owner_email</code>") || createDescription.includes("`")) {
    fail(`backticks are not rendered as code: ${createDescription}`);
  }
  pass("backticks in descriptions render as <code>");

  const auth = page.locator("#auth-form");
  await auth.locator("[name=credential]").fill(key);
  await auth.locator("button[type=submit]").click();
  await waitText(page.locator("#auth-status"), /^Authorized as PRINCIPAL_KIND_PLATFORM_ADMIN/, "authorize");
  pass("authorized in the page with the platform-admin key (WhoAmI)");

  const created = await tryIt(page, "TenantService_CreateTenant");
  const prefilled = await created.form.locator("textarea[name=body]").inputValue();
  if (!prefilled.includes('"slug": "acme"')) fail(`CreateTenant's body is not prefilled: ${prefilled}`);
  await waitText(created.status, /^200 /, "CreateTenant status");
  await waitText(created.body, /"slug": "acme"/, "CreateTenant body");
  pass("CreateTenant from the prefilled example: 200 and the new tenant shown");

  const listed = await tryIt(page, "TenantService_ListTenants", { pageSize: "10" });
  await waitText(listed.status, /^200 OK · GET \/v1\/tenants\?pageSize=10 /, "ListTenants status");
  await waitText(listed.headers, /content-type: application\/json/, "ListTenants headers");
  await waitText(listed.headers, /x-request-id: /, "ListTenants headers");
  await waitText(listed.body, /"tenants": \[[\s\S]*"slug": "acme"/, "ListTenants body");
  pass("ListTenants with a query parameter: status, response headers and body shown");
  await shot(page, listed.op, "desktop-try-it-list-tenants.png");

  const got = await tryIt(page, "TenantService_GetTenant", { tenant_id: "acme" });
  await waitText(got.status, /^200 OK · GET \/v1\/tenants\/acme /, "GetTenant status");
  await waitText(got.body, /"displayName": "Acme Corporation"/, "GetTenant body");
  pass("GetTenant with a path parameter");

  const missing = await tryIt(page, "TenantService_GetTenant", { tenant_id: "nobody-here" });
  await waitText(missing.status, /^404 /, "GetTenant of an unknown tenant");
  await waitText(missing.body, /"code": 5/, "the error body");
  pass("an error is shown with its status and the gRPC status body");

  await auth.locator("[name=tenant]").fill("acme");
  await auth.locator("button[type=submit]").click();
  await waitText(page.locator("#auth-status"), /in tenant acme\.$/, "authorize in tenant acme");
  const whoami = await tryIt(page, "AuthService_WhoAmI");
  await waitText(whoami.status, /^200 /, "WhoAmI status");
  await waitText(whoami.body, /"tenantSlug": "acme"/, "WhoAmI body");
  pass("x-tenant-id from the Authorize panel reaches tenant-scoped calls");
  await shot(page, whoami.op, "desktop-try-it-whoami.png");
  if (errors.length) fail(`script errors: ${errors.join("; ")}`);
  pass("no script errors");
  await desktop.close();

  // Phone: 390 px wide, reference and an open try-it form.
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
  });
  await watch(phone);
  const small = await phone.newPage();
  await small.goto(`${base}/docs`);
  await assertNoOverflow(small, "390 px, reference");
  await small.screenshot({ path: join(artifacts, "phone-top.png") });
  await small.locator("#TenantService_UpdateTenant details.try summary").click();
  await small.locator("#TenantService_ListTenants details.try summary").click();
  await small.locator("#auth-form [name=credential]").fill(key);
  await small.locator("#auth-form button[type=submit]").click();
  await waitText(small.locator("#auth-status"), /^Authorized as/, "authorize on the phone");
  const phoneList = await tryIt(small, "TenantService_ListTenants");
  await waitText(phoneList.body, /"slug": "acme"/, "ListTenants on the phone");
  await assertNoOverflow(small, "390 px, try-it forms open with a response");
  await shot(small, phoneList.op, "phone-try-it-list-tenants.png");
  await small.locator("#schema-tenantry\\.v1\\.Tenant").evaluate((element) => element.scrollIntoView());
  await small.screenshot({ path: join(artifacts, "phone-schema-tenant.png") });
  await phone.close();

  if (foreign.length) fail(`the page requested other origins: ${foreign.join(", ")}`);
  pass("nothing was requested from anywhere but the server under test");
  console.log(`docs-browser: all ${checks} checks passed`);
} finally {
  await browser.close();
}
