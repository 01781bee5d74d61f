// tidemark's own Prometheus metrics, kept by the worker process: copy progress from the copy activities' heartbeats
// (activities run here), and the migration's state, phases, flag, gates and compensations from the snapshots the
// workflow sends through its `metrics` sink (migration/telemetry.ts). Everything is labelled by migration.
import type { Context } from '@temporalio/activity';
import type { ActivityInboundCallsInterceptor, ActivityInterceptorsFactory } from '@temporalio/worker';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { revertWorkflowIdFor } from '../migration/messages';
import type { StatusSnapshot } from '../migration/telemetry';
import type { CopyHeartbeat, SettleBeat } from '../phases/copy/activities';

const STATES = ['running', 'paused', 'waiting-approval', 'rolling-back', 'rolled-back', 'completed', 'failed'];

/** A throttle reason as a label: its kind, not its text (which carries numbers and would make a series per value). */
export const THROTTLE_REASONS = [
  'none',
  'paused',
  'operator-delay',
  'lock-conflict',
  'lock-waits',
  'server-slow',
  'sharing',
];
export function throttleKind(reason: string | null): string {
  if (!reason) return 'none';
  if (reason.startsWith('paused')) return 'paused';
  if (reason.startsWith('operator delay')) return 'operator-delay';
  if (reason.startsWith('lock conflict')) return 'lock-conflict';
  if (/waiting on locks/.test(reason)) return 'lock-waits';
  if (reason.startsWith('server slow')) return 'server-slow';
  if (reason.startsWith('sharing')) return 'sharing';
  return 'other';
}

/** The migration an activity works for, from its input's run. */
const migrationOf = (arg: unknown): string => (arg as { run?: { migration?: string } })?.run?.migration ?? 'unknown';

interface Seen {
  state?: string;
  phaseEnds: Set<string>;
  compensations: Set<string>;
  gateReadAt: Map<string, string>;
}

export class WorkerMetrics {
  readonly registry = new Registry();
  private readonly seen = new Map<string, Seen>();
  /** Per migration, the copy jobs whose batch size and duty are shown: set back to 0 once its copy phase is over. */
  private readonly copying = new Map<string, Set<string>>();
  /** Per plan, the flag its migration moved: a revert, whose status has no traffic, puts that gauge back to 0. */
  private readonly flags = new Map<string, string>();

