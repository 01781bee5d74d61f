// The runbook's own logic, on the time-skipping test server with stub activities: the order undos run in and what
// happens when one fails, gate judging, approval timeouts, and every operator message the workflow must refuse.
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import {
  abortSignal,
  abortUpdate,
  approveSignal,
  approveUpdate,
  pauseSignal,
  pauseUpdate,
  promoteSignal,
  promoteUpdate,
  resumeSignal,
  resumeUpdate,
  statusQuery,
  throttleUpdate,
  type MigrationStatus,
} from '../../src/migration/messages';
import type { Gate } from '../../src/plan/types';
import { finalStatus, fullPlan, StubEnv, stubActivities, type Call, rejection, until } from '../helpers/stub-workflow';

jest.setTimeout(120_000);

const stub = new StubEnv();
beforeAll(() => stub.start());
afterAll(() => stub.stop());

const undoNames = ['fenceRun', 'restoreArchivedTables', 'resetFlag', 'undoCopy', 'revertSchemaStep', 'restoreBackup'];
const undoCalls = (calls: Call[]) =>
  calls
    .filter((c) => undoNames.includes(c.name))
    .map((c) => (c.name === 'revertSchemaStep' ? `revertSchemaStep ${(c.input.step as { id: string }).id}` : c.name));

const noSoaks = (p = fullPlan()) => ({
  ...p,
  traffic: { ...p.traffic!, stages: p.traffic!.stages.map((s) => ({ ...s, soak: 0 })) },
});

