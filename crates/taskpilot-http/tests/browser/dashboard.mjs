// The dashboard in a real browser (Debian's headless Chromium through playwright-core),
// against a real server: started by tests/dashboard_browser.rs, which passes
//
//   TP_BASE            the server's base URL
//   TP_ADMIN, TP_OPERATOR, TP_VIEWER   token secrets
//   TP_VIEWER_ID       the viewer token's id (to revoke it)
//   TP_SCREENSHOTS     an absolute folder for a screenshot of every page
//   TP_NODE_MODULES    the folder holding playwright-core
//
// Every step waits for something visible to happen (a count, a URL, a badge), never for a
// length of time. Any uncaught page error, console error or CSP violation fails the run,
// except the one refusal a step provokes on purpose.
import { createRequire } from 'node:module';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const require = createRequire(join(process.env.TP_NODE_MODULES, 'noop.js'));
const { chromium } = require('playwright-core');

const base = process.env.TP_BASE;
const admin = process.env.TP_ADMIN;
const operator = process.env.TP_OPERATOR;
const viewer = process.env.TP_VIEWER;
const viewerId = process.env.TP_VIEWER_ID;
const shots = process.env.TP_SCREENSHOTS;
mkdirSync(shots, { recursive: true });

// How long one step may wait for what it expects before the run counts as hung; the live
// refresh comes every 3 s.
const STEP_MS = 20000;

const problems = [];
let allowed = null;

function step(name) {
  console.log(`step: ${name}`);
}

function check(ok, what) {
  if (!ok) {
    throw new Error(`check failed: ${what}`);
  }
}

async function api(method, path, token, body) {
  const response = await fetch(base + path, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function createTasks(queue, name, n, extra = {}) {
  const tasks = Array.from({ length: n }, (_, i) => ({
    queue,
    name,
    payload: { order: i, note: '<b>escaped</b>' },
    ...extra,
  }));
  const answer = await api('POST', '/api/tasks/batch', admin, { tasks });
  check(answer.status === 201, `batch create: ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body.items.map((t) => t.id);
}

async function claim(queue, limit, workerId) {
  const answer = await api('POST', '/api/tasks/claim', admin, { workerId, queues: [queue], limit });
  check(answer.status === 200, `claim: ${answer.status}`);
  return answer.body.items;
}

async function taskStatus(id) {
  return (await api('GET', `/api/tasks/${id}`, admin)).body.status;
}

function watch(page, label) {
  page.on('pageerror', (error) => problems.push(`${label}: page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') {
      return;
    }
    const text = message.text();
    if (allowed && allowed.test(text)) {
      return;
    }
    problems.push(`${label}: console error: ${text}`);
  });
  page.setDefaultTimeout(STEP_MS);
}

async function newPage(context, label) {
  const page = await context.newPage();
  watch(page, label);
  return page;
}

async function shot(page, name) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });
}

async function signIn(page, secret) {
  await page.goto(`${base}/ui`);
  await page.waitForURL(/\/ui\/login/);
  await page.locator('#token').fill(secret);
  await page.locator('form[action="/ui/login"] button[type="submit"]').click();
  await page.waitForURL(`${base}/ui`);
  await page.locator('nav a[aria-current="page"]', { hasText: 'Overview' }).waitFor();
}

async function count(page, status) {
  return Number(await page.locator(`[data-count="${status}"]`).innerText());
}

async function waitForCount(page, status, expected) {
  await page.waitForFunction(
    ([status, expected]) => {
      const el = document.querySelector(`[data-count="${status}"]`);
      return el && Number(el.textContent) === expected;
    },
    [status, expected],
    { timeout: STEP_MS },
  );
}

async function taskIds(page) {
  return page.locator('tr[data-task]').evaluateAll((rows) => rows.map((r) => r.dataset.task));
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--no-first-run',
  ],
});

