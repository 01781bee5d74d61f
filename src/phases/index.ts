// The phases, workflow side, by name: the runbook runs them and dispatches each undo to the phase that registered it.
import type { PhaseName } from '../plan/types';
import { backupPhase } from './backup/workflow';
import { cleanupPhase } from './cleanup/workflow';
import { copyPhase } from './copy/workflow';
import type { Phase } from './phase';
import { preflightPhase } from './preflight/workflow';
import { schemaPhase } from './schema/workflow';
import { trafficPhase } from './traffic/workflow';
import { validatePhase } from './validate/workflow';

export { backupPhase, cleanupPhase, copyPhase, preflightPhase, schemaPhase, trafficPhase, validatePhase };

/** Every phase by name (a missing one is a compile error). */
export const PHASE_MODULES: { readonly [K in PhaseName]: Phase<never> } = {
  preflight: preflightPhase,
  backup: backupPhase,
  schema: schemaPhase,
  copy: copyPhase,
  validate: validatePhase,
  traffic: trafficPhase,
  cleanup: cleanupPhase,
};
