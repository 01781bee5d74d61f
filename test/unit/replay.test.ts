// Upgrade safety: histories recorded from real runs (test/fixtures/histories, `npm run record-histories`) replay
// against the current workflow code. A change that would break a migration already running fails here.
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker } from '@temporalio/worker';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const DIR = join(__dirname, '..', 'fixtures', 'histories');
const files = readdirSync(DIR).filter((f) => f.endsWith('.json'));

test('the recorded histories cover every workflow: the runbook (completed, aborted mid-copy, gate rollback, continued soak, approval wait, approval after its timeout), blue-green runs (an applier stopped and resumed; a rollback after cut-over held and resumed), a revert, a ledger read', () => {
  const names = new Set(files.map((f) => f.replace(/(-run\d+)?\.json$/, '')));
  expect([...names].sort()).toEqual([
    'abort-mid-copy',
    'approval-after-timeout',
    'blue-green-resumed',
    'blue-green-rollback-held',
    'completed',
    'continued-soak',
    'gate-rollback',
    'ledger-read',
    'revert-completed',
    'waiting-approval',
  ]);
});

test('every recorded history replays against the current workflow code', async () => {
  // The nondeterminism a broken replay reports is in the failures below; the runtime's own warnings repeat it.
  try {
    Runtime.install({
      logger: new DefaultLogger('ERROR'),
      telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' } } },
    });
  } catch {
    // installed already in this process
  }
  const { code } = await bundleWorkflowCode({
    workflowsPath: require.resolve('../../src/migration'),
    logger: new DefaultLogger('WARN'),
  });
  const histories = files.map((f) => ({
    workflowId: `tidemark-replay-${f.replace(/\.json$/, '')}`,
    history: historyFromJSON(JSON.parse(readFileSync(join(DIR, f), 'utf8'))),
  }));
  const failures: string[] = [];
  for await (const r of Worker.runReplayHistories({ workflowBundle: { code } }, histories)) {
    if (r.error) failures.push(`${r.workflowId}: ${r.error.message}`);
  }
  expect(failures).toEqual([]);
}, 120_000);
