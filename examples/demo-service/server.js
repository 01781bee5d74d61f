#!/usr/bin/env node
// A small HTTP service for the rollout demo: it serves meetings from the old table (meetings) or the new one
// (meetings_v2) according to the use_room_types flag, counts requests and errors per path (a table for tidemark's SQL
// gate, /metrics for Prometheus), and can be told to fail a share of new-path requests.
//
//   DATABASE_URL=postgres://… PORT=8080 node examples/demo-service/server.js
//   curl -H 'x-user-id: 42' localhost:8080/meetings/7
//   curl -XPOST localhost:8080/admin/failures -d '{"rate":0.5}'
const http = require('node:http');
const { Pool } = require('pg');
// Inside a service that depends on tidemark this is require('tidemark/flags').
const { FlagReader } = require('../../dist/flags');

const ROOM_TYPE = `CASE $2::text WHEN 'free_talk' THEN 'free_talk' WHEN 'lesson' THEN 'lesson' WHEN 'teacher_class' THEN 'teacher_class'
  WHEN 'public' THEN 'free_talk' WHEN 'private' THEN 'lesson' ELSE 'free_talk' END`;

const STATS_DDL = `CREATE TABLE IF NOT EXISTS demo_request_stats (
  second timestamptz NOT NULL, path text NOT NULL, requests integer NOT NULL, errors integer NOT NULL, PRIMARY KEY (second, path))`;

/** The SQL a tidemark gate uses: the new path's error rate over the last `seconds` seconds. */
const errorRateSql = (seconds = 30) =>
  `SELECT coalesce(sum(errors)::float8 / nullif(sum(requests), 0), 0) FROM demo_request_stats WHERE path = 'new' AND second > now() - interval '${seconds} seconds'`;

async function createDemoService({ pool, flag = 'use_room_types', port = 0 }) {
  await pool.query(STATS_DDL);
  const flags = await new FlagReader(pool, { pollIntervalMs: 2000 }).start();
  const totals = { old: { requests: 0, errors: 0 }, new: { requests: 0, errors: 0 } };
  let pending = new Map();
  let failureRate = 0;

  const count = (path, failed) => {
    totals[path].requests++;
    if (failed) totals[path].errors++;
    const second = new Date(Math.floor(Date.now() / 1000) * 1000).toISOString();
    const k = `${second}|${path}`;
    const c = pending.get(k) ?? { second, path, requests: 0, errors: 0 };
    c.requests++;
    if (failed) c.errors++;
    pending.set(k, c);
  };
  // Counters reach the table a few times a second, not once per request.
  const flush = async () => {
    const batch = [...pending.values()];
    pending = new Map();
    for (const c of batch) {
      await pool
        .query(
          `INSERT INTO demo_request_stats VALUES ($1, $2, $3, $4)
           ON CONFLICT (second, path) DO UPDATE SET requests = demo_request_stats.requests + EXCLUDED.requests, errors = demo_request_stats.errors + EXCLUDED.errors`,
          [c.second, c.path, c.requests, c.errors],
        )
        .catch(() => undefined);
    }
  };
  const flusher = setInterval(flush, 250);

  const body = (req) =>
    new Promise((resolve) => {
      let data = '';
      req.on('data', (d) => (data += d));
      req.on('end', () => {
        try {
          resolve(data ? JSON.parse(data) : {});
        } catch {
          resolve({});
        }
      });
    });
  const send = (res, status, obj) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(obj));
  };

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/health') return send(res, 200, { ok: true });
    if (url.pathname === '/flag') return send(res, 200, { flag, percentage: flags.percentage(flag) });
    if (url.pathname === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
      return res.end(
        ['# TYPE demo_requests_total counter', '# TYPE demo_errors_total counter']
          .concat(
            Object.entries(totals).flatMap(([p, t]) => [
              `demo_requests_total{path="${p}"} ${t.requests}`,
              `demo_errors_total{path="${p}"} ${t.errors}`,
            ]),
          )
          .join('\n') + '\n',
      );
    }
    if (url.pathname === '/admin/failures' && req.method === 'POST') {
      failureRate = Math.max(0, Math.min(1, Number((await body(req)).rate) || 0));
      return send(res, 200, { failureRate });
    }
    const m = /^\/meetings(?:\/(\d+))?$/.exec(url.pathname);
    if (!m) return send(res, 404, { error: 'not found' });
    const user = req.headers['x-user-id'] ?? url.searchParams.get('user') ?? 'anonymous';
    const path = flags.isEnabledFor(flag, user) ? 'new' : 'old';
    const table = path === 'new' ? 'meetings_v2' : 'meetings';
    if (path === 'new' && Math.random() < failureRate) {
      count(path, true);
      return send(res, 500, { error: 'injected failure', path });
    }
    try {
      let out;
      if (req.method === 'GET' && m[1]) {
        const r = await pool.query(`SELECT * FROM ${table} WHERE id = $1`, [m[1]]);
        out = r.rows[0] ? [200, { path, meeting: r.rows[0] }] : [404, { path, error: 'no such meeting' }];
      } else if (req.method === 'POST' && !m[1]) {
        const b = await body(req);
        const r =
          path === 'new'
            ? await pool.query(
                `INSERT INTO meetings_v2 (id, title, meeting_type, room_type, status, host_id, max_participants, created_at, updated_at)
                 VALUES (nextval('meetings_id_seq'), $1, $2::text, ${ROOM_TYPE}, 'active', md5($3)::uuid, 10, now(), now()) RETURNING id`,
                [b.title ?? 'untitled', b.meeting_type ?? null, String(user)],
              )
            : await pool.query(
                `INSERT INTO meetings (title, meeting_type, host_id) VALUES ($1, $2, md5($3)::uuid) RETURNING id`,
                [b.title ?? 'untitled', b.meeting_type ?? null, String(user)],
              );
        out = [201, { path, id: Number(r.rows[0].id) }];
      } else if (req.method === 'PUT' && m[1]) {
        const b = await body(req);
        const r = await pool.query(`UPDATE ${table} SET title = $1, updated_at = now() WHERE id = $2`, [
          b.title ?? '',
          m[1],
        ]);
        out = r.rowCount ? [200, { path, id: Number(m[1]) }] : [404, { path, error: 'no such meeting' }];
      } else out = [405, { error: 'method not allowed' }];
      count(path, false);
      return send(res, out[0], out[1]);
    } catch (e) {
      count(path, true);
      return send(res, 500, { path, error: e.message });
    }
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    flags,
    totals,
    async close() {
      clearInterval(flusher);
      await flush();
      await flags.close();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

module.exports = { createDemoService, errorRateSql };

if (require.main === module) {
  const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 10 });
  createDemoService({ pool, port: Number(process.env.PORT ?? 8080) }).then(
    (s) =>
      console.error(
        `demo service on http://127.0.0.1:${s.port} (flag use_room_types at ${s.flags.percentage('use_room_types')}%)`,
      ),
    (e) => {
      console.error(`demo service failed to start: ${e.message}`);
      process.exit(1);
    },
  );
}