describe('rollback', () => {
  test('an abort fences the run, then runs every undo newest first', async () => {
    const calls: Call[] = [];
    const final = await stub.run(noSoaks(), stubActivities(calls), async (h) => {
      await until(h, (s) => s.waitingUntil?.what === 'drop of archived tables', 'the drop wait');
      await h.executeUpdate(abortUpdate, { args: [{ by: 'test', reason: 'enough' }] });
      return finalStatus(h);
    });
    expect(final.state).toBe('rolled-back');
    expect(undoCalls(calls)).toEqual([
      'fenceRun',
      'restoreArchivedTables',
      'resetFlag',
      'undoCopy',
      'revertSchemaStep 002',
      'revertSchemaStep 001',
    ]);
    expect(final.compensations.map((c) => [c.phase, c.status])).toEqual([
      ['schema', 'done'],
      ['schema', 'done'],
      ['copy', 'done'],
      ['traffic', 'done'],
      ['cleanup', 'done'],
    ]);
    expect(calls.some((c) => c.name === 'dropArchivedTables')).toBe(false);
  });

  test('a failed undo holds the rollback; aborted again, nothing older runs and the migration ends failed saying what is left', async () => {
    const calls: Call[] = [];
    const stubs = stubActivities(calls, {
      resetFlag: async () => {
        throw ApplicationFailure.nonRetryable('database unreachable');
      },
    });
    const final = await stub.run(noSoaks(), stubs, async (h) => {
      await until(h, (s) => s.waitingUntil?.what === 'drop of archived tables', 'the drop wait');
      await h.executeUpdate(abortUpdate, { args: [{ reason: 'enough' }] });
      const held = await until(h, (s) => s.state === 'paused', 'the rollback held');
      expect(held.paused?.reason).toMatch(
        /^rollback held: set flag use_orders_v2 to 0% failed \(database unreachable\)\. Fix the cause, then resume/,
      );
      expect(held.compensations.find((c) => c.phase === 'traffic')?.status).toBe('failed');
      await h.executeUpdate(abortUpdate, { args: [{ reason: 'leave it' }] });
      return finalStatus(h);
    });
    expect(final.state).toBe('failed');
    // The new table is not dropped while the flag may still send traffic to it.
    expect(undoCalls(calls)).toEqual(['fenceRun', 'restoreArchivedTables', 'resetFlag']);
    expect(final.compensations.map((c) => [c.phase, c.status])).toEqual([
      ['schema', 'not-run'],
      ['schema', 'not-run'],
      ['copy', 'not-run'],
      ['traffic', 'failed'],
      ['cleanup', 'done'],
    ]);
    expect(final.error).toContain('rollback stopped: set flag use_orders_v2 to 0% failed (database unreachable)');
    expect(final.error).toContain('run 001.down.sql (undo 001)');
  });

  test('a failed undo holds the rollback; once resumed it runs again and the rollback goes on to the end', async () => {
    const calls: Call[] = [];
    let refusals = 1;
    const stubs = stubActivities(calls, {
      resetFlag: async () => {
        if (refusals-- > 0) throw ApplicationFailure.nonRetryable('database unreachable');
      },
    });
    const final = await stub.run(noSoaks(), stubs, async (h) => {
      await until(h, (s) => s.waitingUntil?.what === 'drop of archived tables', 'the drop wait');
      await h.executeUpdate(abortUpdate, { args: [{ reason: 'enough' }] });
      await until(h, (s) => s.state === 'paused', 'the rollback held');
      await h.executeUpdate(resumeUpdate, { args: [{ by: 'operator' }] });
      return finalStatus(h);
    });
    expect(final.state).toBe('rolled-back');
    expect(undoCalls(calls).filter((n) => n === 'resetFlag')).toHaveLength(2);
    expect(final.compensations.every((c) => c.status === 'done')).toBe(true);
    expect(final.events.map((e) => e.message)).toContain('rollback resumed: the failed undo runs again');
  });

  test('once the archived tables are being dropped, an abort is refused', async () => {
    const calls: Call[] = [];
    let release!: () => void;
    const dropping = new Promise<void>((r) => (release = r));
    const stubs = stubActivities(calls, {
      dropArchivedTables: async () => {
        await dropping;
        return { dropped: ['orders'] };
      },
    });
    const plan = noSoaks(fullPlan({ cleanup: { after: 0, archive: ['orders'], dropAfter: 1000 } }));
    const { refused, final } = await stub.run(plan, stubs, async (h) => {
      await stub.env.sleep(2000);
      await until(h, () => calls.some((c) => c.name === 'dropArchivedTables'), 'the drop to start');
      const refused = await rejection(h.executeUpdate(abortUpdate, { args: [{}] }));
      release();
      return { refused, final: await finalStatus(h) };
    });
    expect(refused).toBe('the archived tables are being dropped: there is no way back any more');
    expect(final.state).toBe('completed');
    expect(final.compensations.find((c) => c.phase === 'cleanup')?.status).toBe('dropped');
  });

  test('a migration stopped before it changed anything ends saying so, without fencing', async () => {
    const calls: Call[] = [];
    const stubs = stubActivities(calls, {
      runPreflight: async () => {
        throw ApplicationFailure.nonRetryable(
          'preflight failed: locks: pid 7 holds AccessExclusiveLock',
          'PreflightFailed',
        );
      },
    });
    const final = await stub.run(fullPlan(), stubs, (h) => finalStatus(h));
    expect(final.state).toBe('rolled-back');
    expect(final.events.at(-1)?.message).toBe('ended: nothing was changed');
    expect(final.error).toBe('preflight failed: locks: pid 7 holds AccessExclusiveLock; nothing was changed');
    expect(undoCalls(calls)).toEqual([]);
  });

  test("an operator's abort ends the workflow as completed with its reason; a rollback of its own fails it, without a stack trace", async () => {
    const aborted = await stub.run(fullPlan(), stubActivities([]), async (h) => {
      await until(h, (s) => s.traffic?.percent === 10, 'the first stage');
      await h.executeUpdate(abortUpdate, { args: [{ by: 'oncall', reason: 'customer escalation' }] });
      // The result, not a failure: the Web UI shows a deliberate end.
      return (await h.result()) as MigrationStatus;
    });
    expect(aborted).toMatchObject({ state: 'rolled-back', error: 'aborted by oncall: customer escalation' });

    const failed = await stub.run(
      fullPlan(),
      stubActivities([], {
        runValidationCheck: async () => ({ check: 'rows', kind: 'rowCount', ok: false, message: '9 vs 10' }),
      }),
      async (h) =>
        h.result().then(
          () => undefined,
          (e: { cause?: ApplicationFailure }) => e.cause,
        ),
    );
    expect(failed?.type).toBe('MigrationRolledBack');
    expect(failed?.message).toBe('validation failed — rows: 9 vs 10');
    expect(failed?.stack ?? '').not.toContain('workflow.ts');
    expect((failed?.details?.[0] as MigrationStatus).state).toBe('rolled-back');
  });
});

