// The body of a notice: Slack's incoming-webhook shape (`text`, with its mrkdwn) or tidemark's own JSON.
import type { Notice } from '../migration/notify';

const TITLES: Record<Notice['event'], string> = {
  'approval-needed': ':raised_hand: approval needed',
  'phase-started': ':arrow_forward: phase started',
  'phase-finished': ':white_check_mark: phase finished',
  'gate-breach': ':warning: gate breach',
  rollback: ':rewind: rollback',
  completed: ':tada: completed',
  failed: ':x: failed',
};

export function noticeBody(format: 'slack' | 'json', n: Notice, uiBase?: string): Record<string, unknown> {
  const link = uiBase
    ? `${uiBase.replace(/\/$/, '')}/namespaces/default/workflows/${encodeURIComponent(n.workflowId)}`
    : undefined;
  if (format === 'slack') {
    const where = `${n.state}${n.phase ? `, phase ${n.phase}` : ''}`;
    return {
      text: `*tidemark* \`${n.migration}\` ${TITLES[n.event]}: ${n.message} (${where})${link ? ` <${link}|Web UI>` : ''}`,
    };
  }
  return { source: 'tidemark', ...n, ...(link ? { link } : {}) };
}
