// Work that runs beside the runbook's phases rather than inside one: the appliers of a blue-green migration, which
// keep the two databases in step from the copy until cleanup. Each task runs in its own cancellation scope (a child
// of the forward scope, so an abort stops it too) and is stopped by key. A task that fails on its own is reported;
// given `runAgain` (which waits until the operator resumes the migration the report paused, and says whether the task
// should run again: not once the migration rolls back), it then runs again from the start, in the same scope.
import { CancellationScope, isCancellation, patched } from '@temporalio/workflow';

/** Marks histories in which a failed background task waits for a resume and runs again (older ones ended it). */
const RESTART_ON_RESUME = 'background-restart-on-resume';
/** Marks histories in which a task's failure after it was told to stop is not reported (older ones paused on it). */
const QUIET_ONCE_STOPPED = 'background-quiet-once-stopped';

export class Background {
  private readonly tasks = new Map<string, { scope: CancellationScope; done: Promise<void> }>();

  constructor(
    private readonly onFailure: (key: string, err: unknown) => void,
    private readonly runAgain?: () => Promise<boolean>,
  ) {}

  /** Waits until the migration is resumed; whether a task should run (again) then. */
  whenResumed(): Promise<boolean> {
    return this.runAgain ? this.runAgain() : Promise.resolve(false);
  }

  /** Starts `fn` under `key` unless a task with that key runs already. */
  start(key: string, fn: () => Promise<unknown>): void {
    if (this.tasks.has(key)) return;
    const scope = new CancellationScope();
    const done = scope
      .run(async () => {
        for (;;) {
          try {
            await fn();
            return;
          } catch (err) {
            // Stopped on purpose (cleanup, an abort): an activity that then fails for another reason (its
            // connection lost, its worker gone) did not stop on its own, and is not reported as if it had.
            if (isCancellation(err) || (scope.consideredCancelled && patched(QUIET_ONCE_STOPPED))) throw err;
            this.onFailure(key, err);
            if (!this.runAgain || !patched(RESTART_ON_RESUME)) return;
            if (!(await this.runAgain())) return;
          }
        }
      })
      .then(
        () => undefined,
        () => undefined,
      );
    const task = { scope, done: done.finally(() => this.tasks.get(key) === task && this.tasks.delete(key)) };
    this.tasks.set(key, task);
  }

  running(key: string): boolean {
    return this.tasks.has(key);
  }

  /** Cancels the task and waits until it has stopped (its activity's cancellation completed). */
  async stop(key: string): Promise<void> {
    const t = this.tasks.get(key);
    if (!t) return;
    t.scope.cancel();
    await t.done;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.tasks.keys()].map((k) => this.stop(k)));
  }
}
