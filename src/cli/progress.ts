// Live progress for `--watch`: on a terminal a block redrawn in place (log-update) under the event lines — per copy job
// a bar with rows, %, rows/s and ETA, the flag with its soak countdown, gate readings, what the migration waits for;
// elsewhere (a pipe, a CI log) the same facts as one line at a steady interval.
import { formatDuration } from '../plan/durations';
import type { MigrationStatus } from '../migration/messages';
import type { LiveProgress } from '../client';
import { readable } from '../migration/readable';
import { c, stateColor } from './style';

type Status = MigrationStatus & { live: LiveProgress[] };

const n = (x: number) => Math.round(x).toLocaleString('en-US');

export function bar(fraction: number, width = 24): string {
  const f = Math.max(0, Math.min(1, fraction));
  const full = Math.round(f * width);
  return `${'█'.repeat(full)}${'░'.repeat(width - full)}`;
}

/** The time left until `iso`, from now. */
function left(iso: string): string {
  return formatDuration(Math.max(0, Math.ceil((Date.parse(iso) - Date.now()) / 1000) * 1000));
}

/** What is moving right now, one fact per entry; `tty` draws bars and colour. */
export function progressFacts(s: Status, tty: boolean): string[] {
  const facts: string[] = [];
  if (s.phase === 'copy' || s.copy.some((j) => !j.done)) {
    for (const j of s.copy) {
      const pct = j.done ? 1 : j.estimatedTotal > 0 ? Math.min(0.99, j.rowsCopied / j.estimatedTotal) : 0;
      const rate = j.done
        ? 'done'
        : `${n(j.rowsPerSecond)} rows/s, ETA ${j.etaSeconds === null ? '?' : formatDuration(j.etaSeconds * 1000)}`;
      const throttled = j.throttleReason && !j.done ? `, ${c.warn(`throttled: ${j.throttleReason}`)}` : '';
      const waiting = j.waitingFor && !j.done ? `, ${c.warn(j.waitingFor)}` : '';
      const text = `copy ${j.job}: ${Math.round(pct * 100)}% ${n(j.rowsCopied)}/~${n(Math.max(j.estimatedTotal, j.rowsCopied))} rows, ${rate}${throttled}${waiting}`;
      facts.push(tty ? `${c.info(bar(pct))} ${text}` : text);
    }
  }
  if (s.phase === 'validate') {
    const running = s.live.find((l) => l.activity === 'runValidationCheck')?.details as
      { rowsChecked?: number } | undefined;
    const done = s.validation
      ? `${s.validation.checks.filter((x) => x.ok).length}/${s.validation.checks.length} checks passed`
      : 'validating';
    facts.push(`${done}${running?.rowsChecked !== undefined ? `, checksum at ${n(running.rowsChecked)} rows` : ''}`);
  }
  if (s.traffic && (s.phase === 'traffic' || s.traffic.percent > 0)) {
    const t = s.traffic;
    const soak = t.soakEndsAt ? `, soak ${left(t.soakEndsAt)} left` : '';
    facts.push(`flag ${t.flag} at ${c.bold(`${t.percent}%`)}${soak}`);
    for (const g of t.gates) {
      const verdict =
        g.ok === null
          ? c.warn(`unreadable (${g.error})`)
          : g.ok
            ? c.ok('ok')
            : c.bad(`BREACH ${g.consecutiveBreaches}`);
      facts.push(`gate ${g.gate}: ${g.value === null ? '—' : readable(g.value)} ${verdict}`);
    }
  }
  if (s.pendingApproval)
    facts.push(c.warn(`waiting for approval of ${s.pendingApproval.gate}: tidemark approve ${s.plan}`));
  if (s.paused) facts.push(c.warn(`paused${s.paused.reason ? `: ${s.paused.reason}` : ''}: tidemark resume ${s.plan}`));
  if (s.waitingUntil) facts.push(`waiting for ${s.waitingUntil.what}, ${left(s.waitingUntil.until)} left`);
  return facts;
}

/** The terminal block: a header line and one line per fact. */
export function progressBlock(s: Status): string {
  const head = `${stateColor(s.state, s.state)}${s.phase ? ` · phase ${s.phase}` : ''}`;
  return [head, ...progressFacts(s, true).map((f) => `  ${f}`)].join('\n');
}

/** The line written at a steady interval when the output is not a terminal. */
export function progressLine(s: Status): string {
  return `progress: ${s.state}${s.phase ? `, phase ${s.phase}` : ''}${progressFacts(s, false)
    .map((f) => `; ${f}`)
    .join('')}`;
}
