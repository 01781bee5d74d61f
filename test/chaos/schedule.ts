// A run's schedule of faults, drawn from its seed: each fault fires at a point of the migration (a phase reached, a
// share of the copy committed, a traffic percentage live), in order. The same seed always gives the same schedule.
import type { PhaseName } from '../../src/plan/types';
import { prng, type Rng } from './prng';

export const FAULT_KINDS = ['worker-kill', 'temporal-kill', 'pg-terminate', 'pg-restart', 'abort'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export type Trigger =
  | { phase: Exclude<PhaseName, 'copy' | 'traffic' | 'cleanup'> }
  | { copied: number } // share of the copy's rows committed, 0..1
  | { traffic: number }; // percentage live

export interface Fault {
  kind: FaultKind;
  at: Trigger;
  /** pg-restart: how the server goes down. */
  mode?: 'fast' | 'immediate';
}

export interface Schedule {
  seed: number;
  faults: Fault[];
  /** Writer's own stream of choices. */
  writerSeed: number;
}

const ORDER: Record<string, number> = { preflight: 0, backup: 1, schema: 2, copy: 3, validate: 4, traffic: 5 };

/** Where a trigger falls in the migration, for ordering. */
export function position(t: Trigger): number {
  if ('phase' in t) return ORDER[t.phase];
  if ('copied' in t) return ORDER.copy + t.copied;
  return ORDER.traffic + t.traffic / 100;
}

export function describeTrigger(t: Trigger): string {
  if ('phase' in t) return `in ${t.phase}`;
  if ('copied' in t) return `at ${Math.round(t.copied * 100)}% copied`;
  return `at traffic ${t.traffic}%`;
}

const pick = <T>(rnd: Rng, xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];

function randomTrigger(rnd: Rng): Trigger {
  const r = rnd();
  if (r < 0.55) return { copied: Math.round((0.05 + rnd() * 0.85) * 100) / 100 };
  if (r < 0.7) return { phase: pick(rnd, ['preflight', 'backup', 'schema', 'validate'] as const) };
  return { traffic: pick(rnd, [50, 100]) };
}

export function scheduleFor(seed: number): Schedule {
  const rnd = prng(seed);
  const faults: Fault[] = [];
  const n = 1 + Math.floor(rnd() * 3);
  for (let i = 0; i < n; i++) {
    const kind = pick(rnd, ['worker-kill', 'temporal-kill', 'pg-terminate', 'pg-restart'] as const);
    if (kind === 'pg-restart')
      faults.push({
        kind,
        at: { copied: Math.round((0.1 + rnd() * 0.7) * 100) / 100 },
        mode: rnd() < 0.5 ? 'fast' : 'immediate',
      });
    else faults.push({ kind, at: randomTrigger(rnd) });
  }
  // An abort, in about four runs of ten, at a random moment of a random phase.
  if (rnd() < 0.4) {
    const r = rnd();
    const at: Trigger =
      r < 0.4
        ? { copied: Math.round(rnd() * 100) / 100 }
        : r < 0.7
          ? { phase: pick(rnd, ['preflight', 'backup', 'schema', 'validate'] as const) }
          : { traffic: pick(rnd, [50, 100]) };
    faults.push({ kind: 'abort', at });
  }
  faults.sort((a, b) => position(a.at) - position(b.at));
  return { seed, faults, writerSeed: Math.floor(rnd() * 2 ** 31) };
}

export function describeSchedule(s: Schedule): string {
  return s.faults.map((f) => `${f.kind}${f.mode ? ` (${f.mode})` : ''} ${describeTrigger(f.at)}`).join(', ');
}
