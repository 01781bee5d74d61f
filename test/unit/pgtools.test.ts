// Running PostgreSQL's programs: a program that exits before reading all its input (psql stopping on an error) must
// come back as its exit code, not take the worker down with a broken pipe.
import { Readable } from 'node:stream';
import { runTool } from '../../src/db/pgtools';

test('a program that stops reading its input early gives its exit code; the broken pipe is not an error', async () => {
  const input = Readable.from(Array.from({ length: 64 }, () => 'x'.repeat(64 * 1024)));
  const res = await runTool('/bin/sh', ['-c', 'head -c 10 > /dev/null; echo stopped >&2; exit 3'], {
    env: {},
    stdin: input,
  });
  expect(res).toMatchObject({ code: 3, stderr: 'stopped\n' });
});
