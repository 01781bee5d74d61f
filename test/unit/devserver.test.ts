// What a Temporal dev server that exited at start said: the line that explains it, not just the last lines.
import { exitReason } from '../../src/infra/devserver';

test('a panic is reported from its first line on', () => {
  const stderr = [
    'time=... level=INFO msg="starting"',
    'panic: listen tcp 127.0.0.1:7233: bind: address already in use',
    '',
    'goroutine 1 [running]:',
    'main.main()',
    '\t/src/main.go:12 +0x1d',
    'more',
    'even more',
  ].join('\n');
  expect(exitReason(stderr, 2)).toBe(
    'exit code 2: panic: listen tcp 127.0.0.1:7233: bind: address already in use |  | goroutine 1 [running]: | main.main() | \t/src/main.go:12 +0x1d | more',
  );
});

test('without an error line, the last lines; without output, the exit code', () => {
  expect(exitReason('one\ntwo\nthree', 1)).toBe('exit code 1: one | two | three');
  expect(exitReason('', null)).toBe('exit code null');
});