try {
  const options = { viewport: { width: 1400, height: 1000 } };
  const operatorContext = await browser.newContext(options);
  // Reports CSP violations as console errors too (Chromium logs most of them already).
  await operatorContext.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const page = await newPage(operatorContext, 'operator');

  step('sign in with an operator token');
  await page.goto(`${base}/ui/login`);
  await shot(page, 'login');
  await signIn(page, operator);
  check((await page.locator('.who').innerText()).includes('operator'), 'the header names the kind');

  step('tasks created through the API show up in the overview counts');
  const before = await count(page, 'runnable');
  const emails = await createTasks('emails', 'send-email', 6);
  await createTasks('reports', 'build-report', 2, { runAt: new Date(Date.now() + 3600e3).toISOString() });
  await waitForCount(page, 'runnable', before + 6);
  await waitForCount(page, 'scheduled', 2);
  await page.locator('tr[data-queue="emails"]').waitFor();

  step('a filtered task list is a shareable address');
  await page.goto(`${base}/ui/tasks`);
  await page.locator('#f-queue').fill('emails');
  await page.locator('#f-name').fill('send-email');
  await page.locator('#task-filters button[type="submit"]').click();
  await page.waitForURL(/queue=emails/);
  const shared = page.url();
  const listed = await taskIds(page);
  check(listed.length === emails.length, `${listed.length} tasks listed, ${emails.length} made`);
  check([...listed].sort().join() === [...emails].sort().join(), 'the listing shows exactly them');
  await shot(page, 'tasks');
  const second = await newPage(operatorContext, 'shared');
  await second.goto(shared);
  check((await taskIds(second)).join() === listed.join(), 'the shared address lists the same');
  await second.close();

  step("a task's page shows its attempts");
  const [claimed] = await claim('emails', 1, 'browser-worker');
  const beat = await api('PUT', `/api/tasks/${claimed.id}/heartbeat`, admin, {
    workerId: 'browser-worker',
    leaseToken: claimed.leaseToken,
  });
  check(beat.status === 200, `heartbeat: ${beat.status}`);
  await page.goto(`${base}/ui/tasks?queue=emails&status=RUNNING`);
  await page.locator(`tr[data-task="${claimed.id}"] a`).click();
  await page.waitForURL(`${base}/ui/tasks/${claimed.id}`);
  await page.locator('#attempts h3', { hasText: 'Attempt 1' }).waitFor();
  check((await page.locator('#attempts').innerText()).includes('browser-worker'), 'the worker is named');
  check((await page.locator('#payload').innerText()).includes('<b>escaped</b>'), 'markup shows as text');
  await shot(page, 'task');

  step('cancel it after confirming');
  await page.locator('[data-action="cancel"]').click();
  await page.locator('#confirm').waitFor();
  await shot(page, 'confirm-cancel');
  await page.locator('#confirm').click();
  await page.waitForURL(`${base}/ui/tasks/${claimed.id}?notice=cancelled`);
  await page.locator('#task-status', { hasText: 'CANCELLED' }).waitFor();
  check((await taskStatus(claimed.id)) === 'CANCELLED', 'the API sees it cancelled');

  step('failed tasks are rerun in bulk after a dry-run count');
  const failing = await createTasks('billing', 'charge-card', 3, { maxAttempts: 1 });
  for (const task of await claim('billing', 3, 'browser-worker')) {
    const failed = await api('PUT', `/api/tasks/${task.id}/fail`, admin, {
      workerId: 'browser-worker',
      leaseToken: task.leaseToken,
      errorMessage: 'card declined',
    });
    check(failed.status === 200, `fail: ${failed.status}`);
  }
  await page.goto(`${base}/ui/dead-letters`);
  const group = page.locator('tr[data-group]', { hasText: 'card declined' });
  await group.waitFor();
  check((await group.innerText()).includes('charge-card'), 'the group names the task name');
  await shot(page, 'dead-letters');
  await group.locator('[data-action="rerun"]').click();
  await page.locator('h1', { hasText: 'Rerun 3 tasks?' }).waitFor();
  await shot(page, 'confirm-bulk');
  await page.locator('#confirm').click();
  await page.locator('.notice', { hasText: '3 of 3 matching tasks done' }).waitFor();
  for (const id of failing) {
    check((await taskStatus(id)) === 'PENDING', `task ${id} was rerun`);
  }

  step('a paused queue gives a claim nothing');
  await page.goto(`${base}/ui/queues`);
  await page.locator('tr[data-queue="billing"] [data-action="pause"]').click();
  await page.waitForURL(/notice=paused/);
  await page.locator('tr[data-queue="billing"] .badge.paused').waitFor();
  check((await claim('billing', 10, 'browser-worker')).length === 0, 'a claim takes nothing');
  await shot(page, 'queues');

  step('the workers page shows each worker and what it runs');
  await createTasks('thumbnails', 'resize-image', 4);
  const thumbs = await claim('thumbnails', 4, 'thumb-worker');
  for (const task of thumbs.slice(1)) {
    const done = await api('PUT', `/api/tasks/${task.id}/succeed`, admin, {
      workerId: 'thumb-worker',
      leaseToken: task.leaseToken,
      result: { width: 640 },
    });
    check(done.status === 200, `succeed: ${done.status}`);
  }
  await page.goto(`${base}/ui/workers`);
  await page.locator('tr[data-worker="browser-worker"]').waitFor();
  const worker = page.locator('tr[data-worker="thumb-worker"]');
  await worker.locator(`a[href="/ui/tasks/${thumbs[0].id}"]`).waitFor();
  await shot(page, 'workers');

  step('the overview, with data');
  await page.goto(`${base}/ui`);
  await page.locator('[data-chart] canvas').waitFor();
  await waitForCount(page, 'succeeded', 3);
  await shot(page, 'overview');

  step('an admin manages tokens');
  const adminContext = await browser.newContext(options);
  const adminPage = await newPage(adminContext, 'admin');
  await signIn(adminPage, admin);
  await adminPage.goto(`${base}/ui/tokens`);
  await adminPage.locator('#t-name').fill('browser-made');
  await adminPage.locator('#t-kind').selectOption('viewer');
  await adminPage.locator('form[action="/ui/tokens"] button[type="submit"]').click();
  await adminPage.locator('#secret').waitFor();
  check((await adminPage.locator('#secret').innerText()).startsWith('tp_viewer_'), 'the secret is shown once');
  await shot(adminPage, 'tokens');
  await adminContext.close();

  step('a viewer sees no action, and a forged one is refused');
  const viewerContext = await browser.newContext(options);
  const viewerPage = await newPage(viewerContext, 'viewer');
  await signIn(viewerPage, viewer);
  const pending = emails.find((id) => id !== claimed.id);
  for (const path of [`/ui/tasks/${pending}`, '/ui/queues', '/ui/dead-letters']) {
    await viewerPage.goto(base + path);
    await viewerPage.locator('main h1').waitFor();
    check((await viewerPage.locator('[data-action]').count()) === 0, `no action button on ${path}`);
  }
  allowed = /status of 403/;
  const forged = await viewerPage.evaluate(async (path) => {
    const response = await fetch(path, { method: 'POST', body: new URLSearchParams({ version: '1' }) });
    return response.status;
  }, `/ui/tasks/${pending}/cancel`);
  allowed = null;
  check(forged === 403, `the forged cancel answered ${forged}`);
  check((await taskStatus(pending)) === 'PENDING', 'the forged cancel changed nothing');

  step("revoking the viewer's token signs it out at the next refresh");
  await viewerPage.goto(`${base}/ui`);
  await viewerPage.locator('[data-live]').first().waitFor();
  const revoked = await api('DELETE', `/api/tokens/${viewerId}`, admin);
  check(revoked.status === 200, `revoke: ${revoked.status}`);
  await viewerPage.waitForURL(/\/ui\/login\?reason=revoked/);
  await viewerPage.locator('.error', { hasText: 'revoked' }).waitFor();
  await shot(viewerPage, 'signed-out');
  await viewerContext.close();
  await operatorContext.close();
} catch (error) {
  problems.push(`failed: ${error.stack || error}`);
} finally {
  await browser.close();
}

if (problems.length > 0) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log('dashboard: every step passed');
