// Traffic, workflow side: the flag moves through the stages, each soaked on a durable timer while gates are read;
// a gate breached failureLimit times in a row (across stages) rolls back, an unreadable one pauses the rollout at the
// next stage while every gate is still read. The undo — flag back to 0 — is registered before the first change.
import { condition, patched, workflowInfo } from '@temporalio/workflow';
import { RollbackRequested } from '../../migration/control';
import { LIMITS } from '../../migration/limits';
import type { GateReading, SoakCarry } from '../../migration/messages';
import { flagChanges, gateReads } from '../../migration/profiles';
import type { Gate, Stage } from '../../plan/types';
import { flagUrlEnv, isBlueGreen } from '../../plan/databases';
import { capturedJobs, startCapture, undoCapture, waitForLag, type CaptureUndo } from '../copy/across-workflow';
import type { Phase, PhaseContext } from '../phase';
import { readable, utc } from '../../migration/readable';

export type TrafficUndo = { kind: 'resetFlag'; flag: string } | CaptureUndo;

/**
 * Patch: a gate's breaches in a row are counted across stages (a stage whose soak reads a gate fewer than failureLimit
 * times used to start it at 0 again, so a gate breaching at every reading could see the rollout through), a reading
 * that says nothing leaves the count as it is instead of clearing it, and an unreadable gate's pause no longer stops
 * the soak from reading the other gates: it holds the rollout at the next stage instead.
 */
const GATES_SPAN_STAGES = 'gate-breaches-span-stages';

/**
 * Patch: before the flag moves up from a stage, every gate is read again and must pass — the last reading may be old
 * (the soak ended, then an approval or a pause waited for hours) and no gate is read while the rollout waits.
 */
const GATES_BEFORE_MOVE = 'gates-read-before-each-move';

export const trafficPhase: Phase<TrafficUndo> = {
  name: 'traffic',
  approvalAtStart: true,
  skip: (plan) => !plan.traffic,

  async run(ctx) {
    const { plan, run, board, control } = ctx;
    const t = plan.traffic!;
    const carried = ctx.carried?.soak;
    let undoRegistered = !!carried;
    if (!carried) {
      board.status.traffic = {
        flag: t.flag,
        percent: 0,
        stageIndex: null,
        stages: t.stages.map((s) => ({ percent: s.percent, soakMs: s.soak, approval: s.approval })),
        soakEndsAt: null,
        gates: [],
      };
    }
    const traffic = board.status.traffic!;
    // Breaches in a row, per gate, across the stages (GATES_SPAN_STAGES); each soak its own count before.
    const spanning = patched(GATES_SPAN_STAGES);
    const breaches = spanning ? new Map<string, number>(Object.entries(carried?.breaches ?? {})) : undefined;
    for (const [i, stage] of t.stages.entries()) {
      if (carried && i < carried.stageIndex) continue;
      if (carried && i === carried.stageIndex) {
        // The flag is already at this stage's percentage: pick the soak up where the previous run left it.
        await soak(ctx, i, stage, t.gates, carried, breaches);
        continue;
      }
      await control.safePoint();
      if (stage.approval) await control.requireApproval(`traffic:${stage.percent}%`);
      if (isBlueGreen(plan)) {
        // Before the target takes its first write, its writes are captured and flow back to the source, so an abort
        // at any stage finds them there; and traffic moves only onto a target that has (nearly) caught up.
        if (!undoRegistered) for (const job of capturedJobs(ctx)) await startCapture(ctx, job, 'reverse');
        await waitForLag(ctx, `flag ${t.flag} → ${stage.percent}%`);
      }
      if (traffic.percent > 0 && t.gates.length && patched(GATES_BEFORE_MOVE)) {
        await passingGates(ctx, t.gates, breaches ?? new Map(), stage.percent);
      }
      const set = () =>
        flagChanges.setFlag.executeWithOptions({ summary: `flag ${t.flag} → ${stage.percent}%` }, [
          { urlEnv: flagUrlEnv(plan), run, flag: t.flag, percent: stage.percent, by: run.workflowId },
        ]);
      // Registered before the first change: whatever happens next, a rollback puts traffic back on the old path.
      if (undoRegistered) await set();
      else await ctx.changeWithUndo(`set flag ${t.flag} to 0%`, { kind: 'resetFlag', flag: t.flag }, set);
      undoRegistered = true;
      traffic.percent = stage.percent;
      traffic.stageIndex = i;
      board.event(`flag ${t.flag} at ${stage.percent}%`);
      board.publish();
      await soak(ctx, i, stage, t.gates, undefined, breaches);
    }
    return { flag: t.flag, percent: traffic.percent };
  },

  async undo(ctx, action) {
    if (action.kind === 'undoCapture') return undoCapture(ctx, action);
    const { plan, board } = ctx;
    const { flag } = action;
    await flagChanges.resetFlag.executeWithOptions({ summary: `undo: flag ${flag} → 0%` }, [
      { urlEnv: flagUrlEnv(plan), flag, by: `${board.status.workflowId} (rollback)` },
    ]);
    if (board.status.traffic) board.status.traffic.percent = 0;
    board.event(`flag ${flag} back to 0%`);
    board.publish();
  },
};

/**
 * Holds a stage for its soak on a durable timer, reading gates on their intervals; promote ends it early. A long
 * gated soak continues as new when the history grows, carrying the soak's end, breaches and schedule along.
 */