describe('signals', () => {
  test('approve, pause, resume, promote and abort work as signals; one an update would refuse is recorded and ignored', async () => {
    const plan = fullPlan({ approvals: ['schema'], cleanup: undefined });
    const final = await stub.run(
      plan,
      stubActivities([]),
      async (h) => {
        await until(h, (s) => s.pendingApproval?.gate === 'schema', 'the schema approval');
        await h.signal(resumeSignal);
        await until(
          h,
          (s) => s.events.some((e) => e.message.startsWith('resume signal ignored')),
          'the ignored resume',
        );
        await h.signal(approveSignal, { by: 'alice', comment: 'from the Web UI' });
        await until(h, (s) => s.traffic?.percent === 10, 'the first stage');
        await h.signal(pauseSignal, { reason: 'look first' });
        await until(h, (s) => s.paused?.reason === 'look first', 'the pause');
        await h.signal(resumeSignal);
        await until(h, (s) => s.paused === null, 'the resume');
        await h.signal(promoteSignal);
        await until(h, (s) => s.traffic?.percent === 100, 'the second stage');
        await h.signal(abortSignal, { reason: 'signalled' });
        return finalStatus(h);
      },
      { autoApprove: false },
    );
    const messages = final.events.map((e) => e.message);
    expect(messages).toContain('resume signal ignored: the migration is not paused');
    expect(messages).toContain('schema approved by alice: from the Web UI');
    expect(messages).toContain('promoted by signal');
    expect(final.approvals).toEqual([expect.objectContaining({ gate: 'schema', by: 'alice' })]);
    expect(final).toMatchObject({ state: 'rolled-back', error: 'aborted by signal: signalled' });
  });
});

describe('notifications', () => {
  test('notices go to the targets that asked for them; a target that fails is recorded and the migration goes on', async () => {
    const calls: Call[] = [];
    const plan = fullPlan({
      cleanup: undefined,
      notify: [
        { urlEnv: 'CHAT_URL', format: 'slack', on: ['completed', 'phase-started'] },
        { urlEnv: 'BROKEN_URL', format: 'json', on: ['completed'] },
      ],
    });
    const stubs = stubActivities(calls, {
      sendNotification: async (input: never) => {
        const { target } = input as { target: { urlEnv: string } };
        if (target.urlEnv === 'BROKEN_URL') throw ApplicationFailure.nonRetryable('BROKEN_URL: HTTP 500');
        return { status: 200 };
      },
    });
    const final = await stub.run(noSoaks(plan), stubs, (h) => finalStatus(h));
    expect(final.state).toBe('completed');
    const sent = calls
      .filter((c) => c.name === 'sendNotification')
      .map((c) => `${(c.input.target as { urlEnv: string }).urlEnv} ${(c.input.notice as { event: string }).event}`);
    expect(sent.filter((x) => x.startsWith('CHAT_URL'))).toEqual([
      ...['preflight', 'backup', 'schema', 'copy', 'validate', 'traffic'].map(() => 'CHAT_URL phase-started'),
      'CHAT_URL completed',
    ]);
    expect(final.notifications?.filter((n) => n.event === 'completed')).toEqual([
      expect.objectContaining({ target: 'CHAT_URL', state: 'sent' }),
      expect.objectContaining({ target: 'BROKEN_URL', state: 'failed', error: 'BROKEN_URL: HTTP 500' }),
    ]);
  });
});

