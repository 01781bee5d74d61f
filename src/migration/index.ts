// Workflow entry points bundled for workers: the migration, the revert of a completed one, and the ledger read.
export { migrationWorkflow } from './workflow';
export { revertWorkflow } from './revert';
export { ledgerWorkflow } from './ledger';
