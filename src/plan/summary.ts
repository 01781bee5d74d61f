// What a migration is, in a line and in a paragraph: the Web UI's summary and details of the workflow, set once at
// start from the plan. Pure: names, never a connection string (the plan has none; its urlEnv is only a variable name).
import { basename } from 'node:path';
import { formatDuration } from './durations';
import { describeKey } from './keys';
import type { ResolvedPlan } from './types';

export function planSummary(plan: ResolvedPlan): string {
  const parts = [`tidemark ${plan.name}`];
  if (plan.copy.length) parts.push(plan.copy.map((j) => `${j.from ?? 'query'} → ${j.to}`).join(', '));
  if (plan.traffic)
    parts.push(`flag ${plan.traffic.flag} ${plan.traffic.stages.map((s) => `${s.percent}%`).join(' → ')}`);
  return parts.join(' · ');
}

export function planDetails(plan: ResolvedPlan): string {
  const lines: string[] = [];
  if (plan.description) lines.push(plan.description, '');
  lines.push(`**plan** ${plan.name} (${basename(plan.source.path)}, sha256 ${plan.source.sha256.slice(0, 12)})`);
  lines.push(`**database** the worker's \`$${plan.database.urlEnv}\``);
  const tables = new Set<string>();
  for (const j of plan.copy) {
    if (j.from) tables.add(j.from);
    tables.add(j.to);
  }
  for (const t of plan.cleanup?.archive ?? []) tables.add(t);
  if (tables.size) lines.push(`**tables** ${[...tables].join(', ')}`);
  if (plan.schema.length) lines.push(`**schema steps** ${plan.schema.map((s) => s.id).join(', ')}`);
  for (const j of plan.copy) {
    lines.push(`**copy ${j.name}** ${j.from ?? 'query'} → ${j.to} by ${describeKey(j)}, sync ${j.sync}`);
  }
  if (plan.traffic) {
    const t = plan.traffic;
    const stages = t.stages
      .map((s) => `${s.percent}% for ${formatDuration(s.soak)}${s.approval ? ' (approval)' : ''}`)
      .join(' → ');
    lines.push(`**stages** flag \`${t.flag}\`: ${stages}`);
    if (t.gates.length) {
      const gates = t.gates.map(
        (g) =>
          `${g.name} (${[g.max !== undefined ? `max ${g.max}` : '', g.min !== undefined ? `min ${g.min}` : ''].filter(Boolean).join(', ')}, every ${formatDuration(g.interval)})`,
      );
      lines.push(`**gates** ${gates.join('; ')}`);
    }
  }
  if (plan.cleanup) {
    const c = plan.cleanup;
    lines.push(
      `**cleanup** after ${formatDuration(c.after)}${c.archive.length ? `, archive ${c.archive.join(', ')}` : ''}${c.steps?.length ? `, steps ${c.steps.map((x) => x.id).join(', ')}` : ''}${c.dropAfter !== undefined ? `, drop after ${formatDuration(c.dropAfter)}` : ''}`,
    );
  }
  if (plan.approvals.length) lines.push(`**approvals** ${plan.approvals.join(', ')}`);
  if (plan.notify?.length) lines.push(`**notify** ${plan.notify.map((n) => `$${n.urlEnv} (${n.format})`).join(', ')}`);
  return lines.join('\n');
}