describe('gates', () => {
  const gate: Gate = {
    name: 'errors',
    sql: 'SELECT 1',
    max: 0.05,
    interval: 60_000,
    timeout: 5000,
    failureLimit: 2,
  } as Gate;
  const gated = () =>
    fullPlan({
      traffic: {
        flagIn: 'source',
        flag: 'use_orders_v2',
        stages: [
          { percent: 10, soak: 3_600_000, approval: false },
          { percent: 100, soak: 0, approval: false },
        ],
        gates: [gate],
      },
      cleanup: undefined,
    });

  test('breaches are counted in a row: a good reading resets the count, failureLimit in a row rolls back', async () => {
    const calls: Call[] = [];
    const readings = [0.01, 0.5, 0.01, 0.5, 0.5, 0.01];
    const stubs = stubActivities(calls, {
      readGates: async () => [{ gate: 'errors', value: readings.shift()! }],
    });
    const final = await stub.run(gated(), stubs, (h) => finalStatus(h));
    expect(final.state).toBe('rolled-back');
    expect(final.error).toBe('gate "errors" breached 2 time(s) in a row: read 0.5, max 0.05, at 10%');
    expect(calls.filter((c) => c.name === 'readGates')).toHaveLength(5);
    expect(final.traffic?.gates[0]).toMatchObject({ gate: 'errors', value: 0.5, ok: false, consecutiveBreaches: 2 });
    expect(undoCalls(calls)).toEqual([
      'fenceRun',
      'resetFlag',
      'undoCopy',
      'revertSchemaStep 002',
      'revertSchemaStep 001',
    ]);
  });

  test('before the flag moves up every gate is read again: one that breaches while the next stage waits for approval keeps the flag where it is, and rolls back', async () => {
    const calls: Call[] = [];
    let value = 0.01;
    const stubs = stubActivities(calls, { readGates: async () => [{ gate: 'errors', value }] });
    const plan = gated();
    plan.traffic!.stages = [
      { percent: 10, soak: 60_000, approval: false },
      { percent: 100, soak: 0, approval: true },
    ];
    const final = await stub.run(
      plan,
      stubs,
      async (h) => {
        await stub.env.sleep(61_000);
        await until(h, (s) => s.pendingApproval?.gate === 'traffic:100%', 'the approval of 100%');
        expect(calls.filter((c) => c.name === 'readGates')).toHaveLength(1);
        value = 0.5; // the error rate climbs while the approval waits, and no soak reads it
        await h.executeUpdate(approveUpdate, { args: [{ by: 'alice' }] });
        return finalStatus(h);
      },
      { autoApprove: false },
    );
    expect(final.state).toBe('rolled-back');
    expect(final.error).toBe('gate "errors" breached 2 time(s) in a row: read 0.5, max 0.05, at 10%');
    expect(final.events.map((e) => e.message)).toContain('flag stays at 10% until every gate passes: errors does not');
    const flags = calls.filter((c) => c.name === 'setFlag').map((c) => c.input.percent);
    expect(flags).toEqual([10]);
  });

  test('an unreadable gate pauses the rollout at its percentage until resume', async () => {
    const calls: Call[] = [];
    let first = true;
    const stubs = stubActivities(calls, {
      readGates: async () => {
        if (!first) return [{ gate: 'errors', value: 0.01 }];
        first = false;
        return [{ gate: 'errors', value: null, error: 'relation "metrics" does not exist' }];
      },
    });
    const final = await stub.run(gated(), stubs, async (h) => {
      await stub.env.sleep(61_000);
      const paused = await until(h, (s) => s.state === 'paused', 'the pause');
      expect(paused.paused?.reason).toBe('gate "errors" could not be read: relation "metrics" does not exist');
      expect(paused.traffic?.percent).toBe(10);
      expect(paused.traffic?.gates[0]).toMatchObject({ value: null, ok: null });
      await h.executeUpdate(resumeUpdate, { args: [{ by: 'oncall' }] });
      return finalStatus(h);
    });
    expect(final.state).toBe('completed');
    expect(final.traffic?.percent).toBe(100);
  });
});

