// Starts one real Temporal dev server for all integration tests and finds the PostgreSQL server they use.
import { startDevServer } from '../../src/infra/devserver';
import { findPostgres } from '../../src/infra/postgres';

export default async function globalSetup(): Promise<void> {
  const pg = await findPostgres();
  process.env.TIDEMARK_TEST_PG_ADMIN = pg.adminUrl;
  if (!process.env.TIDEMARK_TEST_TEMPORAL_ADDRESS) {
    const server = await startDevServer({ headless: true });
    (globalThis as { __tidemarkServer?: unknown }).__tidemarkServer = server;
    process.env.TIDEMARK_TEST_TEMPORAL_ADDRESS = server.address;
  }
}
