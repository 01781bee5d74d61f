// `start --watch` / `status --watch`: every event is printed once, also after the status's bounded event log (the
// newest 100) starts dropping old ones, and an unreadable status is retried instead of ending the watch.
import { PassThrough } from 'node:stream';
import type { LiveProgress, TidemarkClient } from '../../src/client';
import { follow } from '../../src/cli/context';
import { renderStatus } from '../../src/cli/format';
import { initialStatus, type MigrationStatus } from '../../src/migration/messages';

type Status = MigrationStatus & { live: LiveProgress[] };

function statusWith(events: number, state: MigrationStatus['state'] = 'running'): Status {
  const all = Array.from({ length: events }, (_, i) => ({
    seq: i + 1,
    at: '2026-01-01T00:00:00.000Z',
    message: `event ${i + 1}`,
  }));
  return {
    ...initialStatus('p', 'tidemark-p', '2026-01-01T00:00:00.000Z', []),
    state,
    phase: 'traffic',
    events: all.slice(-100),
    live: [],
  };
}

/** Stands in for the Temporal client: replays the statuses a real waitForEnd would have polled. */
function replaying(polls: (Status | Error)[]): TidemarkClient {
  return {
    address: 'localhost:7233',
    namespace: 'default',
    async waitForEnd(_id: string, onStatus: (s: Status) => void, _poll: number, o: { onRetry?: (e: Error) => void }) {
      let last: Status | undefined;
      for (const p of polls) {
        if (p instanceof Error) o.onRetry?.(p);
        else onStatus((last = p));
      }
      return last!;
    },
  } as unknown as TidemarkClient;
}

test('every event is printed exactly once, in order, past the 100 the status keeps', async () => {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => (text += d));
  const final = await follow(
    replaying([statusWith(3), statusWith(90), statusWith(160), statusWith(161), statusWith(250, 'completed')]),
    'p',
    { out },
  );
  expect(final.state).toBe('completed');
  const printed = [...text.matchAll(/ {2}event (\d+)\n/g)].map((m) => Number(m[1]));
  expect(printed).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
});

test('an unreadable status is retried, said once on stderr, and the watch goes on', async () => {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d) => (text += d));
  const errors: string[] = [];
  const spy = jest.spyOn(process.stderr, 'write').mockImplementation((s) => (errors.push(String(s)), true));
  try {
    const final = await follow(
      replaying([statusWith(2), new Error('no worker'), new Error('no worker'), statusWith(4, 'rolled-back')]),
      'p',
      { out },
    );
    expect(final.state).toBe('rolled-back');
  } finally {
    spy.mockRestore();
  }
  expect(errors).toEqual(['status not readable, retrying: no worker\n']);
  expect([...text.matchAll(/ {2}event (\d+)\n/g)].map((m) => Number(m[1]))).toEqual([1, 2, 3, 4]);
});

test('a paused soak says that its clock runs on and the next stage waits', () => {
  const s: Status = {
    ...statusWith(1),
    phase: 'traffic',
    paused: { reason: 'look', at: '2026-01-01T00:00:00.000Z' },
    phases: [{ name: 'traffic', status: 'running', startedAt: '2026-01-01T00:00:00.000Z' }],
    traffic: {
      flag: 'f',
      percent: 10,
      stageIndex: 0,
      stages: [{ percent: 10, soakMs: 3_600_000, approval: false }],
      soakEndsAt: '2026-01-01T01:00:00.000Z',
      gates: [],
    },
  } as Status;
  expect(renderStatus(s)).toContain(
    'flag f at 10%, soaking until 2026-01-01 01:00:00 UTC (paused: the next stage waits for resume)',
  );
  // Paused later (traffic done, cleanup waiting): the traffic line does not speak of a next stage.
  const later = {
    ...s,
    phase: 'cleanup',
    phases: [
      { name: 'traffic', status: 'completed', startedAt: '2026-01-01T00:00:00.000Z' },
      { name: 'cleanup', status: 'running', startedAt: '2026-01-01T02:00:00.000Z' },
    ],
    traffic: { ...s.traffic!, percent: 100, soakEndsAt: null },
  } as Status;
  expect(renderStatus(later)).not.toContain('next stage');
});

test('a step being retried says so, with the reason its last attempt failed', () => {
  const s: Status = { ...statusWith(1), phase: 'schema' } as Status;
  const live = [
    {
      activity: 'applySchemaStep',
      attempt: 5,
      details: null,
      lastFailure: 'applying step 040: canceling statement due to lock timeout (code 55P03)',
    },
  ];
  expect(renderStatus(s, live)).toContain(
    'retrying applySchemaStep (attempt 5): applying step 040: canceling statement due to lock timeout (code 55P03)',
  );
  // A first attempt at work is not a retry.
  expect(renderStatus(s, [{ activity: 'copyRange', attempt: 1, details: null }])).not.toContain('retrying');
});
