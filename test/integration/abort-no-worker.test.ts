// `abort --no-wait` while no worker runs: an update needs a worker to take it, so the command would wait for one (an
// operator saw it sit for minutes). After 10 s without an answer it signals the abort instead: kept in the history, and
// carried out when a worker runs.
import { runCli } from '../helpers/cli';
import { Harness } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(120_000);

test('abort --no-wait with no worker on the task queue signals the abort and returns', async () => {
  const db = await h.db('noworker');
  const name = `no-worker-${db.name.slice(-6)}`;
  const file = writePlan(
    {
      name,
      database: { urlEnv: db.urlEnv },
      backup: { enabled: false },
      schema: [{ id: '001', up: 'up.sql', down: 'down.sql' }],
    },
    { 'up.sql': 'SELECT 1', 'down.sql': 'SELECT 1' },
  );
  const env = { TIDEMARK_TASK_QUEUE: `nobody-${process.pid}`, [db.urlEnv]: db.url };
  const started = await runCli(['start', file], env);
  expect(started.code).toBe(0);
  const handle = await h.client.handle(`tidemark-${name}`);
  try {
    const aborted = await runCli(['abort', name, '--no-wait', '--reason', 'worker down', '--json'], env);
    expect(aborted.code).toBe(0);
    expect(JSON.parse(aborted.stdout)).toEqual({
      accepted: true,
      signalled: true,
      message: `no worker answered in 10 s: abort signalled; the rollback starts when a worker runs (tidemark status ${name})`,
    });
    const signals = [];
    for (const e of (await handle.fetchHistory()).events ?? []) {
      if (e.workflowExecutionSignaledEventAttributes)
        signals.push(e.workflowExecutionSignaledEventAttributes.signalName);
    }
    expect(signals).toEqual(['abort']);
  } finally {
    await handle.terminate('test over');
  }
});
