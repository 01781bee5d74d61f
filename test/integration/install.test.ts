// Installable anywhere: the package `npm pack` makes installs with `npm install -g` into a fresh prefix, and the
// installed `tidemark` answers --version, runs `tidemark dev` (server, Web UI, worker) and `tidemark worker` from a
// directory that is not the checkout.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../src/infra/devserver';
import { temporalCli } from '../../src/infra/tools';
import { eventually } from '../helpers/env';
import { tempDir } from '../helpers/plans';

const ROOT = join(__dirname, '..', '..');
const run = promisify(execFile);
const children: ChildProcess[] = [];

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode !== null || c.signalCode !== null) continue;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await exited;
  }
});

/** Starts the installed command; its stderr is collected for the test to wait on. */
function start(bin: string, args: string[], cwd: string, env: NodeJS.ProcessEnv) {
  const child = spawn(bin, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const out = { text: '' };
  child.stdout!.on('data', (d) => (out.text += d));
  child.stderr!.on('data', (d) => (out.text += d));
  return { child, out };
}

/**
 * Sends Ctrl-C and waits for the exit: a clean one is `{ code: 0, signal: null }`; otherwise what the process said last
 * comes along, to tell a crash from a missed handler.
 */
function stopped({ child, out }: ReturnType<typeof start>) {
  return new Promise<{ code: number | null; signal: string | null; said: string }>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal, said: code === 0 ? '' : out.text.slice(-2000) }));
    child.kill('SIGINT');
  });
}

const CLEAN_EXIT = { code: 0, signal: null, said: '' };

test('npm pack → npm install -g: tidemark --version, dev and worker work from any directory', async () => {
  // `npm test` has built dist/ already; packing without scripts leaves it alone while other tests use it.
  expect(existsSync(join(ROOT, 'dist', 'workflow-bundle.js'))).toBe(true);
  const packDir = tempDir('tidemark-pack-');
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--pack-destination', packDir], { cwd: ROOT });
  const tarball = join(packDir, stdout.trim().split('\n').at(-1)!);
  const prefix = tempDir('tidemark-prefix-');
  await run('npm', ['install', '-g', '--prefix', prefix, '--prefer-offline', '--no-audit', '--no-fund', tarball], {
    maxBuffer: 64 * 1024 * 1024,
  });
  const bin = join(prefix, 'bin', 'tidemark');
  const elsewhere = tempDir('tidemark-elsewhere-');
  // The Temporal CLI this checkout already has (an installed package would fetch its own into ~/.cache/tidemark).
  const env = { TIDEMARK_TEMPORAL_CLI: temporalCli(), TIDEMARK_LOG_FORMAT: 'json', LOG_LEVEL: 'warn' };

  const version = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
  expect((await run(bin, ['--version'], { cwd: elsewhere })).stdout.trim()).toBe(version);

  const port = await freePort();
  const uiPort = await freePort();
  const dev = start(bin, ['dev', '--port', String(port), '--ui-port', String(uiPort)], elsewhere, env);
  await eventually(async () => /worker running/.test(dev.out.text), `tidemark dev to start: ${dev.out.text}`, 120_000);
  expect(dev.out.text).toContain(`Web UI at http://localhost:${uiPort}`);
  // Its state lives where it was started.
  expect(existsSync(join(elsewhere, '.tidemark', 'temporal.db'))).toBe(true);
  const list = await run(bin, ['list', '--address', `127.0.0.1:${port}`], { cwd: elsewhere });
  expect(list.stdout.trim()).toBe('no migrations');
  expect(await stopped(dev)).toEqual(CLEAN_EXIT);

  const worker = start(bin, ['worker'], elsewhere, {
    ...env,
    TEMPORAL_ADDRESS: process.env.TIDEMARK_TEST_TEMPORAL_ADDRESS,
    TIDEMARK_TASK_QUEUE: 'install-test',
  });
  await eventually(
    async () => /worker running on task queue install-test/.test(worker.out.text),
    'tidemark worker',
    60_000,
  );
  expect(await stopped(worker)).toEqual(CLEAN_EXIT);
}, 600_000);
