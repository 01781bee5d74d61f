// The command line's own surface: --version, completion scripts, and errors as JSON under --json with the exit codes
// of SPEC §3.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCli } from '../helpers/cli';
import { writePlan } from '../helpers/plans';

test('--version prints the package version; completion prints a script for bash and zsh, and refuses other shells', async () => {
  const version = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')).version;
  expect((await runCli(['--version'])).stdout.trim()).toBe(version);
  const bash = await runCli(['completion', 'bash']);
  expect(bash.code).toBe(0);
  expect(bash.stdout).toContain('complete -F _tidemark tidemark');
  for (const word of ['start', 'status', 'approve', 'abort', 'worker', '--metrics-port', '--progress-every'])
    expect(bash.stdout).toContain(word);
  expect((await runCli(['completion', 'zsh'])).stdout).toContain('#compdef tidemark');
  const fish = await runCli(['completion', 'fish']);
  expect(fish.code).toBe(2);
  expect(fish.stderr.trim()).toBe('error: no completion for "fish": use bash or zsh');
});

test('with --json, errors are one JSON object on stderr, with the same exit codes', async () => {
  const missing = await runCli(['status', 'no-such-migration', '--json']);
  expect(missing.code).toBe(3);
  expect(missing.stdout).toBe('');
  expect(JSON.parse(missing.stderr)).toEqual({
    error: 'no migration "no-such-migration" (looked for workflow tidemark-no-such-migration)',
    code: 3,
    type: 'NotFound',
  });

  const plan = writePlan({ name: 'Bad Name', database: { urlEnv: 'DATABASE_URL' }, copy: [{ name: 'x' }] });
  const invalid = await runCli(['start', plan, '--json']);
  expect(invalid.code).toBe(2);
  const err = JSON.parse(invalid.stderr);
  expect(err).toMatchObject({ code: 2, type: 'InvalidPlan' });
  expect(err.problems).toEqual(
    expect.arrayContaining([
      expect.objectContaining({ path: 'name' }),
      expect.objectContaining({ path: 'copy[0].to', message: 'required' }),
    ]),
  );

  const usage = await runCli(['throttle', 'x', '--batch-size', '0', '--json']);
  expect(usage.code).toBe(2);
  expect(JSON.parse(usage.stderr).code).toBe(2);
  // Commander's own complaints too: one JSON object, no help text around it.
  const unknown = await runCli(['status', 'x', '--json', '--frobnicate']);
  expect(unknown.code).toBe(2);
  expect(JSON.parse(unknown.stderr)).toEqual({ error: "unknown option '--frobnicate'", code: 2, type: 'Usage' });
  // An error with no failure type of its own still names one.
  const noDb = await runCli(['history', '--json', '--url-env', 'NO_SUCH_DB_URL'], {
    NO_SUCH_DB_URL: 'postgres://postgres@127.0.0.1:5432/tidemark_no_such_database',
  });
  expect(noDb.code).toBe(1);
  expect(JSON.parse(noDb.stderr)).toMatchObject({ code: 1, type: 'SqlError' });
});
