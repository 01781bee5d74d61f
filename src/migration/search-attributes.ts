// The search attributes that make migrations visible and filterable in the Temporal Web UI.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

export const TidemarkPlan = defineSearchAttributeKey('TidemarkPlan', SearchAttributeType.KEYWORD);
export const TidemarkPhase = defineSearchAttributeKey('TidemarkPhase', SearchAttributeType.KEYWORD);
export const TidemarkState = defineSearchAttributeKey('TidemarkState', SearchAttributeType.KEYWORD);

export const SEARCH_ATTRIBUTES = [TidemarkPlan, TidemarkPhase, TidemarkState];
