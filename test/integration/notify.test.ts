// Notifications: a plan's notify targets receive the events they asked for on a local HTTP receiver, in Slack's shape
// or tidemark's JSON; a target that keeps failing is retried, recorded in status, and changes nothing else; the
// secrets in the targets' URLs never reach history, status or CLI output.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { runCli } from '../helpers/cli';
import { eventually, Harness } from '../helpers/env';
import { meetingsPlan } from '../helpers/plans';

interface Received {
  path: string;
  authorization?: string;
  body: Record<string, unknown>;
}

const h = new Harness();
const received: Received[] = [];
let receiver: Server;
let base: string;

beforeAll(async () => {
  receiver = createServer((req: IncomingMessage, res) => {
    let text = '';
    req.on('data', (d) => (text += d));
    req.on('end', () => {
      received.push({ path: req.url ?? '', authorization: req.headers.authorization, body: JSON.parse(text) });
      res.writeHead(req.url?.startsWith('/down') ? 500 : 200).end('ok');
    });
  });
  await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
  base = `127.0.0.1:${(receiver.address() as { port: number }).port}`;
  await h.start();
});
afterAll(async () => {
  await h.stop();
  await new Promise((r) => receiver.close(r));
});

test('targets hear the events they asked for; one that stays down is retried and recorded; no secret leaks', async () => {
  const db = await h.db('notify');
  h.env.TM_CHAT_HOOK = `http://${base}/chat/T000-s3cr3t-path`;
  h.env.TM_JSON_HOOK = `http://ops:pa55word@${base}/json?token=t0ken`;
  h.env.TM_DOWN_HOOK = `http://${base}/down/d0wn-secret`;
  const base0 = await meetingsPlan(db, { rows: 300, approvals: ['schema'] });
  const plan = {
    ...base0,
    traffic: { ...base0.traffic!, stages: base0.traffic!.stages.map((s) => ({ ...s, approval: false })) },
    notify: [
      { urlEnv: 'TM_CHAT_HOOK', format: 'slack' as const },
      { urlEnv: 'TM_JSON_HOOK', format: 'json' as const, on: ['approval-needed', 'completed', 'failed'] as const },
      { urlEnv: 'TM_DOWN_HOOK', format: 'json' as const, on: ['approval-needed'] as const },
    ].map((t) => ({ ...t, on: t.on && [...t.on] })),
  };
  const { workflowId } = await h.client.start(plan, { autoApprove: false });

  // The approval request reaches the chat and the JSON target; the down target is tried and given up on.
  const down = await eventually(
    async () => {
      const s = await h.client.status(workflowId);
      return s.notifications?.find((n) => n.target === 'TM_DOWN_HOOK' && n.state === 'failed');
    },
    'the down target to be given up on',
    90_000,
  );
  expect(down.error).toBe('TM_DOWN_HOOK: HTTP 500');
  expect(received.filter((r) => r.path.startsWith('/down')).length).toBe(5);
  expect((await h.client.status(workflowId)).state).toBe('waiting-approval');
  const approval = received.find((r) => r.path.startsWith('/json') && r.body.event === 'approval-needed');
  expect(approval?.body).toMatchObject({
    source: 'tidemark',
    migration: plan.name,
    workflowId,
    state: 'waiting-approval',
    phase: 'schema',
  });
  // Credentials in the URL travel as a Basic authorization header.
  expect(approval?.authorization).toBe(`Basic ${Buffer.from('ops:pa55word').toString('base64')}`);
  const chat = received.find((r) => r.path.startsWith('/chat') && /approval needed/.test(String(r.body.text)));
  expect(chat?.body.text).toContain(`\`${plan.name}\``);
  expect(chat?.body.text).toContain('waiting for approval of schema');

  await h.client.approve(workflowId, { by: 'alice' });
  const final = await h.client.waitForEnd(workflowId);
  expect(final.state).toBe('completed');

  const chatEvents = received.filter((r) => r.path.startsWith('/chat')).map((r) => String(r.body.text));
  for (const phase of ['preflight', 'schema', 'copy', 'validate', 'traffic', 'cleanup'])
    expect(chatEvents.some((t) => t.includes(`phase ${phase} started`))).toBe(true);
  expect(chatEvents.some((t) => /completed: completed/.test(t))).toBe(true);
  expect(received.filter((r) => r.path.startsWith('/json')).map((r) => r.body.event)).toEqual([
    'approval-needed',
    'completed',
  ]);
  expect(final.notifications?.filter((n) => n.state !== 'sent').map((n) => n.target)).toEqual(['TM_DOWN_HOOK']);

  // No secret from any target's URL anywhere a person or a log could read it.
  const history = JSON.stringify(await (await h.client.handle(workflowId)).fetchHistory());
  const status = JSON.stringify(final);
  const cli = await runCli(['status', plan.name, '--json'], { TIDEMARK_TASK_QUEUE: h.taskQueue });
  const cliText = await runCli(['status', plan.name], { TIDEMARK_TASK_QUEUE: h.taskQueue });
  for (const secret of ['s3cr3t', 'pa55word', 't0ken', 'd0wn-secret', base]) {
    expect(history).not.toContain(secret);
    expect(status).not.toContain(secret);
    expect(cli.stdout + cli.stderr + cliText.stdout + cliText.stderr).not.toContain(secret);
  }
});
