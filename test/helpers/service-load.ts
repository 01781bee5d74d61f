// Drives the demo service like its users would, and remembers every write it was told succeeded.
export interface ServiceLoad {
  /** Last successful title per meeting id, in the order the service acknowledged them. */
  acknowledged: Map<number, string>;
  stats: { requests: number; ok: number; failed: number; byPath: Record<string, number> };
  stop(): Promise<void>;
}

export function driveService(
  port: number,
  opts: { users?: number; maxId: () => number; pauseMs?: number },
): ServiceLoad {
  const acknowledged = new Map<number, string>();
  const stats = { requests: 0, ok: 0, failed: 0, byPath: {} as Record<string, number> };
  let running = true;
  let n = 0;
  const base = `http://127.0.0.1:${port}`;
  const loop = (async () => {
    while (running) {
      n++;
      const user = String(1 + ((n * 7919) % (opts.users ?? 1000)));
      const headers = { 'x-user-id': user, 'content-type': 'application/json' };
      const roll = n % 10;
      try {
        let res: Response;
        let title: string | undefined;
        let id: number | undefined;
        if (roll < 4) {
          res = await fetch(`${base}/meetings/${1 + (n % opts.maxId())}`, { headers });
        } else if (roll < 7) {
          title = `created ${n}`;
          res = await fetch(`${base}/meetings`, {
            method: 'POST',
            headers,
            body: JSON.stringify({ title, meeting_type: 'lesson' }),
          });
        } else {
          id = 1 + ((n * 31) % opts.maxId());
          title = `updated ${n}`;
          res = await fetch(`${base}/meetings/${id}`, { method: 'PUT', headers, body: JSON.stringify({ title }) });
        }
        const body = (await res.json()) as { path?: string; id?: number };
        stats.requests++;
        if (body.path) stats.byPath[body.path] = (stats.byPath[body.path] ?? 0) + 1;
        if (res.status >= 500) stats.failed++;
        else {
          stats.ok++;
          if (title && (res.status === 200 || res.status === 201)) acknowledged.set(id ?? body.id!, title);
        }
      } catch {
        stats.failed++;
      }
      if (opts.pauseMs) await new Promise((r) => setTimeout(r, opts.pauseMs));
    }
  })();
  return {
    acknowledged,
    stats,
    async stop() {
      running = false;
      await loop;
    },
  };
}
