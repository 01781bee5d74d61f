// Notices to the plan's `notify` targets (webhooks: Slack or plain JSON). Each is sent by an activity the migration
// never waits for: retried with backoff for about a minute, its outcome recorded in status, and a target that stays
// down changes nothing else. The URL lives in the worker's environment; the workflow only knows its variable's name.
import { CancellationScope, condition } from '@temporalio/workflow';
import type { NotifyEvent, ResolvedPlan } from '../plan/types';
import { LIMITS } from './limits';
import type { NotificationRecord } from './messages';
import { notices } from './profiles';
import { errorMessage } from './saga';
import type { StatusBoard } from './status';

export interface Notice {
  event: NotifyEvent;
  message: string;
  migration: string;
  workflowId: string;
  state: string;
  phase: string | null;
  at: string;
}

export class Notifier {
  private inFlight = 0;

  constructor(
    private readonly board: StatusBoard,
    private readonly plan: ResolvedPlan,
  ) {}

  send(event: NotifyEvent, message: string): void {
    const s = this.board.status;
    for (const target of (this.plan.notify ?? []).filter((t) => !t.on || t.on.includes(event))) {
      const record: NotificationRecord = { event, target: target.urlEnv, state: 'sending', at: this.board.now() };
      const list = (s.notifications ??= []);
      list.push(record);
      if (list.length > LIMITS.statusEvents) list.splice(0, list.length - LIMITS.statusEvents);
      const notice: Notice = {
        event,
        message,
        migration: s.plan,
        workflowId: s.workflowId,
        state: s.state,
        phase: s.phase,
        at: record.at,
      };
      this.inFlight++;
      // Outside the forward scope: the abort that cancels the migration's work must not cancel the notice about it.
      void CancellationScope.nonCancellable(() =>
        notices.sendNotification.executeWithOptions({ summary: `notify ${target.urlEnv}: ${event}` }, [
          { target, notice },
        ]),
      )
        .then(
          () => {
            record.state = 'sent';
          },
          (e) => {
            record.state = 'failed';
            record.error = errorMessage(e);
            this.board.event(`notice "${event}" to ${target.urlEnv} not delivered: ${record.error}`);
          },
        )
        .finally(() => {
          record.at = this.board.now();
          this.inFlight--;
          this.board.publish();
        });
    }
  }

  /** Before the workflow ends or continues as new: lets notices in flight finish (bounded by their retries). */
  async drain(): Promise<void> {
    if (this.inFlight) await condition(() => this.inFlight === 0, '3m', { summary: 'notices in flight' });
  }
}
