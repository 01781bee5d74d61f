// The Temporal Web UI as an operator sees it, in a real browser (playwright-core driving the machine's Chromium,
// headless): the migration in the workflow list with the Tidemark columns, its page with activity summaries on the
// timeline, and its summary, details and current details. Screenshots go to $TIDEMARK_SCREENSHOTS (docs/images/ holds
// the README's), else a temporary directory.
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { TidemarkClient } from '../../src/client';
import { startDevServer, type DevServer } from '../../src/infra/devserver';
import type { RunningWorker } from '../../src/worker';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan, tempDir } from '../helpers/plans';

const CHROMIUM = process.env.TIDEMARK_CHROMIUM ?? ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find(existsSync);
if (!CHROMIUM) {
  console.warn(
    'web-ui.test.ts skipped: no Chromium found (apt-get install chromium, or set TIDEMARK_CHROMIUM to its path)',
  );
}
const maybe = CHROMIUM ? test : test.skip;

const h = new Harness();
let server: DevServer;
let worker: RunningWorker;
let client: TidemarkClient;
let browser: Browser;
const shots = process.env.TIDEMARK_SCREENSHOTS ?? tempDir('tidemark-screens-');

beforeAll(async () => {
  if (!CHROMIUM) return;
  await h.start({ worker: false });
  server = await startDevServer({});
  worker = await h.startWorker({ address: server.address });
  client = await TidemarkClient.connect({ address: server.address, taskQueue: h.taskQueue });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
});
afterAll(async () => {
  await browser?.close();
  await client?.close();
  await worker?.shutdown();
  await server?.stop();
  await h.stop();
});

/** Waits until `text` shows on the page or in one of its frames (the Web UI renders markdown in sandboxed iframes). */
async function visible(page: Page, text: string | RegExp): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    for (const frame of page.frames()) {
      if (
        await frame
          .getByText(text)
          .filter({ visible: true })
          .count()
          .catch(() => 0)
      )
        return;
    }
    await page.waitForTimeout(250);
  }
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true });
  throw new Error(`"${text}" did not show within 30s (the page as it was: ${join(shots, 'failure.png')})`);
}

maybe(
  'the Web UI lists the migration with its columns and shows its summary, details, current details and activity summaries',
  async () => {
    mkdirSync(shots, { recursive: true });
    const db = await h.db('webui');
    const plan = await meetingsPlan(db, { rows: 2000, soakMs: 600_000 });
    const { workflowId } = await client.start(plan, { autoApprove: true });
    await eventually(async () => (await client.status(workflowId)).traffic?.soakEndsAt, 'the first soak', 120_000);

    const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
    // The list, with the Tidemark columns added the way the README says.
    await page.goto(`${server.uiUrl}/namespaces/default/workflows`);
    await visible(page, workflowId);
    await page.getByTestId('workflows-summary-table-configuration-button').click();
    for (const column of ['TidemarkPlan', 'TidemarkPhase', 'TidemarkState'])
      await page.getByLabel(`Add ${column} column`).click();
    // Room for them: every row's type is migrationWorkflow, and the run id and end are on the migration's page.
    for (const column of ['Type', 'Run ID', 'End']) await page.getByLabel(`Remove ${column} column`).click();
    await page.getByTestId('drawer-close-button').click();
    await page.getByText('Configure Workflows Table').waitFor({ state: 'hidden' });
    const row = page.getByRole('row').filter({ hasText: workflowId });
    await row.getByText('traffic').waitFor({ state: 'visible', timeout: 30_000 });
    await row.getByText(plan.name, { exact: true }).waitFor({ state: 'visible' });
    await page.screenshot({ path: join(shots, 'web-ui-list.png') });

    // The migration's page: every activity on the timeline says what it does.
    await page.getByRole('link', { name: workflowId }).first().click();
    await visible(page, 'copy meetings range 1/1');
    await visible(page, 'flag use_room_types → 10%');
    await visible(page, /soak at 10% until/);
    await page.getByRole('heading', { name: 'Timeline' }).evaluate((e) => e.scrollIntoView({ block: 'start' }));
    await page.screenshot({ path: join(shots, 'web-ui-timeline.png') });

    // Summary and details from the plan; current details from the running workflow.
    await page
      .getByRole('link', { name: 'User Metadata' })
      .or(page.getByRole('tab', { name: 'User Metadata' }))
      .first()
      .click();
    await visible(
      page,
      `tidemark ${plan.name} · meetings → meetings_v2, query → room_states · flag use_room_types 10% → 50% → 100%`,
    );
    await visible(page, 'meetings, meetings_v2, room_states');
    await visible(page, /at 10%, soaking until/);
    await visible(page, 'copy meetings: 2,000 rows, done');
    await page.screenshot({ path: join(shots, 'web-ui-details.png'), fullPage: true });

    await client.abort(workflowId, { reason: 'browser test over' });
    expect((await client.waitForEnd(workflowId)).state).toBe('rolled-back');
  },
);
