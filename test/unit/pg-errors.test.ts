// A PostgreSQL error as one line for operators: its code, detail and hint, but not a whole row of the application's
// data, which would otherwise travel into the workflow's history, status, notifications and logs.
import { formatPgError } from '../../src/db/errors';

const pgError = (message: string, fields: Record<string, string>) => Object.assign(new Error(message), fields);

test('a failing row is named, not printed; other details are kept', () => {
  expect(
    formatPgError(
      pgError('new row for relation "accounts" violates check constraint "no_nope"', {
        code: '23514',
        detail: 'Failing row contains (13, nope 13, user13@example.com).',
      }),
    ),
  ).toBe(
    `new row for relation "accounts" violates check constraint "no_nope" | code 23514 | detail: the failing row (its values left out: they are the application's data)`,
  );
  expect(
    formatPgError(
      pgError('duplicate key value violates unique constraint "accounts_pkey"', {
        code: '23505',
        detail: 'Key (id)=(13) already exists.',
      }),
    ),
  ).toBe(
    'duplicate key value violates unique constraint "accounts_pkey" | code 23505 | detail: Key (id)=(13) already exists.',
  );
});
