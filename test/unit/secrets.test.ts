// The one redactor: registered secrets and anything that looks like a credential never survive into text tidemark
// writes; credentialed endpoint URLs travel as an Authorization header, not in the URL fetch would quote.
import { redact, redactDeep, registerSecret, withoutCredentials } from '../../src/secrets';

test('registered secrets and credentials in URLs and key=value strings are redacted', () => {
  registerSecret('postgres://app:Sup3r-secret@db.internal:5432/app');
  expect(redact('could not connect to postgres://app:Sup3r-secret@db.internal:5432/app')).toBe(
    'could not connect to [redacted]',
  );
  expect(redact('password authentication failed near Sup3r-secret')).toBe(
    'password authentication failed near [redacted]',
  );
  expect(redact('GET http://user:other-pass@metrics:9090/api failed')).toBe(
    'GET http://user:[redacted]@metrics:9090/api failed',
  );
  expect(redact('host=db user=app password=hunter22 dbname=app')).toBe(
    'host=db user=app password=[redacted] dbname=app',
  );
  expect(redact('nothing secret here: http://metrics:9090/api')).toBe('nothing secret here: http://metrics:9090/api');
});

test('errors and nested results are redacted in place of their strings', () => {
  registerSecret('https://bot:tok3n-value@hooks.example/x');
  const e = Object.assign(new Error('POST https://bot:tok3n-value@hooks.example/x: 500'), {
    details: [{ url: 'https://bot:tok3n-value@hooks.example/x' }],
  });
  redactDeep(e);
  expect(e.message).toBe('POST [redacted]: 500');
  expect(e.details).toEqual([{ url: '[redacted]' }]);
  expect(redactDeep({ gates: [{ error: 'tok3n-value leaked' }], n: 3 })).toEqual({
    gates: [{ error: '[redacted] leaked' }],
    n: 3,
  });
});

test('a URL with user:password@ becomes a clean URL and a Basic Authorization header', () => {
  expect(withoutCredentials('http://probe:p%40ss@127.0.0.1:8080/health?x=1')).toEqual({
    url: 'http://127.0.0.1:8080/health?x=1',
    headers: { authorization: `Basic ${Buffer.from('probe:p@ss').toString('base64')}` },
  });
  expect(withoutCredentials('http://127.0.0.1:8080/health')).toEqual({
    url: 'http://127.0.0.1:8080/health',
    headers: {},
  });
});
