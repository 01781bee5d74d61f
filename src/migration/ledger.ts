// `tidemark history` through a worker: connection strings live in the worker's environment, so the CLI asks a worker
// to read the ledger in one short activity and hands the rows back.
import type { LedgerRow } from '../plan/ledger';
import type { LedgerInput } from './messages';
import { promptReads } from './profiles';

export async function ledgerWorkflow(input: LedgerInput): Promise<LedgerRow[]> {
  return promptReads.readLedger.executeWithOptions(
    { summary: `read the ledger${input.migration ? ` of ${input.migration}` : ''}` },
    [input],
  );
}
