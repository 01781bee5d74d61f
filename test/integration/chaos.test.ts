// The chaos suite's short, fixed-seed version (the randomized one is `npm run chaos`): two schedules that together
// inject every kind of fault while a ledger-keeping writer works on the tables, against a private PostgreSQL cluster
// and a Temporal dev server of their own. Each fault fires at a share of the copy committed (a counter in the
// database), so the same seed injects the same faults every time; the run then waits for the migration's terminal
// state and checks every invariant (see test/chaos/runner.ts).
import { ChaosLab, replayCommand } from '../chaos/runner';
import { describeSchedule, scheduleFor } from '../chaos/schedule';

// seed 4: Temporal dev server SIGKILLed at 12 % copied, the worker SIGKILLed at 12 %, PostgreSQL restarted
//         (immediate) at 54 % — the migration completes.
// seed 18: tidemark's sessions terminated at 22 % copied, PostgreSQL restarted (immediate) at 47 %, an abort at 55 %
//          — the migration rolls back.
const SEEDS = [4, 18];

let lab: ChaosLab | undefined;
const log: string[] = [];
beforeAll(async () => {
  lab = await ChaosLab.open({ boundMs: 150_000, log: (line) => log.push(line) });
}, 120_000);
afterAll(() => lab?.close());

test('the fixed seeds cover every kind of fault, each at a point the database counts', () => {
  const kinds = new Set(SEEDS.flatMap((s) => scheduleFor(s).faults.map((f) => f.kind)));
  expect([...kinds].sort()).toEqual(['abort', 'pg-restart', 'pg-terminate', 'temporal-kill', 'worker-kill']);
  for (const s of SEEDS) for (const f of scheduleFor(s).faults) expect(Object.keys(f.at)).toEqual(['copied']);
});

test.each(SEEDS)(
  'chaos seed %i: every fault injected, the migration ends, and no invariant is violated',
  async (seed) => {
    log.length = 0;
    const r = await lab!.run(seed);
    const context = `seed ${seed} (${describeSchedule(r.schedule)}); replay: ${replayCommand(seed)}\n${log.join('\n')}`;
    expect({ context, violations: r.violations }).toEqual({ context, violations: [] });
    expect({ context, injected: r.injected.map((f) => f.kind) }).toEqual({
      context,
      injected: r.schedule.faults.map((f) => f.kind),
    });
    expect(['completed', 'rolled-back']).toContain(r.outcome);
    if (r.schedule.faults.some((f) => f.kind === 'abort')) expect(r.outcome).toBe('rolled-back');
    else expect(r.outcome).toBe('completed');
  },
  180_000,
);
