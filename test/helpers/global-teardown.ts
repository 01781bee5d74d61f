import type { DevServer } from '../../src/infra/devserver';

export default async function globalTeardown(): Promise<void> {
  const server = (globalThis as { __tidemarkServer?: DevServer }).__tidemarkServer;
  await server?.stop();
}
