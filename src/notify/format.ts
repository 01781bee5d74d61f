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

/**
 * Text Slack shows as written: `&`, `<` and `>` escaped, as its message format asks, so that an operator's reason
 * (`<!channel>`, `<http://…|a link>`) neither pings a channel nor becomes a link.
 */
export function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export function noticeBody(
  format: 'slack' | 'json',
  n: Notice,
  uiBase?: string,
  namespace = 'default',
): Record<string, unknown> {
  const link = uiBase
    ? `${uiBase.replace(/\/$/, '')}/namespaces/${encodeURIComponent(namespace)}/workflows/${encodeURIComponent(n.workflowId)}`
    : undefined;
  if (format === 'slack') {
    const where = `${n.state}${n.phase ? `, phase ${n.phase}` : ''}`;
    const said = slackEscape(`${n.message} (${where})`);
    return {
      text: `*tidemark* \`${slackEscape(n.migration)}\` ${TITLES[n.event]}: ${said}${link ? ` <${link}|Web UI>` : ''}`,
    };
  }
  return { source: 'tidemark', ...n, ...(link ? { link } : {}) };
}
