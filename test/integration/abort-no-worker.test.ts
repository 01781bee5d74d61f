// Commands while no worker runs: an update needs a worker to take it, so the command would wait for one (an operator
// saw it sit for minutes), and the server would carry it out whenever one started. `abort --no-wait` signals the abort
// instead: kept in the history, and carried out when a worker runs. Every other update is refused before it is sent.
import { runCli } from '../helpers/cli';
import { Harness } from '../helpers/env';
import { writePlan } from '../helpers/plans';

const h = new Harness();
beforeAll(() => h.start());
afterAll(() => h.stop());
jest.setTimeout(120_000);

/** A migration started on a task queue no worker polls. */
async function startedWithoutWorker(tag: string) {
  const db = await h.db(tag);
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
  return { name, env, handle: await h.client.handle(`tidemark-${name}`) };
}

/** The names of the history's signals and updates (admitted or accepted) so far. */
async function messages(handle: Awaited<ReturnType<typeof h.client.handle>>) {
  const out: string[] = [];
  for (const e of (await handle.fetchHistory()).events ?? []) {
    if (e.workflowExecutionSignaledEventAttributes)
      out.push(`signal ${e.workflowExecutionSignaledEventAttributes.signalName}`);
    const update = e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.name;
    if (update) out.push(`update ${update}`);
  }
  return out;
}

test('abort --no-wait with no worker on the task queue signals the abort and returns', async () => {
  const { name, env, handle } = await startedWithoutWorker('noworker');
  try {
    const aborted = await runCli(['abort', name, '--no-wait', '--reason', 'worker down', '--json'], env);
    expect(aborted.code).toBe(0);
    expect(JSON.parse(aborted.stdout)).toEqual({
      accepted: true,
      signalled: true,
      message: `no worker polls task queue "${env.TIDEMARK_TASK_QUEUE}": abort signalled; the rollback starts when a worker runs (tidemark status ${name})`,
    });
    expect(await messages(handle)).toEqual(['signal abort']);
  } finally {
    await handle.terminate('test over');
  }
});

test('approve, pause and a waiting abort with no worker are refused at once, and nothing is left for a later worker', async () => {
  const { name, env, handle } = await startedWithoutWorker('noworker2');
  try {
    const approved = await runCli(['approve', name], env);
    expect(approved.code).toBe(1);
    expect(approved.stderr).toContain(
      `error: no worker polls task queue "${env.TIDEMARK_TASK_QUEUE}" to answer it: start one (tidemark worker), then try again; nothing was sent`,
    );
    const paused = await runCli(['pause', name, '--json'], env);
    expect(paused.code).toBe(1);
    expect(JSON.parse(paused.stderr)).toMatchObject({ type: 'Error', code: 1 });
    const aborted = await runCli(['abort', name], env);
    expect(aborted.code).toBe(1);
    expect(aborted.stderr).toContain('or use abort --no-wait to leave the abort for the next worker; nothing was sent');
    expect(await messages(handle)).toEqual([]);
  } finally {
    await handle.terminate('test over');
  }
});
