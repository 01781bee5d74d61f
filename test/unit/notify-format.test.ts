// What a chat shows of a notice: an operator's words as written (Slack reads `<…>` as a mention or a link, `&` as
// the start of an entity), and a Web UI link into the migration's own namespace.
import type { Notice } from '../../src/migration/notify';
import { noticeBody } from '../../src/notify/format';

const notice: Notice = {
  event: 'rollback',
  message: 'aborted by oncall: <!channel> p99 > 2s & <http://evil.example|click here>',
  migration: 'orders',
  workflowId: 'tidemark-orders',
  state: 'rolling-back',
  phase: 'traffic',
  at: '2026-12-01T03:00:00.000Z',
};

test("a Slack notice escapes the operator's words and links the migration in its namespace", () => {
  expect(noticeBody('slack', notice, 'http://ui.example:8233/', 'payments')).toEqual({
    text:
      '*tidemark* `orders` :rewind: rollback: aborted by oncall: &lt;!channel&gt; p99 &gt; 2s &amp; ' +
      '&lt;http://evil.example|click here&gt; (rolling-back, phase traffic) ' +
      '<http://ui.example:8233/namespaces/payments/workflows/tidemark-orders|Web UI>',
  });
});

test('a JSON notice keeps the words as they are (its reader escapes for its own medium)', () => {
  expect(noticeBody('json', notice, 'http://ui.example:8233', 'payments')).toEqual({
    source: 'tidemark',
    ...notice,
    link: 'http://ui.example:8233/namespaces/payments/workflows/tidemark-orders',
  });
});