describe('approvals', () => {
  const waiting = (onApprovalTimeout: 'abort' | 'pause') =>
    fullPlan({
      approvals: ['schema'],
      approvalTimeout: 3_600_000,
      onApprovalTimeout,
      cleanup: undefined,
      traffic: undefined,
    });

  test('an approval that times out rolls back when the plan says abort', async () => {
    const calls: Call[] = [];
    const final = await stub.run(waiting('abort'), stubActivities(calls), (h) => finalStatus(h), {
      autoApprove: false,
    });
    expect(final.state).toBe('rolled-back');
    expect(final.error).toBe('approval of schema timed out after 1h; nothing was changed');
    expect(calls.some((c) => c.name === 'applySchemaStep')).toBe(false);
  });

  test('an approval that times out pauses when the plan says pause, and is asked for again after resume', async () => {
    const calls: Call[] = [];
    const final = await stub.run(
      waiting('pause'),
      stubActivities(calls),
      async (h) => {
        await until(h, (s) => s.state === 'waiting-approval', 'the approval wait');
        await stub.env.sleep(3_601_000);
        const paused = await until(h, (s) => s.state === 'paused', 'the pause');
        expect(paused.paused?.reason).toBe('approval of schema timed out after 1h');
        await h.executeUpdate(resumeUpdate, { args: [{}] });
        await until(h, (s) => s.state === 'waiting-approval', 'the approval asked again');
        await h.executeUpdate(approveUpdate, { args: [{ by: 'alice' }] });
        return finalStatus(h);
      },
      { autoApprove: false },
    );
    expect(final.state).toBe('completed');
    expect(final.approvals).toEqual([expect.objectContaining({ gate: 'schema', by: 'alice' })]);
  });

  test('an approval given after its timeout paused the migration is taken, and lifts that pause', async () => {
    const calls: Call[] = [];
    const final = await stub.run(
      waiting('pause'),
      stubActivities(calls),
      async (h) => {
        await until(h, (s) => s.state === 'waiting-approval', 'the approval wait');
        await stub.env.sleep(3_601_000);
        const paused = await until(h, (s) => s.state === 'paused', 'the pause');
        expect(paused.pendingApproval).toBeNull();
        // A bare string in the Web UI's signal input is not an approval.
        await h.signal(approveSignal, 'yes' as never);
        const ignored = /^approve signal ignored: its input must be a JSON object or empty, got "yes"$/;
        await until(h, (s) => s.events.some((e) => ignored.test(e.message)), 'the signal ignored');
        expect((await h.query(statusQuery)).state).toBe('paused');
        const ack = await h.executeUpdate(approveUpdate, { args: [{ by: 'bob', gate: 'schema' }] });
        expect(ack).toMatchObject({ accepted: true, state: 'running', message: 'approved schema' });
        return finalStatus(h);
      },
      { autoApprove: false },
    );
    expect(final.state).toBe('completed');
    expect(final.approvals).toEqual([expect.objectContaining({ gate: 'schema', by: 'bob' })]);
    expect(final.events.map((e) => e.message)).toContain(
      'schema approved by bob after its approval timed out: resuming',
    );
    expect(calls.some((c) => c.name === 'applySchemaStep')).toBe(true);
  });
});

