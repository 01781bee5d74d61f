// Workers as child processes (`tidemark worker`), as in production: tests can SIGKILL them and see whether they exit.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const BIN = join(__dirname, '..', '..', 'bin', 'tidemark');

/** `log`: collect the worker's log (stderr) into log.text instead of passing it through. */
export function workerProcess(
  address: string,
  taskQueue: string,
  env: NodeJS.ProcessEnv,
  log?: { text: string },
): ChildProcess {
  const child = spawn(process.execPath, [BIN, 'worker'], {
    env: { ...process.env, TEMPORAL_ADDRESS: address, TIDEMARK_TASK_QUEUE: taskQueue, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'ignore', log ? 'pipe' : 'inherit'],
  });
  if (log) child.stderr!.on('data', (d: Buffer) => (log.text += d.toString()));
  return child;
}

/** Sends `signal` and resolves once the process has exited (at once if it already has). */
export function killed(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}
