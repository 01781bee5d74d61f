// Sends one notice to one webhook. The URL is read from the worker's environment here and goes nowhere else: errors
// name the variable, never the URL (which often carries a token).
import { Context } from '@temporalio/activity';
import type { ActivityDeps } from '../phases/activity-kit';
import { F, failure } from '../migration/failures';
import type { Notice } from '../migration/notify';
import type { NotifyTarget } from '../plan/types';
import { noticeBody } from './format';

export interface SendNotificationInput {
  target: NotifyTarget;
  notice: Notice;
}

const TIMEOUT_MS = 5_000;

/** The URL to post to; credentials in it (user:password@) travel as a Basic authorization header instead. */
function request(urlEnv: string, raw: string | undefined): { url: URL; headers: Record<string, string> } {
  if (!raw) throw failure(F.NotificationUnconfigured, `${urlEnv} is not set on the worker`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    // Not even a URL: say so without repeating what the variable holds.
    throw failure(F.NotificationUnconfigured, `${urlEnv} does not hold a URL`);
  }
  const headers: Record<string, string> = {};
  if (url.username || url.password) {
    const user = `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`;
    headers.authorization = `Basic ${Buffer.from(user).toString('base64')}`;
    url.username = '';
    url.password = '';
  }
  return { url, headers };
}

/** The namespace of the migration being told about (its Web UI link names it). */
function namespace(): string {
  try {
    return Context.current().info.workflowNamespace ?? 'default';
  } catch {
    return 'default';
  }
}

export function createNotifyActivities(deps: ActivityDeps) {
  const env = deps.env ?? process.env;
  return {
    async sendNotification({ target, notice }: SendNotificationInput): Promise<{ status: number }> {
      const { url, headers } = request(target.urlEnv, env[target.urlEnv]);
      let res: Response;
      try {
        res = await fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'tidemark', ...headers },
          body: JSON.stringify(noticeBody(target.format, notice, env.TIDEMARK_UI_URL, namespace())),
          signal: AbortSignal.timeout(TIMEOUT_MS),
        });
        await res.arrayBuffer();
      } catch (e) {
        const err = e as { name?: string; cause?: { code?: string } };
        const why =
          err.name === 'TimeoutError' ? `no answer within ${TIMEOUT_MS / 1000}s` : (err.cause?.code ?? err.name);
        throw failure(F.NotificationFailed, `${target.urlEnv}: ${why ?? 'request failed'}`);
      }
      if (!res.ok) throw failure(F.NotificationFailed, `${target.urlEnv}: HTTP ${res.status}`);
      deps.logger.info({ migration: notice.migration, event: notice.event, target: target.urlEnv }, 'notice sent');
      return { status: res.status };
    },
  };
}
