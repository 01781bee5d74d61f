// The worker's /metrics endpoint: tidemark's own metrics (prom-client) followed by the Temporal SDK's worker metrics,
// which the SDK's Prometheus exporter serves on a private loopback port (see runtime.ts) and this endpoint passes on.
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

export async function serveMetrics(opts: {
  port: number;
  host?: string;
  registry: Registry;
  /** Where the SDK's exporter answers, if the runtime was installed with one. */
  sdkMetricsUrl?: string;
}): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' || (path !== '/metrics' && path !== '/')) {
      res.writeHead(404).end('see /metrics\n');
      return;
    }
    void (async () => {
      try {
        const own = await opts.registry.metrics();
        let sdk = '';
        if (opts.sdkMetricsUrl) {
          sdk = await fetch(opts.sdkMetricsUrl, { signal: AbortSignal.timeout(2000) })
            .then((r) => (r.ok ? r.text() : ''))
            .catch(() => '');
        }
        res.writeHead(200, { 'content-type': opts.registry.contentType });
        res.end(own + (sdk ? `\n${sdk}` : ''));
      } catch (e) {
        res.writeHead(500).end(`${(e as Error).message}\n`);
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', () => resolve());
  });
  return {
    port: (server.address() as { port: number }).port,
    close: () => new Promise((r) => server.close(() => r())),
  };
}