  private readonly rows = new Counter({
    name: 'tidemark_copy_rows_total',
    help: 'Rows copied into the target, by migration and copy job',
    labelNames: ['migration', 'job'],
    registers: [this.registry],
  });
  private readonly batchSeconds = new Histogram({
    name: 'tidemark_copy_batch_seconds',
    help: "Time per copy batch, from one batch's commit to the next (includes throttle and operator delays)",
    labelNames: ['migration', 'job'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  private readonly batchSize = new Gauge({
    name: 'tidemark_copy_batch_size',
    help: 'Rows per batch the copy uses now',
    labelNames: ['migration', 'job'],
    registers: [this.registry],
  });
  private readonly throttle = new Gauge({
    name: 'tidemark_copy_throttle',
    help: 'Why the copy is slowed down: 1 for the current reason (none when it is not), 0 for the others',
    labelNames: ['migration', 'job', 'reason'],
    registers: [this.registry],
  });
  private readonly duty = new Gauge({
    name: 'tidemark_copy_duty',
    help: 'Share of the time the copy works (1 unless it shares the server; then what its latency budget allows)',
    labelNames: ['migration', 'job'],
    registers: [this.registry],
  });
  private readonly latencyIncrease = new Gauge({
    name: 'tidemark_copy_latency_increase',
    help: "While the copy shares the server: the time its probe's p90 gains while copying, as a share of the quiet p90 (at least 2 ms): 0.1 = 10 % slower",
    labelNames: ['migration', 'job'],
    registers: [this.registry],
  });
  private readonly settleWaiting = new Gauge({
    name: 'tidemark_copy_settle_waiting_transactions',
    help: 'Transactions the settle pass waits for before it starts (open since before the last batch); 0 otherwise',
    labelNames: ['migration', 'job'],
    registers: [this.registry],
  });
  private readonly state = new Gauge({
    name: 'tidemark_migration_state',
    help: 'The state of each migration: 1 for the current one, 0 for the others',
    labelNames: ['migration', 'state'],
    registers: [this.registry],
  });
  private readonly phase = new Gauge({
    name: 'tidemark_migration_phase',
    help: 'The phase each migration is in (or ended in): 1 for the current one, 0 for the others',
    labelNames: ['migration', 'phase'],
    registers: [this.registry],
  });
  private readonly phaseSeconds = new Gauge({
    name: 'tidemark_phase_duration_seconds',
    help: 'How long each finished phase took',
    labelNames: ['migration', 'phase'],
    registers: [this.registry],
  });
  private readonly phases = new Counter({
    name: 'tidemark_phases_total',
    help: 'Phases that ended, by outcome (completed, failed, cancelled)',
    labelNames: ['migration', 'phase', 'outcome'],
    registers: [this.registry],
  });
  private readonly flag = new Gauge({
    name: 'tidemark_flag_percent',
    help: 'Rollout percentage of the migration flag',
    labelNames: ['migration', 'flag'],
    registers: [this.registry],
  });
  private readonly gate = new Gauge({
    name: 'tidemark_gate_value',
    help: 'Last reading of each gate (absent while unreadable)',
    labelNames: ['migration', 'gate'],
    registers: [this.registry],
  });
  private readonly gateReadings = new Counter({
    name: 'tidemark_gate_readings_total',
    help: 'Gate readings by result (ok, breach, unreadable)',
    labelNames: ['migration', 'gate', 'result'],
    registers: [this.registry],
  });
  private readonly compensations = new Counter({
    name: 'tidemark_compensations_total',
    help: 'Compensations run in rollbacks, by phase and outcome (done, failed, not-run)',
    labelNames: ['migration', 'phase', 'outcome'],
    registers: [this.registry],
  });
  private readonly rollbacks = new Counter({
    name: 'tidemark_rollbacks_total',
    help: 'Rollbacks that started',
    labelNames: ['migration'],
    registers: [this.registry],
  });

  /** The `metrics` sink the workflow calls (not on replay, so nothing is counted twice by one worker). */
  sinks() {
    return { metrics: { observe: { fn: (_info: unknown, s: StatusSnapshot) => this.observe(s) } } };
  }

  /** Activity interceptor: watches the copy activities' heartbeats (within one database and across two). */
  interceptor(): ActivityInterceptorsFactory {
    return (ctx) => {
      if (ctx.info.activityType === 'settleCopy') return { inbound: this.settleInterceptor(ctx) };
      if (ctx.info.activityType !== 'copyRange' && ctx.info.activityType !== 'copyRangeAcross') return {};
      return {
        inbound: {
          execute: async (input, next) => {
            const migration = migrationOf(input.args[0]);
            const prev = ctx.info.heartbeatDetails as CopyHeartbeat | undefined;
            const last = { rows: prev?.rowsCopied ?? 0, batches: prev?.batches ?? 0, at: Date.now() };
            let job: string | undefined;
            const heartbeat = ctx.heartbeat.bind(ctx);
            // Every heartbeat of this attempt passes here on its way to the server (activity-kit calls
            // Context.current().heartbeat, and this context is the current one).
            (ctx as { heartbeat: (details?: unknown) => void }).heartbeat = (details?: unknown) => {
              const beat = details as CopyHeartbeat | undefined;
              if (beat && typeof beat.rowsCopied === 'number') {
                job = beat.job;
                this.copyBeat(migration, beat, last);
              }
              heartbeat(details);
            };
            try {
              return await next(input);
            } finally {
              if (job) this.setThrottle(migration, job, null);
            }
          },
        },
      };
    };
  }

  /** The settle pass's heartbeats: how many transactions it waits for, back to 0 once it is past them or over. */
  private settleInterceptor(ctx: Context): ActivityInboundCallsInterceptor {
    return {
      execute: async (input, next) => {
        const migration = migrationOf(input.args[0]);
        let job: string | undefined;
        const heartbeat = ctx.heartbeat.bind(ctx);
        (ctx as { heartbeat: (details?: unknown) => void }).heartbeat = (details?: unknown) => {
          const beat = details as Partial<SettleBeat> | undefined;
          if (beat?.job) {
            job = beat.job;
            this.settleWaiting.set({ migration, job }, beat.waitingTransactions ?? 0);
          }
          heartbeat(details);
        };
        try {
          return await next(input);
        } finally {
          if (job) this.settleWaiting.set({ migration, job }, 0);
        }
      },
    };
  }

  private copyBeat(migration: string, b: CopyHeartbeat, last: { rows: number; batches: number; at: number }): void {
    const labels = { migration, job: b.job };
    if (b.rowsCopied > last.rows) this.rows.inc(labels, b.rowsCopied - last.rows);
    const now = Date.now();
    if (b.batches > last.batches) {
      const per = (now - last.at) / 1000 / (b.batches - last.batches);
      for (let i = last.batches; i < b.batches; i++) this.batchSeconds.observe(labels, per);
      last.at = now;
    }
    last.rows = Math.max(last.rows, b.rowsCopied);
    last.batches = Math.max(last.batches, b.batches);
    this.batchSize.set(labels, b.batchSize);
    this.duty.set(labels, b.duty ?? 1);
    this.copying.set(migration, (this.copying.get(migration) ?? new Set()).add(b.job));
    if (b.latencyIncrease !== undefined) this.latencyIncrease.set(labels, b.latencyIncrease);
    this.setThrottle(migration, b.job, b.throttleReason);
  }

  /** The copy is over: no batch, no share of the time (the last ones, kept, read as a copy still at work). */
  private copyOver(migration: string): void {
    for (const job of this.copying.get(migration) ?? []) {
      const labels = { migration, job };
      this.batchSize.set(labels, 0);
      this.duty.set(labels, 0);
      this.latencyIncrease.set(labels, 0);
      this.setThrottle(migration, job, null);
    }
    this.copying.delete(migration);
  }

  private setThrottle(migration: string, job: string, reason: string | null): void {
    const kind = throttleKind(reason);
    for (const r of new Set([...THROTTLE_REASONS, kind]))
      this.throttle.set({ migration, job, reason: r }, r === kind ? 1 : 0);
  }

  observe(s: StatusSnapshot): void {
    // A revert runs under its plan's name: its series are its own (revert-<plan>, a name no plan may take), or its
    // phases and state would overwrite the migration's.
    const migration = s.workflowId === revertWorkflowIdFor(s.migration) ? `revert-${s.migration}` : s.migration;
    let seen = this.seen.get(s.workflowId);
    if (!seen) {
      seen = { phaseEnds: new Set(), compensations: new Set(), gateReadAt: new Map() };
      this.seen.set(s.workflowId, seen);
      // A long-lived worker forgets the oldest migrations' bookkeeping (their gauges stay).
      if (this.seen.size > 1000) this.seen.delete(this.seen.keys().next().value!);
    }
    for (const st of STATES) this.state.set({ migration, state: st }, st === s.state ? 1 : 0);
    for (const p of s.phases) this.phase.set({ migration, phase: p.name }, p.name === s.phase ? 1 : 0);
    if (s.state === 'rolling-back' && seen.state !== 'rolling-back') this.rollbacks.inc({ migration });
    seen.state = s.state;

    for (const p of s.phases) {
      if (!p.endedAt || !['completed', 'failed', 'cancelled'].includes(p.status)) continue;
      const key = `${p.name}@${p.endedAt}`;
      if (seen.phaseEnds.has(key)) continue;
      seen.phaseEnds.add(key);
      this.phases.inc({ migration, phase: p.name, outcome: p.status });
      if (p.name === 'copy') this.copyOver(migration);
      if (p.startedAt) {
        const secs = (Date.parse(p.endedAt) - Date.parse(p.startedAt)) / 1000;
        this.phaseSeconds.set({ migration, phase: p.name }, Math.max(0, secs));
      }
    }
    if (s.traffic) {
      this.flags.set(s.migration, s.traffic.flag);
      this.flag.set({ migration, flag: s.traffic.flag }, s.traffic.percent);
      for (const g of s.traffic.gates) {
        // Status keeps each gate's last reading: a new `at` is a new reading.
        if (seen.gateReadAt.get(g.gate) === g.at) continue;
        seen.gateReadAt.set(g.gate, g.at);
        const result = g.ok === null ? 'unreadable' : g.ok ? 'ok' : 'breach';
        this.gateReadings.inc({ migration, gate: g.gate, result });
        if (g.value === null) this.gate.remove({ migration, gate: g.gate });
        else this.gate.set({ migration, gate: g.gate }, g.value);
      }
    }
    for (const c of s.compensations) {
      if (!['done', 'failed', 'not-run'].includes(c.status)) continue;
      const key = `${c.id}:${c.status}`;
      if (seen.compensations.has(key)) continue;
      seen.compensations.add(key);
      this.compensations.inc({ migration, phase: c.phase, outcome: c.status });
      // A revert's traffic undo set the plan's flag to 0: the migration's gauge says so too.
      const flag = this.flags.get(s.migration);
      if (migration !== s.migration && c.phase === 'traffic' && c.status === 'done' && flag) {
        this.flag.set({ migration: s.migration, flag }, 0);
      }
    }
  }
}
