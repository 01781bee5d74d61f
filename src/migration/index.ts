// Workflow entry point bundled for workers.
export { migrationWorkflow } from './workflow';
