// `npm run chaos -- [--runs N] [--seed S] [--rows R] [--bound-seconds B]`: N randomized schedules, seeds S, S+1, …;
// prints each run, then a summary (runs, outcomes, faults injected by kind, invariant violations with the command
// that replays each). Exits 1 on any violation.
import { ChaosLab, replayCommand, summarize, type RunResult } from './runner';
import { scheduleFor } from './schedule';

function args(argv: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) throw new Error(`unexpected argument ${a}`);
    const [k, v] = a.includes('=') ? a.slice(2).split('=', 2) : [a.slice(2), argv[++i]];
    if (v === undefined) throw new Error(`--${k} needs a value`);
    out[k] = v;
  }
  return out;
}

export async function main(argv: string[]): Promise<number> {
  const a = args(argv);
  for (const k of Object.keys(a))
    if (!['runs', 'seed', 'rows', 'bound-seconds'].includes(k)) throw new Error(`unknown option --${k}`);
  const runs = Number(a.runs ?? 50);
  const seed = Number(a.seed ?? Math.floor(Math.random() * 1_000_000));
  const print = (line: string) => process.stdout.write(`${line}\n`);
  print(`chaos: ${runs} run(s) from seed ${seed}`);
  const lab = await ChaosLab.open({
    rows: a.rows ? Number(a.rows) : undefined,
    boundMs: a['bound-seconds'] ? Number(a['bound-seconds']) * 1000 : undefined,
    log: print,
  });
  const results: RunResult[] = [];
  const started = Date.now();
  try {
    for (let i = 0; i < runs; i++) {
      try {
        results.push(await lab.run(seed + i));
      } catch (e) {
        // The run could not be carried out (a service of the lab itself failed): reported like a violation.
        const message = `the run itself failed: ${(e as Error).message.split('\n')[0]}`;
        print(`  ${message} (replay: ${replayCommand(seed + i)})`);
        results.push(crashed(seed + i, message));
      }
    }
  } finally {
    await lab.close();
  }
  const s = summarize(results);
  print('');
  print(`chaos summary (seeds ${seed}..${seed + runs - 1}, ${((Date.now() - started) / 60_000).toFixed(1)} min)`);
  print(`  runs:       ${s.runs}`);
  print(
    `  outcomes:   ${Object.entries(s.outcomes)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')}`,
  );
  print(
    `  faults:     ${Object.entries(s.faults)
      .map(([k, v]) => `${k} ${v}`)
      .join(', ')} (not reached: ${s.skipped})`,
  );
  print(`  violations: ${s.violations.reduce((n, v) => n + v.violations.length, 0)} in ${s.violations.length} run(s)`);
  for (const v of s.violations) {
    print(`  seed ${v.seed} — replay: ${replayCommand(v.seed)}`);
    for (const line of v.violations) print(`    ${line}`);
  }
  return s.violations.length ? 1 : 0;
}

function crashed(seed: number, message: string): RunResult {
  return {
    seed,
    schedule: scheduleFor(seed),
    outcome: 'no end',
    injected: [],
    skipped: [],
    violations: [message],
    error: null,
    writes: {
      oldPath: { inserts: 0, updates: 0, deletes: 0, keyChanges: 0 },
      newPath: { inserts: 0, updates: 0, deletes: 0 },
      failed: {},
      uncertain: 0,
    },
    ms: 0,
  };
}