async function soak(
  ctx: PhaseContext,
  stageIndex: number,
  stage: Stage,
  gates: Gate[],
  carried?: SoakCarry,
  spanning?: Map<string, number>,
) {
  const { plan, board, control } = ctx;
  const traffic = board.status.traffic!;
  const end = carried?.endsAt ?? Date.now() + stage.soak;
  traffic.soakEndsAt = new Date(end).toISOString();
  board.publish();
  const breaches = spanning ?? new Map<string, number>(Object.entries(carried?.breaches ?? {}));
  const due = new Map(
    gates.map((g) => [g.name, carried?.due[g.name] ?? Date.now() + Math.min(g.interval, stage.soak)]),
  );
  try {
    await control.promotableWindow(async () => {
      while (Date.now() < end && !control.promoted) {
        const info = workflowInfo();
        if (info.continueAsNewSuggested || info.historyLength >= LIMITS.historyEvents) {
          await ctx.continueAsNew({
            stageIndex,
            endsAt: end,
            breaches: Object.fromEntries(breaches),
            due: Object.fromEntries(due),
          });
        }
        const next = Math.min(end, ...due.values());
        const summary =
          next < end
            ? `soak at ${stage.percent}%: next gate reading (soak ends ${utc(end)})`
            : `soak at ${stage.percent}% until ${utc(end)}`;
        if (await control.untilPromoted(next - Date.now(), summary)) break;
        const toRead = gates.filter((g) => due.get(g.name)! <= Date.now());
        if (!toRead.length) continue;
        const values = await gateReads.readGates.executeWithOptions(
          { summary: `read gate${toRead.length > 1 ? 's' : ''} ${toRead.map((g) => g.name).join(', ')}` },
          [{ urlEnv: plan.database.urlEnv, gates: toRead }],
        );
        for (const g of toRead) {
          due.set(g.name, Date.now() + g.interval);
          const v = values.find((x) => x.gate === g.name)!;
          await judgeGate(ctx, g, v.value, v.error, breaches, !spanning);
        }
      }
    });
  } finally {
    traffic.soakEndsAt = null;
  }
  if (control.promoted) board.event(`soak at ${stage.percent}% ended early by promote`);
}

/**
 * Reads every gate until all of them pass, before the flag moves up to `next`%: a breach counts as in a soak (and rolls
 * back at failureLimit in a row), the next reading a gate's interval later; an unreadable gate pauses the rollout
 * here until resume. An operator's pause meanwhile holds it too.
 */
async function passingGates(ctx: PhaseContext, gates: Gate[], breaches: Map<string, number>, next: number) {
  const { plan, board, control } = ctx;
  for (let said = false; ; said = true) {
    await control.safePoint();
    const values = await gateReads.readGates.executeWithOptions(
      { summary: `read every gate before the flag moves to ${next}%` },
      [{ urlEnv: plan.database.urlEnv, gates }],
    );
    for (const g of gates) {
      const v = values.find((x) => x.gate === g.name)!;
      await judgeGate(ctx, g, v.value, v.error, breaches);
    }
    const failing = board.status.traffic!.gates.filter((r) => r.ok !== true && gates.some((g) => g.name === r.gate));
    if (!failing.length) return;
    if (!said) {
      board.event(
        `flag stays at ${board.status.traffic!.percent}% until every gate passes: ${failing.map((r) => r.gate).join(', ')} ` +
          `${failing.length > 1 ? 'do' : 'does'} not`,
      );
      board.publish();
    }
    // Unreadable: judgeGate paused the rollout, and the safe point waits for resume. A breach: read again later.
    if (failing.some((r) => r.ok === false)) {
      const ms = Math.min(...gates.map((g) => g.interval));
      await condition(() => false, ms, { summary: `read the gates again before the flag moves to ${next}%` });
    }
  }
}

/**
 * Counts a breach, rolls back at failureLimit in a row, and pauses on a reading that says nothing: the rollout holds at
 * the next stage while the soak goes on reading every gate (`holdHere`, before GATES_SPAN_STAGES: it held right here,
 * and no gate was read until resume).
 */
export async function judgeGate(
  { board, control }: PhaseContext,
  g: Gate,
  value: number | null,
  error: string | undefined,
  breaches: Map<string, number>,
  holdHere = false,
): Promise<void> {
  const traffic = board.status.traffic!;
  const ok = value === null ? null : (g.max === undefined || value <= g.max) && (g.min === undefined || value >= g.min);
  const before = breaches.get(g.name) ?? 0;
  // An unreadable reading sits between two breaches without breaking the run of them.
  const count = ok === false ? before + 1 : ok === null && !holdHere ? before : 0;
  breaches.set(g.name, count);
  const reading: GateReading = { gate: g.name, value, ok, error, at: board.now(), consecutiveBreaches: count };
  traffic.gates = [...traffic.gates.filter((r) => r.gate !== g.name), reading];
  if (ok === false) {
    const bound = g.max !== undefined && value! > g.max ? `max ${g.max}` : `min ${g.min}`;
    board.announce(
      'gate-breach',
      `gate "${g.name}" read ${readable(value!)} (${bound}), breach ${count}/${g.failureLimit}`,
    );
    board.publish();
    if (count >= g.failureLimit) {
      throw new RollbackRequested(
        `gate "${g.name}" breached ${count} time(s) in a row: read ${readable(value!)}, ${bound}, at ${traffic.percent}%`,
      );
    }
  } else if (ok === true) {
    board.publish();
  } else if (ok === null) {
    // A gate that cannot be read says nothing either way: hold the rollout and ask a human instead of guessing.
    // Paused already (this gate's earlier reading, another's, an operator): the reading shows in status, no new event.
    if (!holdHere && control.isPaused) return board.publish();
    board.event(`gate "${g.name}" unreadable: ${error}; rollout paused`);
    control.pauseWith({ reason: `gate "${g.name}" could not be read: ${error}`, by: 'tidemark' });
    if (holdHere) await control.safePoint();
    else board.publish();
  }
}
