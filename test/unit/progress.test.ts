// What `--watch` draws: per copy job a bar with rows, %, rows/s and ETA; the flag with the soak's countdown; gate
// readings with readable numbers; what the migration waits for — on a terminal as a block, elsewhere as one line.
import { progressBlock, progressLine } from '../../src/cli/progress';
import { mergeCopyProgress, type LiveProgress } from '../../src/client';
import { initialStatus, type MigrationStatus } from '../../src/migration/messages';

const at = (msFromNow: number) => new Date(Date.now() + msFromNow).toISOString();

function status(over: Partial<MigrationStatus>) {
  return { ...initialStatus('orders-v2', 'tidemark-orders-v2', at(0), []), live: [], ...over };
}

const copying = status({
  phase: 'copy',
  copy: [
    {
      job: 'orders',
      rowsCopied: 250_000,
      estimatedTotal: 1_000_000,
      rowsPerSecond: 50_000,
      etaSeconds: 15,
      batchSize: 5000,
      ranges: 2,
      rangesDone: 0,
      throttleReason: 'operator delay 30ms',
      lockConflicts: 0,
      lastLockConflict: null,
      paused: false,
      done: false,
    },
  ],
});

test('a copy shows a bar, rows, %, rows/s, ETA and the throttle reason', () => {
  expect(progressBlock(copying)).toBe(
    [
      'running · phase copy',
      '  ██████░░░░░░░░░░░░░░░░░░ copy orders: 25% 250,000/~1,000,000 rows, 50,000 rows/s, ETA 15s, throttled: operator delay 30ms',
    ].join('\n'),
  );
  expect(progressLine(copying)).toBe(
    'progress: running, phase copy; copy orders: 25% 250,000/~1,000,000 rows, 50,000 rows/s, ETA 15s, throttled: operator delay 30ms',
  );
});

test('a soak shows the flag, the time left and the gates; a pending approval says how to give it', () => {
  const soaking = status({
    phase: 'traffic',
    traffic: {
      flag: 'use_v2',
      percent: 50,
      stageIndex: 1,
      stages: [],
      soakEndsAt: at(125_000),
      gates: [{ gate: 'error rate', value: 0.0123456, ok: true, at: at(0), consecutiveBreaches: 0 }],
    },
    pendingApproval: { gate: 'traffic:100%', since: at(0), timeoutAt: at(3_600_000) },
  });
  expect(progressLine(soaking)).toMatch(
    /^progress: running, phase traffic; flag use_v2 at 50%, soak 2m\d+s left; gate error rate: 0\.01235 ok; waiting for approval of traffic:100%: tidemark approve orders-v2$/,
  );
});

test('past a short estimate (a table never analysed) a copy says 99 % and an unknown ETA, not 100 % and 0', () => {
  const beyond = status({ phase: 'copy', copy: [{ ...copying.copy[0], estimatedTotal: 3441, rowsCopied: 0 }] });
  mergeCopyProgress(beyond, [
    {
      activity: 'copyRange',
      attempt: 1,
      details: {
        job: 'orders',
        rowsCopied: 3700,
        rowsPerSecond: 250,
        batchSize: 100,
        throttleReason: null,
        paused: false,
      },
    } as LiveProgress,
  ]);
  expect(beyond.copy[0]).toMatchObject({ rowsCopied: 3700, etaSeconds: null });
  expect(progressLine(beyond)).toBe(
    'progress: running, phase copy; copy orders: 99% 3,700/~3,700 rows, 250 rows/s, ETA ?',
  );
});