test('every operator message the workflow must refuse is refused, changes nothing, and leaves no trace in history', async () => {
  const calls: Call[] = [];
  const plan = fullPlan({ approvals: ['schema'], backup: { enabled: false, dir: '/tmp' }, cleanup: undefined });
  // The second schema step is held until the abort is sent: the pause and the abort then land in the schema phase
  // whatever the machine's load, never while the copy writes its settings. (On the time-skipping test server, an update
  // sent while that local activity is in flight can stay unanswered; the real server answers it, see rollback.test.ts.)
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  const stubs = stubActivities(calls, {
    applySchemaStep: async (i: never) => {
      const id = (i as { step: { id: string } }).step.id;
      if (id === '002') await held;
      return { step: id, applied: true };
    },
  });
  const { refusals, history } = await stub.run(
    plan,
    stubs,
    async (h) => {
      await until(h, (s) => s.pendingApproval?.gate === 'schema', 'the schema approval');
      const refusals = {
        wrongGate: await rejection(h.executeUpdate(approveUpdate, { args: [{ gate: 'cleanup' }] })),
        resumeUnpaused: await rejection(h.executeUpdate(resumeUpdate, { args: [{}] })),
        throttleNothing: await rejection(h.executeUpdate(throttleUpdate, { args: [{}] })),
        batchTooSmall: await rejection(h.executeUpdate(throttleUpdate, { args: [{ batchSize: 0 }] })),
        batchNotInteger: await rejection(h.executeUpdate(throttleUpdate, { args: [{ batchSize: 1.5 }] })),
        delayTooLong: await rejection(h.executeUpdate(throttleUpdate, { args: [{ delayMs: 600_001 }] })),
        budgetTooTight: await rejection(h.executeUpdate(throttleUpdate, { args: [{ maxLatencyIncrease: 0 }] })),
        promoteNoSoak: await rejection(h.executeUpdate(promoteUpdate, { args: [{}] })),
        restoreWithoutBackup: await rejection(h.executeUpdate(abortUpdate, { args: [{ restoreBackup: true }] })),
        approveTwice: '',
        pauseTwice: '',
      };
      await h.executeUpdate(approveUpdate, { args: [{ by: 'alice' }] });
      refusals.approveTwice = await rejection(h.executeUpdate(approveUpdate, { args: [{}] }));
      for (
        const deadline = Date.now() + 30_000;
        !calls.some((c) => c.name === 'applySchemaStep' && (c.input.step as { id: string }).id === '002');
      ) {
        if (Date.now() > deadline) throw new Error('timed out waiting for step 002 to start');
        await new Promise((r) => setTimeout(r, 25));
      }
      await h.executeUpdate(pauseUpdate, { args: [{ reason: 'look' }] });
      refusals.pauseTwice = await rejection(h.executeUpdate(pauseUpdate, { args: [{}] }));
      const s = await h.query(statusQuery);
      expect(s.throttle).toEqual({});
      expect(s.approvals).toHaveLength(1);
      await h.executeUpdate(abortUpdate, { args: [{ reason: 'done' }] });
      release();
      await finalStatus(h);
      return { refusals, history: await h.fetchHistory() };
    },
    { autoApprove: false },
  );
  expect(refusals).toEqual({
    wrongGate: 'cleanup is not waiting for approval (schema is)',
    resumeUnpaused: 'the migration is not paused',
    throttleNothing: 'give a batch size, a delay or a latency budget',
    batchTooSmall: 'batch size must be an integer from 1 to 1000000',
    batchNotInteger: 'batch size must be an integer from 1 to 1000000',
    delayTooLong: 'delay must be an integer from 0 to 600000 ms',
    budgetTooTight: "latency budget 0 must be between 0.01 and 10 (1% and 1000%), or 'unlimited'",
    promoteNoSoak: 'no soak or delay is in progress',
    restoreWithoutBackup: 'this plan makes no backup to restore',
    approveTwice: 'nothing is waiting for approval',
    pauseTwice: 'the migration is already paused',
  });
  // Only the three accepted updates (approve, pause, abort) are in the history.
  const accepted = history.events!.filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes);
  expect(accepted.map((e) => e.workflowExecutionUpdateAcceptedEventAttributes!.acceptedRequest!.input!.name)).toEqual([
    'approve',
    'pause',
    'abort',
  ]);
});

test('a blue-green applier that fails while it is being stopped (its connection lost, its worker gone) is not reported as stopped on its own', async () => {
  const calls: Call[] = [];
  const base = noSoaks();
  const plan = {
    ...base,
    target: { urlEnv: 'GREEN', capture: 'trigger' as const, maxLag: 10_000 },
    cleanup: { ...base.cleanup!, archive: [], dropAfter: undefined },
  };
  const stubs = stubActivities(calls, {
    // Runs until it is cancelled, then fails for another reason, as an attempt whose session was killed meanwhile.
    replicate: async () => {
      const ctx = Context.current();
      await new Promise<void>((resolve) => {
        const beat = setInterval(() => ctx.heartbeat(), 200);
        ctx.cancellationSignal.addEventListener('abort', () => {
          clearInterval(beat);
          resolve();
        });
      });
      throw ApplicationFailure.nonRetryable('Connection terminated unexpectedly');
    },
  });
  const final = await stub.run(plan, stubs, (h) => finalStatus(h));
  expect({ state: final.state, error: final.error ?? null }).toEqual({ state: 'completed', error: null });
  expect(final.paused ?? null).toBeNull();
  expect(final.events.map((e) => e.message).filter((m) => /applier .* stopped/.test(m))).toEqual([]);
  expect(calls.filter((c) => c.name === 'replicate').length).toBeGreaterThan(0);
});
